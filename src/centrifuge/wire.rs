//! The Centrifugo client protocol v2 messages this server reads and writes, written here from
//! the protocol's field numbers (`client.proto` of centrifugal/protocol): one Rust type per
//! message serves both codecs, Protobuf through prost and JSON through serde. Only the fields
//! we read or set are declared; both decoders skip the rest, as the SDKs require (they send
//! fields such as `flag`, `delta` or `headers` that we do not use). Pure: no I/O.
//!
//! JSON follows the reference server: empty and zero fields are left out, `data` is embedded
//! JSON (not base64), offsets are numbers.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}

/// `data` fields: embedded JSON in the JSON codec, raw bytes in Protobuf. The bytes we write
/// are always our own valid JSON text (the message object); requests' `data` is never read.
mod raw_json {
    use bytes::Bytes;
    use serde::ser::Error as _;
    use serde::{Serialize, Serializer};
    use serde_json::value::RawValue;

    pub fn serialize<S: Serializer>(data: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        let text = std::str::from_utf8(data).map_err(S::Error::custom)?;
        let raw: &RawValue = serde_json::from_str(text).map_err(S::Error::custom)?;
        raw.serialize(s)
    }
}

/// A client command. The reference server takes the first request field set.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default)]
pub struct Command {
    #[prost(uint32, tag = "1")]
    pub id: u32,
    #[prost(message, optional, tag = "4")]
    pub connect: Option<ConnectRequest>,
    #[prost(message, optional, tag = "5")]
    pub subscribe: Option<SubscribeRequest>,
    #[prost(message, optional, tag = "6")]
    pub unsubscribe: Option<ChannelRequest>,
    #[prost(message, optional, tag = "7")]
    pub publish: Option<ChannelRequest>,
    #[prost(message, optional, tag = "8")]
    pub presence: Option<ChannelRequest>,
    #[prost(message, optional, tag = "9")]
    pub presence_stats: Option<ChannelRequest>,
    #[prost(message, optional, tag = "10")]
    pub history: Option<HistoryRequest>,
    #[prost(message, optional, tag = "11")]
    pub ping: Option<Empty>,
    #[prost(message, optional, tag = "12")]
    pub send: Option<Empty>,
    #[prost(message, optional, tag = "13")]
    pub rpc: Option<Empty>,
    #[prost(message, optional, tag = "14")]
    pub refresh: Option<RefreshRequest>,
    #[prost(message, optional, tag = "15")]
    pub sub_refresh: Option<Empty>,
}

/// A message whose fields we do not read (or that has none).
#[derive(Clone, Copy, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default)]
pub struct ConnectRequest {
    #[prost(string, tag = "1")]
    pub token: String,
    /// Server-side subscriptions to recover (the personal channel).
    #[prost(map = "string, message", tag = "3")]
    pub subs: HashMap<String, SubscribeRequest>,
}

/// The requests that name only a channel (unsubscribe, publish, presence, presence_stats).
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default)]
pub struct ChannelRequest {
    #[prost(string, tag = "1")]
    pub channel: String,
}

#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default)]
pub struct SubscribeRequest {
    #[prost(string, tag = "1")]
    pub channel: String,
    #[prost(string, tag = "2")]
    pub token: String,
    #[prost(bool, tag = "3")]
    pub recover: bool,
    #[prost(string, tag = "6")]
    pub epoch: String,
    #[prost(uint64, tag = "7")]
    pub offset: u64,
    #[prost(bool, tag = "11")]
    pub join_leave: bool,
    /// Map and shared-poll subscriptions (Centrifugo 6.8+): not supported.
    #[prost(int32, tag = "15")]
    #[serde(rename = "type")]
    pub kind: i32,
}

#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default)]
pub struct HistoryRequest {
    #[prost(string, tag = "1")]
    pub channel: String,
    #[prost(int32, tag = "7")]
    pub limit: i32,
    #[prost(message, optional, tag = "8")]
    pub since: Option<StreamPosition>,
    #[prost(bool, tag = "9")]
    pub reverse: bool,
}

#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default)]
pub struct StreamPosition {
    #[prost(uint64, tag = "1")]
    pub offset: u64,
    #[prost(string, tag = "2")]
    pub epoch: String,
}

#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default)]
pub struct RefreshRequest {
    #[prost(string, tag = "1")]
    pub token: String,
}

/// A reply (with `id`), a push (`push`, no `id`) or a ping (neither).
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct Reply {
    #[prost(uint32, tag = "1")]
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub id: u32,
    #[prost(message, optional, tag = "2")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
    #[prost(message, optional, tag = "4")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<Push>,
    #[prost(message, optional, tag = "5")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectResult>,
    #[prost(message, optional, tag = "6")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<SubscribeResult>,
    #[prost(message, optional, tag = "7")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<Empty>,
    #[prost(message, optional, tag = "9")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<PresenceResult>,
    #[prost(message, optional, tag = "10")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_stats: Option<PresenceStatsResult>,
    #[prost(message, optional, tag = "11")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryResult>,
    #[prost(message, optional, tag = "12")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping: Option<Empty>,
    #[prost(message, optional, tag = "14")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshResult>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct Error {
    #[prost(uint32, tag = "1")]
    pub code: u32,
    /// Always present: centrifuge-python reads it unconditionally.
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(bool, tag = "3")]
    #[serde(skip_serializing_if = "is_false")]
    pub temporary: bool,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct Push {
    #[prost(string, tag = "2")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
    #[prost(message, optional, tag = "4")]
    #[serde(rename = "pub", skip_serializing_if = "Option::is_none")]
    pub publication: Option<Publication>,
    #[prost(message, optional, tag = "5")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<Join>,
    #[prost(message, optional, tag = "6")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leave: Option<Join>,
    #[prost(message, optional, tag = "7")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<Unsubscribe>,
    #[prost(message, optional, tag = "8")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[prost(message, optional, tag = "9")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Subscribe>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct Publication {
    #[prost(bytes = "bytes", tag = "4")]
    #[serde(with = "raw_json")]
    pub data: Bytes,
    #[prost(uint64, tag = "6")]
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
}

/// A join or leave push's body.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct Join {
    #[prost(message, optional, tag = "1")]
    pub info: Option<ClientInfo>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct ClientInfo {
    #[prost(string, tag = "1")]
    pub user: String,
    #[prost(string, tag = "2")]
    pub client: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct Unsubscribe {
    #[prost(uint32, tag = "2")]
    pub code: u32,
    #[prost(string, tag = "3")]
    pub reason: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct Message {
    #[prost(bytes = "bytes", tag = "1")]
    #[serde(with = "raw_json")]
    pub data: Bytes,
}

/// A server-side subscribe push.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct Subscribe {
    #[prost(bool, tag = "1")]
    pub recoverable: bool,
    #[prost(string, tag = "4")]
    pub epoch: String,
    #[prost(uint64, tag = "5")]
    pub offset: u64,
    #[prost(bool, tag = "6")]
    pub positioned: bool,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct ConnectResult {
    #[prost(string, tag = "1")]
    pub client: String,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(bool, tag = "3")]
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    #[prost(uint32, tag = "4")]
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
    #[prost(map = "string, message", tag = "6")]
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub subs: HashMap<String, SubscribeResult>,
    #[prost(uint32, tag = "7")]
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ping: u32,
    #[prost(bool, tag = "8")]
    #[serde(skip_serializing_if = "is_false")]
    pub pong: bool,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct RefreshResult {
    #[prost(string, tag = "1")]
    pub client: String,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(bool, tag = "3")]
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    #[prost(uint32, tag = "4")]
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct SubscribeResult {
    #[prost(bool, tag = "3")]
    pub recoverable: bool,
    #[prost(string, tag = "6")]
    pub epoch: String,
    #[prost(message, repeated, tag = "7")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<Publication>,
    #[prost(bool, tag = "8")]
    #[serde(skip_serializing_if = "is_false")]
    pub recovered: bool,
    #[prost(uint64, tag = "9")]
    pub offset: u64,
    #[prost(bool, tag = "10")]
    pub positioned: bool,
    #[prost(bool, tag = "12")]
    #[serde(skip_serializing_if = "is_false")]
    pub was_recovering: bool,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct PresenceResult {
    #[prost(map = "string, message", tag = "1")]
    pub presence: HashMap<String, ClientInfo>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct PresenceStatsResult {
    #[prost(uint32, tag = "1")]
    pub num_clients: u32,
    #[prost(uint32, tag = "2")]
    pub num_users: u32,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct HistoryResult {
    #[prost(message, repeated, tag = "1")]
    pub publications: Vec<Publication>,
    #[prost(string, tag = "2")]
    pub epoch: String,
    #[prost(uint64, tag = "3")]
    pub offset: u64,
}
