//! What one consumer reports about itself: its counts, its backlog, what it holds and its last
//! error. Read by the admin console; `/metrics` has the same counts.

use parking_lot::Mutex;
use serde::Serialize;

use crate::config::{ConsumerConfig, ConsumerKind};

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub name: String,
    pub kind: &'static str,
    /// The table or the stream.
    pub source: String,
    pub applied: u64,
    pub failed: u64,
    pub retried: u64,
    pub waiting: i64,
    pub lag_seconds: f64,
    /// The partitions (postgres) or the stream (redis_stream: 0) this node holds now.
    pub held: Vec<i32>,
    /// The last connection or apply error, if the last attempt failed.
    pub error: Option<String>,
}

pub struct Status(Mutex<Snapshot>);

impl Status {
    pub fn new(cfg: &ConsumerConfig) -> Status {
        let (kind, source) = match cfg.kind {
            ConsumerKind::Postgres => ("postgres", cfg.table.clone()),
            ConsumerKind::RedisStream => ("redis_stream", cfg.stream.clone()),
        };
        Status(Mutex::new(Snapshot {
            name: cfg.name.clone(),
            kind,
            source,
            ..Snapshot::default()
        }))
    }

    pub fn snapshot(&self) -> Snapshot {
        self.0.lock().clone()
    }

    pub fn count(&self, outcome: &str, n: u64) {
        let mut s = self.0.lock();
        match outcome {
            "applied" => s.applied += n,
            "failed" => s.failed += n,
            _ => s.retried += n,
        }
    }

    pub fn backlog(&self, waiting: i64, lag_seconds: f64) {
        let mut s = self.0.lock();
        s.waiting = waiting;
        s.lag_seconds = lag_seconds;
    }

    pub fn held(&self, held: Vec<i32>) {
        self.0.lock().held = held;
    }

    pub fn error(&self, error: Option<String>) {
        self.0.lock().error = error;
    }
}
