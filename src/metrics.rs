//! Prometheus metrics of one node, encoded with prometheus-client. Gauges that mirror the
//! registry (connections, users) are set when scraped, so they are never out of step.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub consumer: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerName {
    pub consumer: String,
}

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub users: Gauge,
    pub messages_sent: Counter,
    pub messages_dropped: Counter,
    pub handshakes: Family<OutcomeLabels, Counter>,
    pub disconnects: Family<CloseLabels, Counter>,
    pub grpc_requests: Family<GrpcLabels, Counter>,
    pub grpc_duration: HistogramFamily,
    /// 1 while this node can serve cluster-wide work (always 1 on a single node).
    pub ready: Gauge,
    /// Cluster mode: pub/sub (re)connections that subscribed everything this node holds.
    pub cluster_subscribed: Counter,
    /// Cluster mode: requests answered without every receiving node's reply.
    pub cluster_incomplete: Counter,
    /// Cluster mode: gaps in a topic's live stream repaired from history (or told as lost).
    pub cluster_gap_repairs: Counter,
    pub cluster_dispatch_dropped: Counter,
    /// Consumers (section 9): records by consumer and outcome (applied, failed, retried).
    pub consumer_records: Family<ConsumerLabels, Counter>,
    /// Consumers: the age in seconds of the oldest record not yet applied (0: none waits).
    pub consumer_lag: Family<ConsumerName, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Consumers: how many records wait.
    pub consumer_waiting: Family<ConsumerName, Gauge>,
}

fn grpc_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00005, 2.0, 16,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("realtime");
        let m = Metrics {
            connections: Gauge::default(),
            users: Gauge::default(),
            messages_sent: Counter::default(),
            messages_dropped: Counter::default(),
            handshakes: Family::default(),
            disconnects: Family::default(),
            grpc_requests: Family::default(),
            grpc_duration: Family::new_with_constructor(grpc_histogram as fn() -> Histogram),
            ready: Gauge::default(),
            cluster_subscribed: Counter::default(),
            cluster_incomplete: Counter::default(),
            cluster_gap_repairs: Counter::default(),
            cluster_dispatch_dropped: Counter::default(),
            consumer_records: Family::default(),
            consumer_lag: Family::default(),
            consumer_waiting: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Live WebSocket connections on this node",
            m.connections.clone(),
        );
        registry.register(
            "users",
            "Distinct users with a live connection on this node",
            m.users.clone(),
        );
        registry.register(
            "messages_sent",
            "Messages queued to connections (one per recipient)",
            m.messages_sent.clone(),
        );
        registry.register(
            "messages_dropped",
            "Messages that did not fit a connection's send queue (the connection is closed with 4008)",
            m.messages_dropped.clone(),
        );
        registry.register(
            "handshakes",
            "WebSocket authentication attempts by outcome",
            m.handshakes.clone(),
        );
        registry.register(
            "disconnects",
            "Connections closed, by close code",
            m.disconnects.clone(),
        );
        registry.register(
            "grpc_requests",
            "gRPC requests by method and status code",
            m.grpc_requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC request handling time by method",
            m.grpc_duration.clone(),
        );
        registry.register(
            "ready",
            "1 while the node serves cluster-wide work (as /readyz)",
            m.ready.clone(),
        );
        registry.register(
            "cluster_subscribed",
            "Cluster mode: Redis pub/sub (re)connections that subscribed every channel held",
            m.cluster_subscribed.clone(),
        );
        registry.register(
            "cluster_requests_incomplete",
            "Cluster mode: requests answered without every receiving node's reply",
            m.cluster_incomplete.clone(),
        );
        registry.register(
            "cluster_gap_repairs",
            "Cluster mode: gaps in a topic's live stream repaired from history or told as lost",
            m.cluster_gap_repairs.clone(),
        );
        registry.register(
            "cluster_dispatch_dropped",
            "Cluster mode: deliveries and publications dropped because their dispatch worker's queue was full",
            m.cluster_dispatch_dropped.clone(),
        );
        registry.register(
            "consumer_records",
            "Consumers: records by consumer and outcome (applied, failed: set aside; retried: a transient failure)",
            m.consumer_records.clone(),
        );
        registry.register(
            "consumer_lag_seconds",
            "Consumers: age of the oldest record not yet applied (0 when none waits)",
            m.consumer_lag.clone(),
        );
        registry.register(
            "consumer_waiting",
            "Consumers: records waiting to be applied",
            m.consumer_waiting.clone(),
        );
        Metrics { registry, ..m }
    }

    /// A consumer's record ended with `outcome`.
    pub fn consumer_record(&self, consumer: &str, outcome: &'static str, n: u64) {
        self.consumer_records
            .get_or_create(&ConsumerLabels {
                consumer: consumer.to_owned(),
                outcome,
            })
            .inc_by(n);
    }

    /// A consumer's backlog: how many records wait, the oldest's age.
    pub fn consumer_backlog(&self, consumer: &str, waiting: i64, lag_seconds: f64) {
        let name = ConsumerName {
            consumer: consumer.to_owned(),
        };
        self.consumer_waiting.get_or_create(&name).set(waiting);
        self.consumer_lag.get_or_create(&name).set(lag_seconds);
    }

    pub fn handshake(&self, outcome: &'static str) {
        self.handshakes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn grpc(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        self.grpc_requests
            .get_or_create(&GrpcLabels {
                method,
                code: code_name(code),
            })
            .inc();
        self.grpc_duration
            .get_or_create(&MethodLabels { method })
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition format, with gauges set to the given values first.
    pub fn encode(&self, connections: usize, users: usize, ready: bool) -> String {
        self.connections.set(connections as i64);
        self.users.set(users as i64);
        self.ready.set(i64::from(ready));
        let mut out = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding metrics into a String cannot fail");
        out
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
