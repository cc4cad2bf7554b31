//! Reading a topic's history from Redis (the read script), and repairing a gap in a topic's
//! live stream from it: what a node missed is read and fed in order, or, when history no
//! longer has it, the subscribers are told and the stream moves on. Plus the parsing of what
//! the scripts answer (pure, unit-tested).

use std::sync::Arc;
use std::time::Duration;

use redis::streams::{StreamId, StreamRangeReply};
use redis::Value;

use super::dispatch::message_of;
use super::{wire, Key, RedisCluster};
use crate::clock::now_ms;
use crate::core::event::{Event, Message, Publication, Shared, SharedEvent};
use crate::core::model::META_TTL_MS;
use crate::core::topic_table::{HistoryRead, LivePosition};
use crate::core::CoreError;
use crate::node::position_lost;

impl RedisCluster {
    /// Reads what a topic's stream here is missing and feeds it in order; when history cannot
    /// fill the gap (trimmed, or a new epoch), subscribers are told and the stream moves on.
    pub(super) fn catch_up(self: &Arc<Self>, topic: String) {
        if !self.catching_up.lock().insert(topic.clone()) {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            me.catch_up_now(&topic).await;
            me.catching_up.lock().remove(&topic);
        });
    }

    pub(super) async fn catch_up_now(&self, topic: &str) {
        if self.local.topics.gap(topic).is_some() {
            self.local.metrics.cluster_gap_repairs.inc();
        }
        for attempt in 0..5 {
            let Some((epoch, last)) = self.local.topics.position(topic, &self.local.registry)
            else {
                return;
            };
            let read = match self.read_topic(topic, Some(last), true).await {
                Ok(r) => r,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                    continue;
                }
            };
            if read.epoch == epoch {
                for (o, f) in &read.pubs {
                    self.local.on_publication(
                        topic,
                        LivePosition {
                            epoch: &epoch,
                            offset: *o,
                        },
                        f,
                    );
                }
            }
            let behind = self
                .local
                .topics
                .position(topic, &self.local.registry)
                .is_some_and(|(e, l)| e != read.epoch || l < read.latest);
            if behind || self.local.topics.gap(topic).is_some() {
                let a = self.local.topics.resync(
                    topic,
                    &read.epoch,
                    read.latest,
                    &self.local.registry,
                    position_lost(topic),
                );
                self.local.close_slow(&a.overflowed);
                if self.local.topics.gap(topic).is_some() {
                    let a = self.local.topics.skip_gap(topic, position_lost(topic));
                    self.local.close_slow(&a.overflowed);
                }
            }
            return;
        }
    }

    /// Catches up every held topic (and user stream) that instance `i` keeps (after the pub/sub
    /// connection to it came back).
    pub(super) async fn catch_up_all(self: &Arc<Self>, i: usize) {
        for (topic, _, _) in self.local.topics.positions(&self.local.registry) {
            if self.instance_of(super::Key::Topic(&topic)) == i {
                self.catch_up_now(&topic).await;
            }
        }
    }

    pub(super) async fn read_topic(
        &self,
        topic: &str,
        since: Option<u64>,
        create: bool,
    ) -> Result<HistoryRead<SharedEvent>, CoreError> {
        let count = self.settings.history_size.max(1) + 1;
        let (epoch, latest, entries) = self.read_raw(topic, since, count, create, false).await?;
        let pubs: Vec<(u64, SharedEvent)> = entries
            .into_iter()
            .filter_map(|e| {
                let event = Event::Publication(Publication {
                    topic: topic.into(),
                    offset: e.offset,
                    epoch: epoch.as_str().into(),
                    message: e.message?,
                });
                Some((e.offset, Shared::new(event)))
            })
            .collect();
        let complete = match since {
            Some(s) if s == latest => true,
            Some(s) => pubs.first().is_some_and(|(o, _)| *o == s + 1),
            None => false,
        };
        Ok(HistoryRead {
            epoch,
            latest,
            pubs,
            complete,
        })
    }

    pub(super) async fn read_raw(
        &self,
        topic: &str,
        since: Option<u64>,
        count: usize,
        create: bool,
        reverse: bool,
    ) -> Result<(String, u64, Vec<Entry>), CoreError> {
        let (stream, meta, _) = wire::topic_keys(topic);
        let mut inv = self.read_script.prepare_invoke();
        inv.key(&stream)
            .key(&meta)
            .arg(since.map_or(-1, |s| s as i64))
            .arg(count)
            .arg(self.meta_ttl_ms())
            .arg(crate::cluster::memory::new_epoch())
            .arg(if create { "1" } else { "0" })
            .arg(if reverse { "1" } else { "0" });
        let v: Value = self.invoke(Key::Topic(topic), &inv).await?;
        let (epoch, latest, entries) = read_reply(v).ok_or_else(|| {
            CoreError::Unavailable("unexpected answer from the read script".into())
        })?;
        let min_ts = now_ms() - self.settings.kept(topic).1 as i64;
        let entries = entries.into_iter().filter(|e| e.ts >= min_ts).collect();
        Ok((epoch, latest, entries))
    }

    pub(super) fn meta_ttl_ms(&self) -> u64 {
        self.settings
            .history_ttl_ms
            .max(self.settings.user_history_ttl_ms)
            .max(META_TTL_MS)
    }
}

/// A history entry read back from the stream: its offset, the message (`None` when it does
/// not decode), the caller's id (or empty) and when it was kept.
pub(super) struct Entry {
    pub(super) offset: u64,
    pub(super) message: Option<Message>,
    pub(super) message_id: String,
    pub(super) ts: i64,
}

pub(super) fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

pub(super) fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => as_string(other)?.parse().ok(),
    }
}

/// XRANGE's answer, read with the redis crate's stream types; an entry whose id is not
/// `<offset>-0` is skipped, one whose message does not decode is kept without it (so the
/// reader sees the offset and does not take the read for complete past it).
fn parse_entries(v: Value) -> Vec<Entry> {
    let reply: StreamRangeReply = match redis::from_redis_value(v) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "unexpected history entries from the read script");
            return Vec::new();
        }
    };
    reply.ids.iter().filter_map(entry_of).collect()
}

fn entry_of(e: &StreamId) -> Option<Entry> {
    let offset = e.id.split('-').next()?.parse().ok()?;
    let message = e.get::<Vec<u8>>("f").and_then(|f| message_of(&f));
    Some(Entry {
        offset,
        message,
        message_id: e.get("m").unwrap_or_default(),
        ts: e.get("t").unwrap_or(0),
    })
}

/// The read script's answer: `{epoch, latest, entries}`.
fn read_reply(v: Value) -> Option<(String, u64, Vec<Entry>)> {
    let Value::Array(parts) = v else {
        return None;
    };
    let [epoch, latest, entries] = <[Value; 3]>::try_from(parts).ok()?;
    Some((as_string(&epoch)?, as_u64(&latest)?, parse_entries(entries)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(b: &[u8]) -> Value {
        Value::BulkString(b.to_vec())
    }

    fn entry(id: &str, fields: &[(&str, Value)]) -> Value {
        let mut kv = Vec::new();
        for (k, v) in fields {
            kv.push(bulk(k.as_bytes()));
            kv.push(v.clone());
        }
        Value::Array(vec![bulk(id.as_bytes()), Value::Array(kv)])
    }

    #[test]
    fn the_read_answer_gives_offsets_messages_ids_and_times() {
        let m = Message {
            kind: "t".into(),
            payload: bytes::Bytes::from_static(b"[1]"),
            id: "x".into(),
            ts_ms: 9,
        };
        let v = Value::Array(vec![
            bulk(b"e1"),
            Value::Int(8),
            Value::Array(vec![
                entry(
                    "7-0",
                    &[
                        ("f", bulk(&wire::encode_message(&m))),
                        ("m", bulk(b"caller")),
                        ("t", bulk(b"123")),
                    ],
                ),
                // A message that does not decode keeps its offset, without a message.
                entry(
                    "8-0",
                    &[("f", bulk(b"\xff")), ("m", bulk(b"")), ("t", bulk(b"124"))],
                ),
                // Not an offset: skipped.
                entry("x-0", &[("f", bulk(b""))]),
            ]),
        ]);
        let (epoch, latest, entries) = read_reply(v).unwrap();
        assert_eq!((epoch.as_str(), latest), ("e1", 8));
        let got: Vec<_> = entries
            .iter()
            .map(|e| (e.offset, e.message.clone(), e.message_id.as_str(), e.ts))
            .collect();
        assert_eq!(got, [(7, Some(m), "caller", 123), (8, None, "", 124)]);
        let empty = Value::Array(vec![bulk(b""), Value::Int(0), Value::Array(vec![])]);
        assert_eq!(
            read_reply(empty).map(|(e, l, v)| (e, l, v.len())),
            Some((String::new(), 0, 0))
        );
        assert!(read_reply(Value::Array(vec![bulk(b"e")])).is_none());
        assert!(read_reply(Value::Nil).is_none());
    }
}
