//! JWKS: keys by `kid` from a file or a loopback HTTP server; rotation picked up on an unknown
//! `kid`; refetches rate-limited; the last good set kept when fetches fail.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::common::*;

fn ec_key(file: &str) -> EncodingKey {
    let path = format!("{}/tests/keys/{file}", env!("CARGO_MANIFEST_DIR"));
    EncodingKey::from_ec_pem(&std::fs::read(path).unwrap()).unwrap()
}

fn jwk(file: &str, kid: &str) -> Jwk {
    let mut j = Jwk::from_encoding_key(&ec_key(file), Algorithm::ES256).unwrap();
    j.common.key_id = Some(kid.into());
    j
}

fn jwks(keys: &[(&str, &str)]) -> String {
    serde_json::to_string(&JwkSet {
        keys: keys.iter().map(|(f, k)| jwk(f, k)).collect(),
    })
    .unwrap()
}

fn token_with(file: &str, kid: &str, user: &str) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(
        &h,
        &json!({"sub": user, "exp": now_s() + 600}),
        &ec_key(file),
    )
    .unwrap()
}

const A: (&str, &str) = ("ec_private.pem", "a");
const B: (&str, &str) = ("ec2_private.pem", "b");

/// A loopback JWKS server whose answer the test changes, counting requests.
struct JwksServer {
    url: String,
    answer: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(body: String) -> Self {
        type S = (Arc<Mutex<(u16, String)>>, Arc<AtomicUsize>);
        let answer = Arc::new(Mutex::new((200, body)));
        let hits = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .route(
                "/jwks.json",
                get(|State((answer, hits)): State<S>| async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = answer.lock().unwrap().clone();
                    (StatusCode::from_u16(status).unwrap(), body)
                }),
            )
            .with_state((answer.clone(), hits.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        JwksServer { url, answer, hits }
    }

    fn set(&self, status: u16, body: String) {
        *self.answer.lock().unwrap() = (status, body);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn jwks_config(url: &str) -> boundary_realtime::config::Config {
    let mut c = config();
    c.jwt.algorithm = jsonwebtoken::Algorithm::ES256;
    c.jwt.secret = Default::default();
    c.jwt.jwks_url = url.into();
    c.jwt.jwks_min_refetch_ms = 0;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_is_picked_up_on_an_unknown_kid() {
    let idp = JwksServer::start(jwks(&[A])).await;
    let s = start_with(jwks_config(&idp.url)).await;
    assert_eq!(idp.hits(), 1, "fetched once at start");
    let ws = s.connect_token(&token_with(A.0, A.1, "alice")).await;
    assert!(!ws.id.is_empty());
    assert_eq!(idp.hits(), 1, "a known kid needs no fetch");

    idp.set(200, jwks(&[B]));
    let ws = s.connect_token(&token_with(B.0, B.1, "bob")).await;
    assert!(!ws.id.is_empty(), "the new key is found by refetching");
    assert_eq!(idp.hits(), 2);
    // first-frame auth goes through the same path
    let mut bare = s.connect_bare().await;
    bare.send_text(&json!({"op":"auth","token":token_with(B.0, B.1, "carol")}).to_string())
        .await;
    assert_eq!(bare.next_json().await["user_id"], "carol");
    // the retired key is refused (after one more look)
    assert_eq!(
        s.upgrade_status(&format!("?token={}", token_with(A.0, A.1, "old")), None)
            .await,
        401
    );
    // a token signed by B but claiming kid a is refused: the kid picks the key
    assert_eq!(
        s.upgrade_status(&format!("?token={}", token_with(B.0, A.1, "liar")), None)
            .await,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refetches_on_unknown_kids_are_rate_limited() {
    let idp = JwksServer::start(jwks(&[A])).await;
    let mut c = jwks_config(&idp.url);
    c.jwt.jwks_min_refetch_ms = 60_000;
    let s = start_with(c).await;
    idp.set(200, jwks(&[A, B]));
    for _ in 0..5 {
        assert_eq!(
            s.upgrade_status(&format!("?token={}", token_with(B.0, B.1, "u")), None)
                .await,
            401
        );
    }
    assert_eq!(
        idp.hits(),
        1,
        "no refetch within jwks_min_refetch_ms, however many unknown kids"
    );
    let ws = s.connect_token(&token_with(A.0, A.1, "u")).await;
    assert!(!ws.id.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_good_set_is_kept_when_fetches_fail() {
    let idp = JwksServer::start(jwks(&[A])).await;
    let mut c = jwks_config(&idp.url);
    c.jwt.jwks_refresh_ms = 50;
    let s = start_with(c).await;
    idp.set(500, "down".into());
    let hits = idp.hits();
    eventually("failed refreshes", || async { idp.hits() >= hits + 3 }).await;
    let ws = s.connect_token(&token_with(A.0, A.1, "u")).await;
    assert!(!ws.id.is_empty(), "still verifies after failed fetches");
    idp.set(200, "{\"keys\": \"garbage\"}".into());
    let hits = idp.hits();
    eventually("refreshes with a broken document", || async {
        idp.hits() >= hits + 3
    })
    .await;
    let ws = s.connect_token(&token_with(A.0, A.1, "u")).await;
    assert!(!ws.id.is_empty(), "still verifies after a broken document");
    // and a good rotation later is taken
    idp.set(200, jwks(&[B]));
    let hits = idp.hits();
    eventually("a good refresh", || async { idp.hits() >= hits + 2 }).await;
    let ws = s.connect_token(&token_with(B.0, B.1, "u")).await;
    assert!(!ws.id.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_file_works_and_is_reread_on_an_unknown_kid() {
    let dir = std::env::temp_dir().join(format!("rt-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jwks.json");
    std::fs::write(&path, jwks(&[A])).unwrap();
    let mut c = config();
    c.jwt.algorithm = jsonwebtoken::Algorithm::ES256;
    c.jwt.secret = Default::default();
    c.jwt.jwks_file = path.to_string_lossy().into_owned();
    c.jwt.jwks_min_refetch_ms = 0;
    let s = start_with(c).await;
    assert!(!s
        .connect_token(&token_with(A.0, A.1, "u"))
        .await
        .id
        .is_empty());
    std::fs::write(&path, jwks(&[A, B])).unwrap();
    assert!(!s
        .connect_token(&token_with(B.0, B.1, "u"))
        .await
        .id
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_fails_naming_the_key_when_the_jwks_cannot_be_had() {
    // a port with nothing listening
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", closed.local_addr().unwrap());
    drop(closed);
    let e = match boundary_realtime::server::Server::start(jwks_config(&url)).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started without its keys"),
    };
    assert!(e.contains("jwt.jwks_url"), "{e}");
    let idp = JwksServer::start("{\"keys\":[]}".into()).await;
    let e = match boundary_realtime::server::Server::start(jwks_config(&idp.url)).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started with no usable key"),
    };
    assert!(e.contains("no key usable with ES256"), "{e}");
}
