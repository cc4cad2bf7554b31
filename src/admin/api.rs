//! The console's JSON routes under `<path>/api/`: sign-in and sign-out, the session, the
//! overview (totals, nodes, chart), and `v1/<Rpc>`, every unary RPC of the HTTP JSON API
//! behind the session. Sign-ins and actions are logged with the key's position, never the key.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{json, session, shown, Admin, Refused};
use crate::tls::PeerAddr;

/// The RPCs that only read: every other one needs a same-origin `Origin`.
const READS: [&str; 6] = [
    "ListConnections",
    "GetConnection",
    "GetStats",
    "GetUsers",
    "Presence",
    "History",
];

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    key: String,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionView {
    key_index: usize,
    expires_at: i64,
    node_id: String,
}

/// `POST <path>/api/sign-in` with `{"key": "<api key>"}`: a session cookie, or 401 (429 past
/// the wrong-key limit, checked before the key is looked at).
pub async fn sign_in(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(PeerAddr(remote)): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Refused> {
    admin.same_origin(&headers)?;
    let now = crate::clock::now_ms();
    // Logged in the refusal log (rate-limited), never with the key tried.
    let refuse = |code, reason| {
        admin.hub.refused(crate::node::refusals::Refusal {
            what: "admin sign-in refused",
            code,
            reason,
            remote_addr: &shown(remote),
            user_id: None,
        })
    };
    if let Some(ms) = admin.limiter.lock().blocked_for(remote.ip(), now) {
        refuse(429, "too many wrong keys from this address");
        return Err(Refused::TooMany((ms + 999) / 1000));
    }
    let form: SignIn = serde_json::from_slice(&body)
        .map_err(|e| Refused::BadBody(format!("expected {{\"key\": \"...\"}}: {e}")))?;
    let keys = &admin.hub.config.grpc.api_keys;
    let Some(index) = session::key_position(keys, &form.key) else {
        admin.limiter.lock().wrong(remote.ip(), now);
        refuse(401, "wrong API key");
        return Err(Refused::WrongKey);
    };
    let ttl = admin.hub.config.admin.session_ttl_ms;
    let (token, s) = session::mint(keys, index, crate::random::hex(16), now, ttl)?;
    tracing::info!(
        key_index = index,
        remote_addr = %remote,
        "admin sign-in"
    );
    let mut r = json(
        StatusCode::OK,
        &SessionView {
            key_index: s.key_index,
            expires_at: s.expires_at_ms,
            node_id: admin.hub.node_id().to_owned(),
        },
    );
    let cookie = session::set_cookie(
        &admin.hub.config.admin.path,
        Some((&token, ttl)),
        admin.secure,
    );
    insert_cookie(&mut r, &cookie);
    Ok(r)
}

/// `POST <path>/api/sign-out`: the session ends on every node; the cookie is cleared.
pub async fn sign_out(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(PeerAddr(remote)): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
) -> Result<Response, Refused> {
    let s = admin.session(&headers).await?;
    admin.same_origin(&headers)?;
    admin
        .hub
        .end_admin_session(&s.id, s.expires_at_ms)
        .await
        .map_err(|e| Refused::Unavailable(e.to_string()))?;
    tracing::info!(key_index = s.key_index, remote_addr = %remote, "admin sign-out");
    let mut r = json(StatusCode::OK, &serde_json::json!({}));
    let cookie = session::set_cookie(&admin.hub.config.admin.path, None, admin.secure);
    insert_cookie(&mut r, &cookie);
    Ok(r)
}

fn insert_cookie(r: &mut Response, cookie: &str) {
    if let Ok(v) = header::HeaderValue::from_str(cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
}

/// `GET <path>/api/session`: who is signed in (the key's position) and until when.
pub async fn session(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
) -> Result<Response, Refused> {
    let s = admin.session(&headers).await?;
    Ok(json(
        StatusCode::OK,
        &SessionView {
            key_index: s.key_index,
            expires_at: s.expires_at_ms,
            node_id: admin.hub.node_id().to_owned(),
        },
    ))
}

/// `GET <path>/api/overview`: the latest sample (totals, each node) and the chart so far.
pub async fn overview(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
) -> Result<Response, Refused> {
    admin.session(&headers).await?;
    let (series, mut rx) = admin.sampler.watch();
    // A sampler just started takes its first sample at once.
    let latest = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        rx.wait_for(Option::is_some),
    )
    .await
    .ok()
    .and_then(|r| r.ok().and_then(|s| s.clone()))
    .ok_or_else(|| Refused::Unavailable("no statistics yet: try again".into()))?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "sample": &*latest, "series": series }),
    ))
}

/// `POST <path>/api/v1/<Rpc>`: the HTTP JSON API's call, with the session's key.
pub async fn rpc(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(PeerAddr(remote)): ConnectInfo<PeerAddr>,
    Path(rpc): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, Refused> {
    let s = admin.session(&headers).await?;
    let action = !READS.contains(&rpc.as_str());
    if action {
        admin.same_origin(&headers)?;
    }
    if admin.hub.is_shutting_down() {
        return Err(Refused::Unavailable("the service is shutting down".into()));
    }
    let md = admin.metadata(&s);
    let r = crate::grpc::json::serve(&admin.door, &rpc, md, remote, body).await;
    if action {
        tracing::info!(
            key_index = s.key_index,
            remote_addr = %remote,
            rpc = %rpc,
            status = r.status().as_u16(),
            "admin action"
        );
    }
    Ok(super::no_store(r))
}

/// Anything else under `<path>/api/`: 401 without a session, else 404.
pub async fn unknown(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    match admin.session(&headers).await {
        Err(e) => e.into_response(),
        Ok(_) => crate::grpc::json::error(&tonic::Status::not_found(
            "no such route of the admin API (see docs/admin.md)",
        )),
    }
}
