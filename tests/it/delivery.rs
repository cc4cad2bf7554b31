//! Delivery and the client protocol: ordering, slow consumers (4008) next to a healthy client,
//! frame size (1009), bad frames (4400), ping/pong, refresh, and garbage that must not hurt
//! anyone else.

use boundary_realtime::proto::*;
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_with_4008_while_a_healthy_client_gets_everything_in_order() {
    let mut c = config();
    c.limits.send_queue = 16;
    let s = start_with(c).await;
    let mut client = s.client().await;

    // The slow client: a tiny receive buffer, and it does not read.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(s.http).await.unwrap();
    let req = format!("{}?token={}", s.ws_url(), token("slow", &[]))
        .into_client_request()
        .unwrap();
    let (slow_stream, _) =
        tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    let mut slow = Ws {
        stream: slow_stream,
        id: String::new(),
    };
    let first = slow.next_json().await;
    slow.id = first["connection_id"].as_str().unwrap().to_owned();

    let mut healthy = s.connect("healthy", &[]).await;
    const N: usize = 400;
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::with_capacity(N);
        for _ in 0..N {
            let f = healthy.next_json().await;
            seqs.push(f["payload"]["seq"].as_u64().unwrap());
        }
        (seqs, healthy)
    });
    let pad = "x".repeat(32 * 1024);
    for seq in 0..N {
        let payload = json!({"seq": seq, "pad": pad}).to_string();
        for user in ["slow", "healthy"] {
            client
                .send_to_user(authed(SendToUserRequest {
                    user_id: user.into(),
                    message: msg("load", &payload),
                }))
                .await
                .unwrap();
        }
    }
    let (seqs, _healthy) = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    assert_eq!(
        seqs,
        (0..N as u64).collect::<Vec<_>>(),
        "every message, in order"
    );

    let st = client
        .get_stats(authed(GetStatsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.messages_dropped, 1, "one overflow, one drop counted");
    assert_eq!(
        st.connections, 1,
        "the slow consumer left the registry at once"
    );
    let e = client
        .get_connection(authed(GetConnectionRequest {
            connection_id: slow.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    // The slow client, reading at last, finds what was already on the wire, then 4008.
    let (code, reason, texts) = slow.next_close().await;
    assert_eq!((code, reason.as_str()), (4008, "slow consumer"));
    assert!(
        texts.len() < N,
        "queued messages were discarded ({} arrived)",
        texts.len()
    );
    // metrics agree
    let body = http_get(&s, "/metrics").await;
    assert!(body.contains("realtime_messages_dropped_total 1"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_in_the_order_accepted() {
    let s = start().await;
    let mut client = s.client().await;
    let mut ws = s.connect("o", &["r"]).await;
    for i in 0..200 {
        // alternate routes: order holds across them for one caller
        let m = msg("seq", &i.to_string());
        if i % 2 == 0 {
            client
                .send_to_user(authed(SendToUserRequest {
                    user_id: "o".into(),
                    message: m,
                }))
                .await
                .unwrap();
        } else {
            client
                .send_to_role(authed(SendToRoleRequest {
                    role: "r".into(),
                    message: m,
                }))
                .await
                .unwrap();
        }
    }
    for i in 0..200 {
        assert_eq!(ws.next_json().await["payload"], i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gets_pong_with_ref() {
    let s = start().await;
    let mut ws = s.connect("p", &[]).await;
    ws.send_text(r#"{"op":"ping","ref":"1"}"#).await;
    assert_eq!(ws.next_json().await, json!({"op":"pong","ref":"1"}));
    ws.send_text(r#"{"op":"ping","ref":42}"#).await;
    assert_eq!(ws.next_json().await, json!({"op":"pong","ref":42}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_bad_request_and_the_tenth_closes_with_4400() {
    let s = start().await;
    let mut ws = s.connect("bad", &[]).await;
    let bad = [
        r#"{"op":"nope","ref":"a"}"#,
        "not json",
        "[1,2]",
        r#"{"ref":"b"}"#,
        r#"{"op":"subscribe","ref":"c"}"#,
    ];
    for (i, frame) in bad.iter().enumerate() {
        ws.send_text(frame).await;
        let e = ws.next_json().await;
        assert_eq!(
            (e["op"].as_str(), e["code"].as_str()),
            (Some("error"), Some("bad_request")),
            "{frame}"
        );
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        match i {
            0 => assert_eq!(e["ref"], "a"),
            3 => assert_eq!(e["ref"], "b"),
            4 => assert_eq!(e["ref"], "c"),
            _ => assert!(e.get("ref").is_none(), "{e}"),
        }
        // good frames in between do not reset the count
        ws.send_text(r#"{"op":"ping"}"#).await;
        assert_eq!(ws.next_json().await["op"], "pong");
    }
    ws.stream.send_binary(vec![1, 2, 3]).await;
    let e = ws.next_json().await;
    assert_eq!(e["code"], "bad_request");
    for _ in 0..3 {
        ws.send_text("{").await;
        assert_eq!(ws.next_json().await["code"], "bad_request");
    }
    // the tenth
    ws.send_text("{").await;
    let (code, reason, texts) = ws.next_close().await;
    assert_eq!(texts.len(), 1, "the tenth is answered, then the close");
    assert_eq!((code, reason.as_str()), (4400, "too many bad frames"));
}

trait SendBinary {
    async fn send_binary(&mut self, data: Vec<u8>);
}

impl SendBinary
    for tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
{
    async fn send_binary(&mut self, data: Vec<u8>) {
        use futures_util::SinkExt;
        self.send(WsMessage::Binary(data.into())).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_max_frame_bytes_closes_with_1009() {
    let mut c = config();
    c.limits.max_frame_bytes = 1024;
    let s = start_with(c).await;
    let mut ws = s.connect("big", &[]).await;
    let mut other = s.connect("other", &[]).await;
    // exactly at the limit is fine
    let at_limit = format!(r#"{{"op":"ping","ref":"{}"}}"#, "r".repeat(1024 - 22));
    assert_eq!(at_limit.len(), 1024);
    ws.send_text(&at_limit).await;
    assert_eq!(ws.next_json().await["op"], "pong");
    ws.send_text(&format!(r#"{{"op":"ping","ref":"{}"}}"#, "r".repeat(2000)))
        .await;
    let (code, _, _) = ws.next_close().await;
    assert_eq!(code, 1009);
    // others are unaffected
    other.send_text(r#"{"op":"ping","ref":"ok"}"#).await;
    assert_eq!(other.next_json().await["ref"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_moves_expires_at_and_refuses_another_user_or_a_bad_token() {
    let s = start().await;
    let mut client = s.client().await;
    let mut ws = s.connect("r", &[]).await;
    let get = |id: String| authed(GetConnectionRequest { connection_id: id });
    let before = client
        .get_connection(get(ws.id.clone()))
        .await
        .unwrap()
        .into_inner()
        .expires_at
        .unwrap();
    let later = now_s() + 7200;
    let t = sign(Algorithm::HS256, json!({"sub":"r","exp":later}));
    ws.send_text(&json!({"op":"refresh","token":t,"ref":"5"}).to_string())
        .await;
    assert_eq!(
        ws.next_json().await,
        json!({"op":"refreshed","expires_at":later * 1000,"ref":"5"})
    );
    let after = client
        .get_connection(get(ws.id.clone()))
        .await
        .unwrap()
        .into_inner()
        .expires_at
        .unwrap();
    assert_eq!(after.seconds, later);
    assert!(after.seconds > before.seconds);

    let other = sign(Algorithm::HS256, json!({"sub":"mallory","exp":later + 100}));
    ws.send_text(&json!({"op":"refresh","token":other,"ref":"6"}).to_string())
        .await;
    let e = ws.next_json().await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("unauthorized"), Some("6"))
    );
    ws.send_text(r#"{"op":"refresh","token":"junk","ref":"7"}"#)
        .await;
    let e = ws.next_json().await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("unauthorized"), Some("7"))
    );
    let unchanged = client
        .get_connection(get(ws.id.clone()))
        .await
        .unwrap()
        .into_inner()
        .expires_at
        .unwrap();
    assert_eq!(
        unchanged.seconds, later,
        "a refused refresh changes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_clients_never_hurts_the_server() {
    let s = start().await;
    let mut client = s.client().await;
    let mut bystander = s.connect("bystander", &[]).await;
    // Garbage frames of every kind from several clients.
    let garbage: Vec<String> = vec![
        "".into(),
        "\u{0}".into(),
        "{\"op\":".into(),
        "{\"op\":\"auth\",\"token\":123}".into(),
        "{\"op\":\"ping\",\"ref\":{\"deep\":[[[[[]]]]]}}".into(),
        "[".repeat(5000),
        "{\"op\":\"subscribe\",\"topic\":\"x\",\"since\":\"yesterday\"}".into(),
        "\"just a string\"".into(),
        "9".repeat(3000),
        "{\"op\":\"refresh\"}".into(),
    ];
    for _ in 0..3 {
        let mut ws = s.connect("vandal", &[]).await;
        for g in &garbage {
            ws.send_text(g).await;
        }
        let (code, _, _) = ws.next_close().await;
        assert_eq!(code, 4400);
    }
    // Raw bytes that are not HTTP, and an upgrade with a broken handshake.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(s.http).await.unwrap();
    raw.write_all(b"\x16\x03\x01garbage\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, raw.read_to_end(&mut buf)).await;
    let mut raw = tokio::net::TcpStream::connect(s.http).await.unwrap();
    raw.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(WAIT, raw.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 4"),
        "a broken upgrade is refused"
    );
    // An unmasked client frame right after a good upgrade: a protocol error for that one only.
    let mut raw = tokio::net::TcpStream::connect(s.http).await.unwrap();
    let handshake = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        token("raw", &[]),
        s.http
    );
    raw.write_all(handshake.as_bytes()).await.unwrap();
    raw.write_all(&[0x81, 0x05, b'h', b'e', b'l', b'l', b'o'])
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, raw.read_to_end(&mut buf)).await;

    // Everyone else is still served.
    let r = client
        .send_to_user(authed(SendToUserRequest {
            user_id: "bystander".into(),
            message: msg("ok", "true"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.connections, 1);
    assert_eq!(bystander.next_json().await["payload"], true);
    let fresh = s.connect("fresh", &[]).await;
    assert!(!fresh.id.is_empty());
}

pub async fn http_get(s: &TestServer, path: &str) -> String {
    let (status, body) = http_get_status(s, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

pub async fn http_get_status(s: &TestServer, path: &str) -> (u16, String) {
    let text = http_get_raw(s, path).await;
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The whole response: status line, headers and body.
pub async fn http_get_raw(s: &TestServer, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(s.http).await.unwrap();
    stream
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                s.http
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf).to_string()
}
