//! The load tool's Centrifugo-protocol handshake: `connect` (and in topic mode `subscribe`)
//! in one frame, as the SDKs send them, then their replies; JSON or Protobuf. Deliveries are
//! read by the same reader as native ones (the pushes carry our message object).

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio_tungstenite::tungstenite::Message;

use super::conns::Ws;
use super::{BenchError, WireProtocol};

/// Connects (and subscribes to `topic`), waiting for both replies.
pub async fn start(
    ws: &mut Ws,
    protocol: WireProtocol,
    token: &str,
    topic: Option<&str>,
) -> Result<(), BenchError> {
    let mut commands = vec![Command {
        id: 1,
        connect: Some(ConnectRequest {
            token: token.to_owned(),
        }),
        ..Default::default()
    }];
    if let Some(t) = topic {
        commands.push(Command {
            id: 2,
            subscribe: Some(SubscribeRequest {
                channel: t.to_owned(),
            }),
            ..Default::default()
        });
    }
    let protobuf = protocol == WireProtocol::CentrifugeProtobuf;
    let frame = match protobuf {
        false => Message::text(
            commands
                .iter()
                .map(json_command)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        true => Message::binary(
            commands
                .iter()
                .flat_map(|c| c.encode_length_delimited_to_vec())
                .collect::<Vec<u8>>(),
        ),
    };
    ws.send(frame)
        .await
        .map_err(|e| BenchError::Failed(format!("sending connect: {e}")))?;
    let mut waiting = commands.len();
    while waiting > 0 {
        let replies = match ws.next().await {
            Some(Ok(Message::Text(t))) => t
                .as_str()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_default())
                .map(|v| (v["id"].as_u64().unwrap_or(0), v.get("error").cloned()))
                .collect::<Vec<_>>(),
            Some(Ok(Message::Binary(b))) => {
                let mut buf = &b[..];
                let mut out = Vec::new();
                while !buf.is_empty() {
                    let r = Reply::decode_length_delimited(&mut buf)
                        .map_err(|e| BenchError::Failed(format!("an undecodable reply: {e}")))?;
                    let err = r
                        .error
                        .map(|e| serde_json::json!({"code": e.code, "message": e.message}));
                    out.push((u64::from(r.id), err));
                }
                out
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Err(BenchError::Rejected(format!(
                    "the server closed the connection with {code} {reason:?} before connect"
                )));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(BenchError::Failed(format!("waiting for connect: {e}"))),
            None => {
                return Err(BenchError::Failed(
                    "the connection ended before connect".into(),
                ))
            }
        };
        for (id, error) in replies {
            if let Some(e) = error.filter(|e| !e.is_null()) {
                return Err(BenchError::Rejected(format!("the server answered {e}")));
            }
            if id > 0 {
                waiting -= 1;
            }
        }
    }
    Ok(())
}

fn json_command(c: &Command) -> String {
    match (&c.connect, &c.subscribe) {
        (Some(connect), _) => {
            serde_json::json!({"id": c.id, "connect": {"token": connect.token}}).to_string()
        }
        (_, Some(s)) => {
            serde_json::json!({"id": c.id, "subscribe": {"channel": s.channel}}).to_string()
        }
        _ => "{}".to_owned(),
    }
}

// The client's side of the Centrifugo protocol v2, as the SDKs' client.proto numbers it: only
// what the handshake sends and reads. Written here rather than shared with the server, so the
// load tool speaks to the server's codec as an independent client does.

#[derive(Clone, PartialEq, prost::Message)]
struct Command {
    #[prost(uint32, tag = "1")]
    id: u32,
    #[prost(message, optional, tag = "4")]
    connect: Option<ConnectRequest>,
    #[prost(message, optional, tag = "5")]
    subscribe: Option<SubscribeRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ConnectRequest {
    #[prost(string, tag = "1")]
    token: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SubscribeRequest {
    #[prost(string, tag = "1")]
    channel: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Reply {
    #[prost(uint32, tag = "1")]
    id: u32,
    #[prost(message, optional, tag = "2")]
    error: Option<ReplyError>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReplyError {
    #[prost(uint32, tag = "1")]
    code: u32,
    #[prost(string, tag = "2")]
    message: String,
}
