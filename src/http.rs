//! The HTTP listener's routes: `/ws` (the WebSocket door), `/healthz`, `/readyz`, `/metrics`.
//! No request logging layer here: a logged URL could carry a `?token=`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::hub::Hub;

pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/ws", get(crate::ws::upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(hub)
}

async fn readyz(State(hub): State<Arc<Hub>>) -> Response {
    if hub.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    let reg = &hub.local.registry;
    let body = hub.local.metrics.encode(reg.len(), reg.users());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
