//! Consumers (PROTOCOL.md section 9, docs/consumers.md): background jobs write commands into a
//! PostgreSQL outbox table or a Redis stream, in their own transactions; a consumer takes them
//! from there in order and applies each as the very RPC its `method` names, through the HTTP
//! JSON API's dispatch (`grpc::json::run`): the same decoding, validation and errors as a
//! backend's call. One node at a time holds each partition or stream, under a lease.
//!
//! - `record.rs`: a record's method, and what an answer means (done, set aside, again);
//! - `postgres.rs`: the outbox table; `redis_stream.rs`: the stream and its consumer group;
//! - `status.rs`: what each consumer reports (metrics, the admin console).

mod postgres;
pub mod record;
mod redis_stream;
pub mod status;

use std::sync::Arc;

use crate::config::{ConsumerConfig, ConsumerKind};
use crate::grpc::GrpcDoor;
use crate::hub::Hub;
use record::Outcome;

/// Applies records of one consumer: a method and its params become one RPC.
pub struct Applier {
    pub name: String,
    door: GrpcDoor,
    hub: Arc<Hub>,
    pub status: Arc<status::Status>,
}

impl Applier {
    /// Runs one record's command; how it ended decides what becomes of the record.
    pub async fn apply(&self, method: &str, params: &[u8]) -> Outcome {
        let rpc = match record::rpc_of(method) {
            Ok(rpc) => rpc,
            Err(e) => return Outcome::Failed(e),
        };
        if self.hub.is_shutting_down() {
            return Outcome::Retry("the service is shutting down".into());
        }
        match crate::grpc::json::run(&self.door, rpc, params).await {
            Ok(_) => Outcome::Applied,
            Err(s) => record::outcome(s.code(), s.message()),
        }
    }

    /// Counts `n` records that ended with `outcome` (applied, failed, retried).
    pub fn count(&self, outcome: &'static str, n: u64) {
        if n > 0 {
            self.hub.metrics().consumer_record(&self.name, outcome, n);
            self.status.count(outcome, n);
        }
    }

    /// The backlog: how many records wait, the oldest's age.
    pub fn backlog(&self, waiting: i64, lag_seconds: f64) {
        self.hub
            .metrics()
            .consumer_backlog(&self.name, waiting, lag_seconds);
        self.status.backlog(waiting, lag_seconds);
    }

    pub fn stopping(&self) -> bool {
        self.hub.is_shutting_down()
    }

    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.hub.shutdown_signal()
    }

    pub fn node_id(&self) -> &str {
        self.hub.node_id()
    }
}

/// Starts every configured consumer; each runs until the node shuts down. The returned
/// statuses are what the admin console and `/metrics` read.
pub fn start(hub: &Arc<Hub>) -> Vec<(Arc<status::Status>, tokio::task::JoinHandle<()>)> {
    hub.config
        .consumers
        .iter()
        .map(|cfg| {
            let status = Arc::new(status::Status::new(cfg));
            let applier = Arc::new(Applier {
                name: cfg.name.clone(),
                door: GrpcDoor::new(Arc::clone(hub)),
                hub: Arc::clone(hub),
                status: Arc::clone(&status),
            });
            let task = spawn(applier, cfg.clone());
            (status, task)
        })
        .collect()
}

fn spawn(applier: Arc<Applier>, cfg: ConsumerConfig) -> tokio::task::JoinHandle<()> {
    match cfg.kind {
        ConsumerKind::Postgres => tokio::spawn(postgres::run(applier, cfg)),
        ConsumerKind::RedisStream => tokio::spawn(redis_stream::run(applier, cfg)),
    }
}

/// Runs `session` again and again until it ends with `Ok` (the node is shutting down): each
/// `Err` (the store unreachable or failing, named by the message, never with a password) is
/// logged and shown, and the next attempt waits with backoff (reset after 30 s of running).
async fn reconnecting<F, Fut>(applier: &Applier, store: &str, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut attempt = 0u32;
    while !applier.stopping() {
        let started = std::time::Instant::now();
        match session().await {
            Ok(()) => return,
            Err(msg) => {
                tracing::warn!(consumer = %applier.name, error = %msg, "consumer: {store} unreachable or failing; retrying");
                applier.status.error(Some(msg));
                applier.status.held(Vec::new());
            }
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            attempt = 0;
        }
        attempt += 1;
        pause(applier, record::backoff_ms(attempt)).await;
    }
}

/// Waits `ms`, or less when the node starts shutting down.
async fn pause(applier: &Applier, ms: u64) {
    let mut down = applier.shutdown_signal();
    tokio::select! {
        _ = tokio::time::sleep(std::time::Duration::from_millis(ms)) => {}
        _ = down.wait_for(|d| *d) => {}
    }
}
