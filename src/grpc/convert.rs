//! Protobuf views of the hub's connection snapshots and events.

use crate::clock::timestamp;
use crate::core::model::{ConnEvent, ConnEventKind, ConnSnapshot};
use crate::core::users::UserState;
use crate::proto;

pub fn connection(c: ConnSnapshot) -> proto::Connection {
    proto::Connection {
        connection_id: c.id,
        user_id: c.user_id,
        roles: c.roles,
        topics: c.topics,
        connected_at: Some(timestamp(c.connected_at_ms)),
        expires_at: c.expires_at_ms.map(timestamp),
        node_id: c.node_id,
        remote_addr: c.remote_addr,
        user_agent: c.user_agent,
        metadata: c.metadata.into_iter().collect(),
        messages_sent: c.messages_sent,
        messages_dropped: c.messages_dropped,
        protocol: c.protocol,
    }
}

pub fn kind(k: ConnEventKind) -> proto::event::Kind {
    match k {
        ConnEventKind::Connected => proto::event::Kind::Connected,
        ConnEventKind::Disconnected => proto::event::Kind::Disconnected,
        ConnEventKind::Subscribed => proto::event::Kind::Subscribed,
        ConnEventKind::Unsubscribed => proto::event::Kind::Unsubscribed,
        ConnEventKind::UserOnline => proto::event::Kind::UserOnline,
        ConnEventKind::UserOffline => proto::event::Kind::UserOffline,
    }
}

/// A user as GetUsers answers it.
pub fn user(u: UserState) -> proto::get_users_response::User {
    proto::get_users_response::User {
        user_id: u.user_id,
        online: u.online,
        connections: u.connections,
        online_since: u.online_since_ms.map(timestamp),
        last_seen: u.last_seen_ms.map(timestamp),
    }
}

pub fn event(e: &ConnEvent) -> proto::Event {
    proto::Event {
        kind: kind(e.kind) as i32,
        // A user's transition is about no one connection.
        connection: (!e.kind.is_user()).then(|| connection(e.conn.clone())),
        topic: e.topic.clone().unwrap_or_default(),
        close_code: u32::from(e.close_code),
        close_reason: e.close_reason.clone(),
        at: Some(timestamp(e.at_ms)),
        user_id: e.conn.user_id.clone(),
    }
}
