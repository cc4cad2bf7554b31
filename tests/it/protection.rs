//! Lifecycle and protection: heartbeats (4408), token expiry (4001) and refresh, rate limits
//! (4029), connections per user (429 / 4429), the node's connection cap (503), Origin (403),
//! gRPC load shedding (RESOURCE_EXHAUSTED), and every JWT key type.

use std::time::{Duration, Instant};

use boundary_realtime::proto::*;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::common::*;

fn fast_heartbeat() -> boundary_realtime::config::Config {
    let mut c = config();
    c.limits.ping_interval_ms = 100;
    c.limits.pong_timeout_ms = 400;
    c
}

async fn is_live(client: &mut Client, id: &str) -> bool {
    client
        .get_connection(authed(GetConnectionRequest {
            connection_id: id.into(),
        }))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_answers_pings_stays_and_one_that_does_not_gets_4408() {
    let s = start_with(fast_heartbeat()).await;
    let mut client = s.client().await;
    let mut alive = s.connect("alive", &[]).await;
    let mut silent = s.connect("silent", &[]).await;
    // The live client reads (tungstenite answers each Ping with a Pong) until it has seen 5 pings.
    let started = Instant::now();
    let mut pings = 0;
    while pings < 5 {
        match tokio::time::timeout(WAIT, alive.stream.next())
            .await
            .unwrap()
        {
            Some(Ok(WsMessage::Ping(_))) => pings += 1,
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            other => panic!("the live client was cut off: {other:?}"),
        }
    }
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "pings come every ping_interval"
    );
    assert!(
        is_live(&mut client, &alive.id).await,
        "answering pings keeps a connection"
    );
    // The silent one never read, so never answered: it is gone from the registry...
    let id = silent.id.clone();
    eventually("the silent connection to be dropped", || {
        let mut client = client.clone();
        let id = id.clone();
        async move { !is_live(&mut client, &id).await }
    })
    .await;
    // ...and what it finds when it finally reads is a Ping, then the close 4408.
    let (code, reason, _) = silent.next_close().await;
    assert_eq!((code, reason.as_str()), (4408, "heartbeat lost"));
    assert!(is_live(&mut client, &alive.id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_announces_the_ping_interval() {
    let s = start_with(fast_heartbeat()).await;
    let mut ws = s.connect_bare().await;
    ws.send_text(&json!({"op":"auth","token":token("u", &[])}).to_string())
        .await;
    assert_eq!(ws.next_json().await["ping_interval_ms"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_connection_is_closed_with_4001_when_its_token_expires() {
    let s = start().await;
    let exp = now_s() + 1;
    let mut ws = s
        .connect_token(&sign(Algorithm::HS256, json!({"sub":"u","exp":exp})))
        .await;
    let (code, reason, _) = ws.next_close().await;
    assert_eq!((code, reason.as_str()), (4001, "token expired"));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(now_ms >= exp * 1000, "not before exp");
    assert!(now_ms < exp * 1000 + 3000, "soon after exp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_connection_outlives_its_first_token() {
    let s = start().await;
    let mut client = s.client().await;
    let exp = now_s() + 1;
    let mut ws = s
        .connect_token(&sign(Algorithm::HS256, json!({"sub":"u","exp":exp})))
        .await;
    let later = now_s() + 3600;
    ws.send_text(&json!({"op":"refresh","token":sign(Algorithm::HS256, json!({"sub":"u","exp":later})),"ref":1}).to_string())
        .await;
    assert_eq!(ws.next_json().await["op"], "refreshed");
    // Wait until well past the first exp, then check the connection still answers.
    eventually("the first token's exp to pass", || async move {
        now_s() > exp + 1
    })
    .await;
    ws.send_text(r#"{"op":"ping","ref":"still"}"#).await;
    assert_eq!(ws.next_json().await, json!({"op":"pong","ref":"still"}));
    assert!(is_live(&mut client, &ws.id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_over_the_rate_close_with_4029() {
    let mut c = config();
    c.limits.client_rate = 5; // burst 10
    let s = start_with(c).await;
    let mut ws = s.connect("chatty", &[]).await;
    let mut other = s.connect("calm", &[]).await;
    for i in 0..30 {
        ws.send_text(&format!(r#"{{"op":"ping","ref":{i}}}"#)).await;
    }
    let (code, reason, texts) = ws.next_close().await;
    assert_eq!((code, reason.as_str()), (4029, "rate limited"));
    assert!(
        (10..=12).contains(&texts.len()),
        "the burst was answered: {}",
        texts.len()
    );
    other.send_text(r#"{"op":"ping","ref":"ok"}"#).await;
    assert_eq!(other.next_json().await["ref"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_user_are_capped_with_429_and_4429() {
    let mut c = config();
    c.limits.max_connections_per_user = 2;
    let s = start_with(c).await;
    let _a = s.connect("capped", &[]).await;
    let b = s.connect("capped", &[]).await;
    assert_eq!(
        s.upgrade_status(&format!("?token={}", token("capped", &[])), None)
            .await,
        429
    );
    assert_eq!(
        s.upgrade_status("", Some(&format!("Bearer {}", token("capped", &[]))))
            .await,
        429
    );
    let mut third = s.connect_bare().await;
    third
        .send_text(&json!({"op":"auth","token":token("capped", &[])}).to_string())
        .await;
    let (code, _, texts) = third.next_close().await;
    assert_eq!(code, 4429);
    assert_eq!(texts[0]["code"], "too_many_connections");
    // another user is not affected, and a place frees when one leaves
    let _other = s.connect("free", &[]).await;
    let id = b.id.clone();
    drop(b);
    let mut client = s.client().await;
    eventually("the second connection to leave", || {
        let mut client = client.clone();
        let id = id.clone();
        async move { !is_live(&mut client, &id).await }
    })
    .await;
    let again = s.connect("capped", &[]).await;
    assert!(!again.id.is_empty());
    assert!(is_live(&mut client, &again.id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_answers_503() {
    let mut c = config();
    c.limits.max_connections = 2;
    let s = start_with(c).await;
    let a = s.connect("a", &[]).await;
    let _pending = s.connect_bare().await; // an unauthenticated socket holds a place too
    assert_eq!(
        s.upgrade_status(&format!("?token={}", token("c", &[])), None)
            .await,
        503
    );
    drop(a);
    let hub = s.hub().clone();
    eventually("a place to free", || {
        let hub = hub.clone();
        async move { hub.local().registry.is_empty() }
    })
    .await;
    // The place frees when the session task ends, just after the registry: poll, bounded.
    let deadline = Instant::now() + WAIT;
    while s
        .upgrade_status(&format!("?token={}", token("c", &[])), None)
        .await
        != 101
    {
        assert!(Instant::now() < deadline, "an upgrade is admitted again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_is_checked_on_every_upgrade() {
    let s = start().await;
    let t = token("u", &[]);
    let upgrade = |origin: Option<&'static str>, host: Option<String>| {
        let url = format!("{}?token={t}", s.ws_url());
        async move {
            let mut req = url.into_client_request().unwrap();
            if let Some(o) = origin {
                req.headers_mut().insert("origin", o.parse().unwrap());
            }
            if let Some(h) = host {
                req.headers_mut().insert("host", h.parse().unwrap());
            }
            match tokio_tungstenite::connect_async(req).await {
                Ok(_) => 101,
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
                Err(e) => panic!("{e}"),
            }
        }
    };
    let here = format!("http://{}", s.http);
    let here: &'static str = Box::leak(here.into_boxed_str());
    assert_eq!(upgrade(None, None).await, 101, "no Origin: not a browser");
    assert_eq!(upgrade(Some(here), None).await, 101, "same host");
    assert_eq!(
        upgrade(Some("https://evil.example"), None).await,
        403,
        "cross-site"
    );
    assert_eq!(upgrade(Some("null"), None).await, 403);

    let mut c = config();
    c.http.allowed_origins = vec!["https://app.example.com".into()];
    let s2 = start_with(c).await;
    let t2 = token("u", &[]);
    for (origin, want) in [
        ("https://app.example.com", 101),
        ("https://evil.example", 403),
        (here, 403),
    ] {
        let mut req = format!("{}?token={t2}", s2.ws_url())
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        let got = match tokio_tungstenite::connect_async(req).await {
            Ok(_) => 101,
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(got, want, "{origin}");
    }
    let mut c = config();
    c.http.allowed_origins = vec!["*".into()];
    let s3 = start_with(c).await;
    let mut req = format!("{}?token={}", s3.ws_url(), token("u", &[]))
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", "https://anywhere.test".parse().unwrap());
    assert!(
        tokio_tungstenite::connect_async(req).await.is_ok(),
        "explicit *"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_sheds_load_with_resource_exhausted_instead_of_queueing() {
    let mut c = config();
    c.grpc.max_concurrent_requests = 1;
    let s = start_with(c).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // Hold the one slot: a call whose request body never arrives. (If a probe below held the
    // slot when it arrived, the holder itself is shed: start another.)
    let hold = |channel: tonic::transport::Channel| async move {
        let mut holder = tonic::client::Grpc::new(channel);
        holder.ready().await.unwrap();
        let mut req = tonic::Request::new(futures_util::stream::pending::<GetStatsRequest>());
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {API_KEY}").parse().unwrap(),
        );
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/boundary.realtime.v1.RealtimeService/GetStats",
        );
        let codec = tonic_prost::ProstCodec::<GetStatsRequest, Stats>::default();
        holder.client_streaming(req, path, codec).await
    };
    let mut held = tokio::spawn(hold(channel.clone()));
    let mut client = boundary_realtime::proto::realtime_service_client::RealtimeServiceClient::new(
        channel.clone(),
    );
    // Once the holder's call reached the server, the next call is refused, not queued.
    let deadline = Instant::now() + WAIT;
    let code = loop {
        if held.is_finished() {
            held = tokio::spawn(hold(channel.clone()));
        }
        if let Err(e) = client.get_stats(authed(GetStatsRequest {})).await {
            break e.code();
        }
        assert!(Instant::now() < deadline, "a call was shed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(code, tonic::Code::ResourceExhausted);
    held.abort();
    // With the slot free again, calls pass.
    eventually("calls to pass again", || {
        let mut client = client.clone();
        async move { client.get_stats(authed(GetStatsRequest {})).await.is_ok() }
    })
    .await;
    let _ = client.get_stats(authed(GetStatsRequest {})).await;
}

fn keys(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_type_verifies_from_a_pem_file() {
    let rsa = ("rsa_private.pem", "rsa_public.pem");
    let cases = [
        ("RS256", Algorithm::RS256, rsa),
        ("RS384", Algorithm::RS384, rsa),
        ("RS512", Algorithm::RS512, rsa),
        ("PS256", Algorithm::PS256, rsa),
        ("PS384", Algorithm::PS384, rsa),
        ("PS512", Algorithm::PS512, rsa),
        (
            "ES256",
            Algorithm::ES256,
            ("ec_private.pem", "ec_public.pem"),
        ),
        (
            "ES384",
            Algorithm::ES384,
            ("ec384_private.pem", "ec384_public.pem"),
        ),
        (
            "EdDSA",
            Algorithm::EdDSA,
            ("ed25519_private.pem", "ed25519_public.pem"),
        ),
    ];
    for (name, alg, (private, public)) in cases {
        let mut c = config();
        c.jwt.algorithm = name.parse().unwrap();
        c.jwt.secret = Default::default();
        c.jwt.public_key_file = keys(public);
        let s = start_with(c).await;
        let pem = std::fs::read(keys(private)).unwrap();
        let key = match name {
            n if n.starts_with("ES") => EncodingKey::from_ec_pem(&pem).unwrap(),
            "EdDSA" => EncodingKey::from_ed_pem(&pem).unwrap(),
            _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
        };
        let claims = json!({"sub":"k","exp":now_s() + 60});
        let good = jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap();
        let ws = s.connect_token(&good).await;
        assert!(ws.id.starts_with("test."), "{name}");
        // Pinned: the same key under a sibling algorithm is refused.
        let sibling = match alg {
            Algorithm::RS256 => Some(Algorithm::RS384),
            Algorithm::PS256 => Some(Algorithm::RS256),
            Algorithm::ES256 | Algorithm::ES384 | Algorithm::EdDSA => None,
            _ => None,
        };
        if let Some(other) = sibling {
            let t = jsonwebtoken::encode(&Header::new(other), &claims, &key).unwrap();
            assert_eq!(
                s.upgrade_status(&format!("?token={t}"), None).await,
                401,
                "{name} vs {other:?}"
            );
        }
    }
}
