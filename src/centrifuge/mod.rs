//! The Centrifugo-compatible door: `GET /connection/websocket` (configurable) speaks the
//! Centrifugo client protocol v2, in JSON or Protobuf, so the official Centrifugo SDKs connect
//! unchanged (docs/centrifuge.md). Like the native door it only translates: the hub, the
//! registry, the topic table, history, presence, limits and heartbeats are the same; only the
//! codec ([`codec`], [`wire`]), the connection loop ([`session`], [`translate`]) and the
//! commands ([`command`], one function each) differ.

pub mod codec;
pub mod command;
pub mod session;
pub mod translate;
pub mod wire;

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

use crate::hub::Hub;
use crate::tls::PeerAddr;
use codec::Codec;

/// The subprotocols offered by the SDKs; none offered means JSON.
pub const SUBPROTOCOLS: [&str; 2] = ["centrifuge-json", "centrifuge-protobuf"];

/// The codec a handshake asks for: the negotiated subprotocol, else the reference server's
/// legacy query parameters (`format=protobuf`, `cf_protocol=protobuf`), else JSON.
pub fn codec_of(subprotocol: Option<&str>, query: Option<&str>) -> Codec {
    match subprotocol {
        Some("centrifuge-protobuf") => return Codec::Protobuf,
        Some(_) => return Codec::Json,
        None => {}
    }
    let protobuf = serde_urlencoded::from_str::<Vec<(String, String)>>(query.unwrap_or(""))
        .unwrap_or_default()
        .iter()
        .any(|(k, v)| (k == "format" || k == "cf_protocol") && v == "protobuf");
    if protobuf {
        Codec::Protobuf
    } else {
        Codec::Json
    }
}

/// `GET /connection/websocket`. Authentication comes later, in the `connect` command.
pub async fn upgrade(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(PeerAddr(remote)): ConnectInfo<PeerAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(refused) = crate::websocket::gate(&hub, remote, &headers) {
        return refused;
    }
    let ws = ws.protocols(SUBPROTOCOLS);
    let codec = codec_of(
        ws.selected_protocol().and_then(|p| p.to_str().ok()),
        query.as_deref(),
    );
    let Some(admission) = crate::websocket::admit(&hub) else {
        return crate::websocket::node_full();
    };
    let peer = crate::websocket::peer(remote, &headers);
    crate::websocket::configure(ws, &hub).on_upgrade(move |socket| {
        // Spawned, not awaited, as on the native door (it keeps idle connections small).
        tokio::spawn(session::run(socket, hub, codec, peer, admission));
        std::future::ready(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codec_follows_the_subprotocol_then_the_query() {
        assert_eq!(codec_of(None, None), Codec::Json);
        assert_eq!(codec_of(Some("centrifuge-json"), None), Codec::Json);
        assert_eq!(codec_of(Some("centrifuge-protobuf"), None), Codec::Protobuf);
        assert_eq!(codec_of(None, Some("format=protobuf")), Codec::Protobuf);
        assert_eq!(
            codec_of(None, Some("a=1&cf_protocol=protobuf")),
            Codec::Protobuf
        );
        assert_eq!(codec_of(None, Some("format=json")), Codec::Json);
    }
}
