//! `history`: the kept publications of a channel the client is subscribed to or may subscribe
//! to. `limit` 0 gives only the stream top, a negative limit everything kept (up to the hub's
//! cap); `since` is exclusive and must name the current epoch; `reverse` walks back from the
//! top, or from `since`. The store does the walking and the limiting.

use std::sync::Arc;

use bytes::Bytes;

use super::{code, Answer};
use crate::centrifuge::translate::Translator;
use crate::centrifuge::wire::{HistoryRequest, HistoryResult, Publication, Reply};
use crate::core::event::Message;
use crate::core::model::HistoryQuery;
use crate::core::native::message_object;
use crate::hub::{Hub, MAX_HISTORY};
use crate::node::WsConn;

pub async fn run(
    hub: &Hub,
    conn: &Arc<WsConn>,
    t: &Translator,
    h: &HistoryRequest,
    a: &mut Answer<'_>,
) {
    if !(t.subscribed(&h.channel) || hub.may_subscribe(conn, &h.channel)) {
        return a.fail(code::PERMISSION_DENIED, "permission denied", false);
    }
    let page = match hub.history(&h.channel, query(h)).await {
        Ok(p) => p,
        Err(e) => return a.core_error(&e),
    };
    if let Some(s) = &h.since {
        if !s.epoch.is_empty() && s.epoch != page.epoch {
            return a.fail(
                code::UNRECOVERABLE_POSITION,
                "unrecoverable position",
                false,
            );
        }
    }
    let publications = page
        .publications
        .into_iter()
        .map(|p| Publication {
            data: Bytes::from(message_object(&Message {
                kind: p.kind.into(),
                payload: Bytes::from(p.payload_json),
                id: p.message_id.into(),
                ts_ms: p.published_at_ms,
            })),
            offset: p.offset,
        })
        .collect();
    a.reply(Reply {
        history: Some(HistoryResult {
            publications,
            epoch: page.epoch,
            offset: page.latest,
        }),
        ..Default::default()
    });
}

/// What the command asks of the store.
fn query(h: &HistoryRequest) -> HistoryQuery {
    HistoryQuery {
        since: h.since.as_ref().map(|s| s.offset),
        limit: usize::try_from(h.limit).unwrap_or(MAX_HISTORY),
        reverse: h.reverse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::centrifuge::wire::StreamPosition;

    #[test]
    fn the_request_becomes_the_store_query() {
        let mut h = HistoryRequest {
            channel: "c".into(),
            limit: -1,
            ..Default::default()
        };
        assert_eq!(
            query(&h),
            HistoryQuery {
                since: None,
                limit: MAX_HISTORY,
                reverse: false
            }
        );
        h.limit = 0;
        h.reverse = true;
        h.since = Some(StreamPosition {
            offset: 7,
            epoch: "e".into(),
        });
        assert_eq!(
            query(&h),
            HistoryQuery {
                since: Some(7),
                limit: 0,
                reverse: true
            }
        );
    }
}
