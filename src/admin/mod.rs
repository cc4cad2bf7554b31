//! The admin console (PROTOCOL.md section 8, docs/admin.md): a web page served by the binary
//! at `[admin] path`, its JSON API under `<path>/api/`, and its live stream. It is one more
//! door, and a thin one: sign-in, the session and the Origin rule are its own; every question
//! and action goes through the HTTP JSON API's dispatch (`grpc::json::serve`) to the very
//! handlers a gRPC call reaches, with the key the session signed in with, so the console can
//! do nothing the API cannot and answers with the same errors.
//!
//! - `session.rs`: the cookie (a JWT signed with the API key);
//! - `limiter.rs`: wrong keys per address;
//! - `sampler.rs`: the totals and the chart, one cluster-wide GetStats a second while watched;
//! - `api.rs`: the JSON routes; `events.rs`: the live stream (SSE); `page.rs`: the files.

mod api;
mod events;
mod limiter;
mod page;
mod sampler;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use parking_lot::Mutex;
use secrecy::ExposeSecret;

use crate::grpc::GrpcDoor;
use crate::hub::Hub;

/// What the console's handlers share.
pub struct Admin {
    hub: Arc<Hub>,
    door: GrpcDoor,
    limiter: Mutex<limiter::SignInLimiter>,
    sampler: Arc<sampler::Sampler>,
    /// `Secure` cookies: TLS on this listener, or `[admin] secure_cookie`.
    secure: bool,
    pages: page::Pages,
}

/// The console's routes, under `[admin] path` (the caller checks that it is enabled).
pub fn router(hub: Arc<Hub>, consumers: Vec<Arc<crate::consumers::status::Status>>) -> Router {
    let cfg = &hub.config;
    let p = cfg.admin.path.clone();
    let secure = cfg.admin.secure_cookie
        || (!cfg.http.tls_cert_file.is_empty() && !cfg.http.tls_key_file.is_empty());
    let admin = Arc::new(Admin {
        door: GrpcDoor::new(Arc::clone(&hub)),
        limiter: Mutex::new(limiter::SignInLimiter::default()),
        sampler: sampler::Sampler::new(Arc::clone(&hub), consumers),
        secure,
        pages: page::Pages::new(&p),
        hub,
    });
    Router::new()
        .route(&p, get(page::console))
        .route(&format!("{p}/"), get(page::to_console))
        .route(&format!("{p}/sign-in"), get(page::sign_in))
        .route(&format!("{p}/assets/{{file}}"), get(page::asset))
        .route(&format!("{p}/api/sign-in"), post(api::sign_in))
        .route(&format!("{p}/api/sign-out"), post(api::sign_out))
        .route(&format!("{p}/api/session"), get(api::session))
        .route(&format!("{p}/api/overview"), get(api::overview))
        .route(&format!("{p}/api/events"), get(events::stream))
        .route(&format!("{p}/api/v1/{{rpc}}"), post(api::rpc))
        .route(&format!("{p}/api"), any(api::unknown))
        .route(&format!("{p}/api/{{*rest}}"), any(api::unknown))
        .with_state(admin)
}

/// Why a console request is refused, answered once here as the HTTP JSON API answers errors.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    NoSession(#[from] session::SessionError),
    #[error(
        "a state-changing request needs an Origin of this host (or one of http.allowed_origins)"
    )]
    Origin,
    #[error("too many wrong keys from this address: try again in {0} s")]
    TooMany(i64),
    #[error("invalid API key")]
    WrongKey,
    #[error("body: {0}")]
    BadBody(String),
    #[error("{0}")]
    Unavailable(String),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let status = match &self {
            Refused::NoSession(_) | Refused::WrongKey => {
                tonic::Status::unauthenticated(self.to_string())
            }
            Refused::Origin => tonic::Status::permission_denied(self.to_string()),
            Refused::TooMany(_) => tonic::Status::resource_exhausted(self.to_string()),
            Refused::BadBody(_) => tonic::Status::invalid_argument(self.to_string()),
            Refused::Unavailable(_) => tonic::Status::unavailable(self.to_string()),
        };
        let mut r = crate::grpc::json::error(&status);
        if let Refused::TooMany(secs) = self {
            if let Ok(v) = secs.to_string().parse() {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        no_store(r)
    }
}

/// API answers are never cached.
fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

impl Admin {
    /// The session the request's cookie holds, still valid and not signed out anywhere.
    async fn session(&self, headers: &HeaderMap) -> Result<session::Session, Refused> {
        let token = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(session::from_cookie_header)
            .ok_or(session::SessionError::Missing)?;
        let s = session::verify(
            &self.hub.config.grpc.api_keys,
            token,
            crate::clock::now_ms(),
        )?;
        match self.hub.admin_session_ended(&s.id).await {
            Ok(false) => Ok(s),
            Ok(true) => Err(session::SessionError::Expired.into()),
            Err(e) => Err(Refused::Unavailable(e.to_string())),
        }
    }

    /// A state-changing request must come from a page of this host (or a listed origin): a
    /// present `Origin` that passes section 1's same-host rule or equals an entry of
    /// `http.allowed_origins`. A `*` there is for sockets; it opens no console action.
    fn same_origin(&self, headers: &HeaderMap) -> Result<(), Refused> {
        let text = |h| {
            headers
                .get(h)
                .and_then(|v: &header::HeaderValue| v.to_str().ok())
        };
        let Some(origin) = text(header::ORIGIN) else {
            return Err(Refused::Origin);
        };
        let listed: Vec<String> = (self.hub.config.http.allowed_origins.iter())
            .filter(|o| o.as_str() != "*")
            .cloned()
            .collect();
        let same_host = crate::core::origin::allowed(Some(origin), text(header::HOST), &[]);
        let is_listed =
            !listed.is_empty() && crate::core::origin::allowed(Some(origin), None, &listed);
        if same_host || is_listed {
            Ok(())
        } else {
            Err(Refused::Origin)
        }
    }

    /// The metadata a door handler reads: the session's key as the Authorization the API
    /// takes (it never leaves the server).
    fn metadata(&self, s: &session::Session) -> tonic::metadata::MetadataMap {
        let mut md = tonic::metadata::MetadataMap::new();
        if let Some(key) = self.hub.config.grpc.api_keys.get(s.key_index) {
            if let Ok(v) = format!("Bearer {}", key.expose_secret()).parse() {
                md.insert("authorization", v);
            }
        }
        md
    }
}

/// A JSON answer.
fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    no_store(crate::grpc::json::reply(status, &text))
}

/// The remote address as logged.
fn shown(remote: SocketAddr) -> String {
    remote.to_string()
}
