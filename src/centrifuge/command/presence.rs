//! `presence` and `presence_stats`: who is subscribed to a channel the client is subscribed
//! to, or just how many clients and users.

use super::{code, Answer};
use crate::centrifuge::translate::Translator;
use crate::centrifuge::wire::{ClientInfo, PresenceResult, PresenceStatsResult, Reply};
use crate::hub::Hub;

pub async fn run(hub: &Hub, t: &Translator, channel: &str, stats: bool, a: &mut Answer<'_>) {
    if !t.subscribed(channel) {
        return a.fail(
            code::PERMISSION_DENIED,
            "permission denied: subscribe to the channel first",
            false,
        );
    }
    let (subs, users) = match hub.presence(channel).await {
        Ok(p) => p,
        Err(e) => return a.core_error(&e),
    };
    if stats {
        return a.reply(Reply {
            presence_stats: Some(PresenceStatsResult {
                num_clients: subs.len() as u32,
                num_users: users as u32,
            }),
            ..Default::default()
        });
    }
    let presence = subs
        .into_iter()
        .map(|c| {
            let info = ClientInfo {
                user: c.user_id,
                client: c.connection_id.clone(),
            };
            (c.connection_id, info)
        })
        .collect();
    a.reply(Reply {
        presence: Some(PresenceResult { presence }),
        ..Default::default()
    });
}
