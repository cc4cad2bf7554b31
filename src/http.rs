//! The HTTP listener's routes: `/ws` (the WebSocket door), `/api/v1/<Rpc>` (the HTTP JSON
//! API, `grpc::json`), `/healthz`, `/readyz`, `/metrics`, with `[admin] enabled` the admin
//! console (`admin`), and with `http.demo` the demo page (`/demo`) and the client library it uses. The page and
//! library are embedded from `clients/js/` at build time. No request logging layer here: a
//! logged URL could carry a `?token=`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::hub::Hub;
use crate::tls::PeerAddr;

const DEMO_HTML: &str = include_str!("../clients/js/demo/index.html");
const DEMO_JS: &str = include_str!("../clients/js/demo/demo.js");
const CLIENT_JS: &str = include_str!("../clients/js/realtime.js");
const FAVICON: &str = include_str!("../clients/js/demo/favicon.svg");
/// The page loads only its own scripts and talks only to this host.
const DEMO_CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

pub fn router(hub: Arc<Hub>, consumers: Vec<Arc<crate::consumers::status::Status>>) -> Router {
    let mut router = Router::new()
        .route("/ws", get(crate::ws::upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if hub.config.http.api {
        // The body is read by `grpc::json::call`, after the key check, up to each RPC's limit.
        router = router.route("/api/v1/{rpc}", post(api));
    }
    if hub.config.centrifuge.enabled {
        router = router.route(&hub.config.centrifuge.path, get(crate::centrifuge::upgrade));
    }
    if hub.config.http.demo {
        router = router
            .route(
                "/demo",
                get(|| async { asset("text/html; charset=utf-8", DEMO_HTML) }),
            )
            .route(
                "/demo/demo.js",
                get(|| async { asset("text/javascript; charset=utf-8", DEMO_JS) }),
            )
            .route("/demo/realtime.js", get(client_library))
            .route(
                "/demo/favicon.svg",
                get(|| async { asset("image/svg+xml", FAVICON) }),
            );
    }
    let admin = hub.config.admin.enabled;
    let router = router.with_state(Arc::clone(&hub));
    if admin {
        // The console's own routes under `[admin] path` (config checked they collide with none).
        router.merge(crate::admin::router(hub, consumers))
    } else {
        router
    }
}

/// `POST /api/v1/<Rpc>`: the HTTP JSON API (see `grpc::json`).
async fn api(
    State(hub): State<Arc<Hub>>,
    axum::extract::ConnectInfo(PeerAddr(remote)): axum::extract::ConnectInfo<PeerAddr>,
    axum::extract::Path(rpc): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Response {
    let door = Arc::new(crate::grpc::GrpcDoor::new(hub));
    crate::grpc::json::call(&door, &rpc, &headers, remote, body).await
}

/// The client library, importable from any page's console or module (`import()` fetches
/// modules with CORS).
async fn client_library() -> Response {
    let mut r = asset("text/javascript; charset=utf-8", CLIENT_JS);
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::HeaderValue::from_static("*"),
    );
    r
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, DEMO_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn readyz(State(hub): State<Arc<Hub>>) -> Response {
    if hub.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else if !hub.ready() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster broker unreachable\n",
        )
            .into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    let body = hub.encode_metrics();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
