//! Authentication at the WebSocket door: the three token transports and every way a token
//! can be refused (HTTP 401 before the upgrade; `unauthorized` + 4001 after it).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::common::*;

fn keys(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_token_in_query_or_header_gets_401() {
    let s = start().await;
    let exp = now_s() + 3600;
    let other_secret = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub":"u","exp":exp}),
        &EncodingKey::from_secret(b"another secret"),
    )
    .unwrap();
    let alg_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo5OTk5OTk5OTk5fQ.";
    let cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("malformed", "not.a.jwt".into()),
        ("bad signature", other_secret),
        (
            "expired",
            sign(Algorithm::HS256, json!({"sub":"u","exp":now_s() - 10})),
        ),
        (
            "not yet valid",
            sign(
                Algorithm::HS256,
                json!({"sub":"u","exp":exp,"nbf":now_s() + 600}),
            ),
        ),
        (
            "wrong algorithm",
            sign(Algorithm::HS512, json!({"sub":"u","exp":exp})),
        ),
        ("alg none", alg_none.into()),
        ("no sub", sign(Algorithm::HS256, json!({"exp":exp}))),
        (
            "empty sub",
            sign(Algorithm::HS256, json!({"sub":"","exp":exp})),
        ),
        ("no exp", sign(Algorithm::HS256, json!({"sub":"u"}))),
    ];
    for (name, t) in &cases {
        assert_eq!(
            s.upgrade_status(&format!("?token={t}"), None).await,
            401,
            "query: {name}"
        );
        if !t.is_empty() {
            assert_eq!(
                s.upgrade_status("", Some(&format!("Bearer {t}"))).await,
                401,
                "header: {name}"
            );
        }
    }
    assert_eq!(
        s.upgrade_status("", Some("Basic dXNlcjpwYXNz")).await,
        401,
        "non-Bearer header"
    );
    // and a good token in each transport is upgraded
    assert_eq!(
        s.upgrade_status(&format!("?token={}", token("u", &[])), None)
            .await,
        101
    );
    assert_eq!(
        s.upgrade_status("", Some(&format!("Bearer {}", token("u", &[]))))
            .await,
        101
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_token_wins_over_the_header() {
    let s = start().await;
    let good = token("from-query", &[]);
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("{}?token={good}", s.ws_url()),
    )
    .unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer garbage".parse().unwrap());
    let (stream, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("query token is used");
    let mut ws = Ws {
        stream,
        id: String::new(),
    };
    assert_eq!(ws.next_json().await["user_id"], "from-query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iss_and_aud_are_checked_when_configured_and_exp_can_be_optional() {
    let mut c = config();
    c.jwt.issuer = "https://issuer.example".into();
    c.jwt.audience = "realtime".into();
    c.jwt.require_exp = false;
    let s = start_with(c).await;
    let q = |claims| format!("?token={}", sign(Algorithm::HS256, claims));
    assert_eq!(
        s.upgrade_status(
            &q(json!({"sub":"u","iss":"https://issuer.example","aud":"realtime"})),
            None
        )
        .await,
        101
    );
    assert_eq!(
        s.upgrade_status(
            &q(json!({"sub":"u","iss":"https://evil.example","aud":"realtime"})),
            None
        )
        .await,
        401
    );
    assert_eq!(
        s.upgrade_status(
            &q(json!({"sub":"u","iss":"https://issuer.example","aud":"other"})),
            None
        )
        .await,
        401
    );
    assert_eq!(
        s.upgrade_status(&q(json!({"sub":"u","aud":"realtime"})), None)
            .await,
        401,
        "iss missing"
    );
    let mut ws = s
        .connect_token(&sign(
            Algorithm::HS256,
            json!({"sub":"u","iss":"https://issuer.example","aud":"realtime"}),
        ))
        .await;
    ws.send_text(r#"{"op":"ping","ref":"x"}"#).await;
    assert_eq!(ws.next_json().await, json!({"op":"pong","ref":"x"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leeway_accepts_a_token_just_expired() {
    let mut c = config();
    c.jwt.leeway_ms = 30_000;
    let s = start_with(c).await;
    let q = |exp: i64| {
        format!(
            "?token={}",
            sign(Algorithm::HS256, json!({"sub":"u","exp":exp}))
        )
    };
    assert_eq!(s.upgrade_status(&q(now_s() - 5), None).await, 101);
    assert_eq!(s.upgrade_status(&q(now_s() - 120), None).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_frame_auth_connects_and_reports_claims() {
    let s = start().await;
    let mut ws = s.connect_bare().await;
    let exp = now_s() + 600;
    let t = sign(
        Algorithm::HS256,
        json!({"sub":"alice","exp":exp,"roles":["admin"],"meta":{"plan":"pro","seats":3}}),
    );
    ws.send_text(&json!({"op":"auth","token":t}).to_string())
        .await;
    let c = ws.next_json().await;
    assert_eq!(c["op"], "connected");
    assert_eq!(c["user_id"], "alice");
    assert_eq!(c["expires_at"], exp * 1000);
    assert_eq!(c["ping_interval_ms"], 25000);
    let id = c["connection_id"].as_str().unwrap();
    assert!(id.starts_with("test."), "{id}");
    let mut client = s.client().await;
    let conn = client
        .get_connection(authed(boundary_realtime::proto::GetConnectionRequest {
            connection_id: id.into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(conn.user_id, "alice");
    assert_eq!(conn.roles, vec!["admin"]);
    assert_eq!(conn.metadata.get("plan").map(String::as_str), Some("pro"));
    assert_eq!(conn.metadata.get("seats").map(String::as_str), Some("3"));
    assert_eq!(conn.expires_at.unwrap().seconds, exp);
    assert_eq!(conn.node_id, "test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_frame_faults_get_unauthorized_and_4001() {
    let s = start().await;
    let expired = sign(Algorithm::HS256, json!({"sub":"u","exp":now_s() - 10}));
    for (name, frame) in [
        (
            "bad token",
            json!({"op":"auth","token":"garbage"}).to_string(),
        ),
        ("expired", json!({"op":"auth","token":expired}).to_string()),
        ("not auth", r#"{"op":"ping","ref":"1"}"#.to_string()),
        ("not json", "hello".to_string()),
    ] {
        let mut ws = s.connect_bare().await;
        ws.send_text(&frame).await;
        let (code, _, texts) = ws.next_close().await;
        assert_eq!(code, 4001, "{name}");
        assert_eq!(texts.len(), 1, "{name}: {texts:?}");
        assert_eq!(texts[0]["op"], "error", "{name}");
        assert_eq!(texts[0]["code"], "unauthorized", "{name}");
    }
    let mut ws = s.connect_bare().await;
    ws.send_text(&json!({"op":"auth","token":expired}).to_string())
        .await;
    let (_, _, texts) = ws.next_close().await;
    assert_eq!(texts[0]["message"], "token expired");
    // An unsigned token (`alg: none`) is refused as the wrong algorithm, as the docs say.
    let alg_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo5OTk5OTk5OTk5fQ.";
    let mut ws = s.connect_bare().await;
    ws.send_text(&json!({"op":"auth","token":alg_none}).to_string())
        .await;
    let (_, _, texts) = ws.next_close().await;
    assert_eq!(
        texts[0]["message"],
        "token algorithm is not the configured one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_first_frame_within_auth_timeout_gets_4001() {
    let mut c = config();
    c.limits.auth_timeout_ms = 200;
    let s = start_with(c).await;
    let mut ws = s.connect_bare().await;
    let started = std::time::Instant::now();
    let (code, _, texts) = ws.next_close().await;
    assert_eq!(code, 4001);
    assert_eq!(texts[0]["code"], "unauthorized");
    assert_eq!(texts[0]["message"], "authentication timed out");
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_tokens_verify_with_a_pem_public_key_and_hs_confusion_fails() {
    for (alg, name, private, public) in [
        (
            "RS256",
            Algorithm::RS256,
            "rsa_private.pem",
            "rsa_public.pem",
        ),
        ("ES256", Algorithm::ES256, "ec_private.pem", "ec_public.pem"),
    ] {
        let mut c = config();
        c.jwt.algorithm = alg.parse().unwrap();
        c.jwt.secret = Default::default();
        c.jwt.public_key_file = keys(public);
        let s = start_with(c).await;
        let pem = std::fs::read(keys(private)).unwrap();
        let key = if alg == "RS256" {
            EncodingKey::from_rsa_pem(&pem).unwrap()
        } else {
            EncodingKey::from_ec_pem(&pem).unwrap()
        };
        let claims = json!({"sub":"u","exp":now_s() + 60});
        let good = jsonwebtoken::encode(&Header::new(name), &claims, &key).unwrap();
        let mut ws = s.connect_token(&good).await;
        assert!(ws.id.starts_with("test."));
        ws.send_text(r#"{"op":"ping"}"#).await;
        assert_eq!(ws.next_json().await, json!({"op":"pong"}));
        // The classic confusion: an HS256 token whose HMAC key is the public key's PEM text.
        let public_pem = std::fs::read(keys(public)).unwrap();
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&public_pem),
        )
        .unwrap();
        assert_eq!(
            s.upgrade_status(&format!("?token={forged}"), None).await,
            401,
            "{alg}: HS256 with the public key"
        );
        // An HS256 token under the shared test secret is refused too.
        assert_eq!(
            s.upgrade_status(&format!("?token={}", token("u", &[])), None)
                .await,
            401,
            "{alg}: HS256"
        );
    }
}
