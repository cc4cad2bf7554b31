//! `boundary-realtime bench`: the load tool users point at any running node. It opens
//! authenticated WebSocket connections, drives gRPC calls at a rate, and reports connection
//! rate, deliveries per second, end-to-end latency percentiles, losses and reordering, and
//! (given the server's pid) the server's memory and CPU per delivery.
//!
//! [`tally`] is the pure counting; [`conns`] owns the sockets and reader tasks; [`procfs`]
//! reads `/proc`; [`report`] formats the result. Every phase is bounded in time.

pub mod centrifuge;
pub mod chaos;
pub mod conns;
pub mod procfs;
pub mod report;
pub mod resume;
pub mod tally;

/// The service's gRPC client, generated from its proto by this crate's build script.
pub mod proto {
    #![allow(clippy::all)]
    tonic::include_proto!("boundary.realtime.v1");
}

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::proto::realtime_service_client::RealtimeServiceClient;
use crate::proto::{
    BroadcastRequest, GetStatsRequest, Message, PublishRequest, SendToRoleRequest,
    SendToUserRequest,
};
use conns::{Stats, Target};
use report::Report;

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Open connections and hold them: connection rate and memory per connection.
    Idle,
    /// Broadcast calls: every connection gets every message.
    Broadcast,
    /// SendToUser calls, one user per connection, in turn.
    User,
    /// SendToRole calls to the groups' roles in turn.
    Role,
    /// Publish calls to the groups' topics in turn (each connection subscribes to its group's).
    Topic,
    /// Every client connects, goes away, misses the SendToUser calls made to its user (one
    /// user per connection, in turn), and all come back at once resuming from their position.
    Resume,
    /// Clients stay subscribed to their groups' topics through failures (reconnecting with
    /// `since`) while a publisher sends --messages at --rate through the nodes of --grpc-url
    /// (comma-separated) in turn; checks nothing was silently lost or repeated. Run it with
    /// scripts/chaos.sh, which kills nodes and restarts Redis meanwhile.
    Chaos,
}

const DEFAULT_WS_URL: &str = "ws://127.0.0.1:8080/ws";
const DEFAULT_CENTRIFUGE_URL: &str = "ws://127.0.0.1:8080/connection/websocket";

/// The WebSocket protocol of the load's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WireProtocol {
    /// `GET /ws` (docs/protocol.md).
    Native,
    /// The Centrifugo client protocol v2 in JSON (docs/centrifuge.md).
    CentrifugeJson,
    /// The Centrifugo client protocol v2 in Protobuf.
    CentrifugeProtobuf,
}

/// The `bench` command line.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// What to measure.
    #[arg(value_enum)]
    pub mode: Mode,
    /// The nodes' WebSocket endpoints (repeat the flag or separate with commas): connection i
    /// goes to the i-th modulo their number, so a cluster's nodes share the connections.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_WS_URL)]
    pub ws_url: Vec<String>,
    /// The protocol the connections speak: ours, or the Centrifugo protocol in JSON or
    /// Protobuf (then the default --ws-url is the Centrifugo endpoint).
    #[arg(long, value_enum, default_value_t = WireProtocol::Native)]
    pub protocol: WireProtocol,
    /// The node's gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub grpc_url: String,
    /// A gRPC API key (not needed for idle).
    #[arg(long, env = "BENCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The server's HS256 secret, to mint one token per connection.
    #[arg(
        long,
        env = "BENCH_SECRET",
        hide_env_values = true,
        conflicts_with = "token_cmd"
    )]
    pub secret: Option<String>,
    /// A shell command printing a token, run once per connection with BENCH_USER, BENCH_ROLE
    /// and BENCH_TOPIC set (the token must carry that sub, role and topic).
    #[arg(long)]
    pub token_cmd: Option<String>,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// Calls to make (each a message to one target).
    #[arg(long, default_value_t = 200)]
    pub messages: u64,
    /// Calls per second; 0 sends back to back.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Size of each message's JSON payload.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Roles or topics the connections are spread over (role and topic modes).
    #[arg(long, default_value_t = 10)]
    pub groups: usize,
    /// Calls in flight at once. With 1 (the default) calls are sequential, so any reordering
    /// a connection sees is the server's.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Topic mode: publish N messages per PublishBatch call instead of one Publish each
    /// (0: unary Publish). Calls in flight still follow --in-flight; figures count messages.
    #[arg(long, default_value_t = 0)]
    pub publish_batch: usize,
    /// Topic mode: publish every message over one PublishStream instead of unary calls.
    #[arg(long, conflicts_with = "publish_batch")]
    pub publish_stream: bool,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// The server processes' ids (several for a cluster, summed), to report their memory and
    /// CPU time (same machine only).
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Idle mode: how long to hold the connections before measuring memory (`2s`, `500ms`,
    /// or seconds).
    #[arg(long, default_value = "2s", value_parser = seconds)]
    pub hold: f64,
    /// How long to wait for outstanding deliveries after the last call.
    #[arg(long, default_value = "10s", value_parser = seconds)]
    pub drain_timeout: f64,
    /// The whole run's limit.
    #[arg(long, default_value = "10m", value_parser = seconds)]
    pub timeout: f64,
    /// Print the report as JSON on stdout (the human summary goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

/// A duration flag: a human duration (`500ms`, `2s`, `1m 30s`) or a number of seconds.
pub fn seconds(s: &str) -> Result<f64, String> {
    if let Ok(n) = s.trim().parse::<f64>() {
        if n.is_finite() && n >= 0.0 {
            return Ok(n);
        }
        return Err(format!("{s:?} is not a duration (500ms, 2s, 1m)"));
    }
    humantime::parse_duration(s.trim())
        .map(|d| d.as_secs_f64())
        .map_err(|e| format!("{s:?} is not a duration (500ms, 2s, 1m): {e}"))
}

/// Where calls go: `host:port` means plaintext HTTP/2 (`http://host:port`), like every other
/// address the tool and the server take.
pub fn grpc_endpoint(url: &str) -> String {
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

/// The time message `k` is due in a paced run (unix ns): latency is measured from it, not
/// from when the call was made, so a sender that falls behind shows as latency instead of
/// hiding it (coordinated omission, as wrk2 corrects it). Back to back: the actual time.
pub fn send_time_ns(started_ns: u64, k: u64, interval: Option<Duration>, now_ns: u64) -> u64 {
    match interval {
        Some(i) => started_ns + (i.as_nanos() as u64).saturating_mul(k),
        None => now_ns,
    }
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the {what} at {url}: {reason}")]
    Unreachable {
        what: &'static str,
        url: String,
        reason: String,
    },
    #[error("the server refused us: {0}")]
    Rejected(String),
    #[error("{0}")]
    Failed(String),
}

/// Unix time in nanoseconds (the payload's clock: sender and receivers share the machine).
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The sub, role and topic of connection `i`.
pub struct Identity {
    pub user: String,
    pub role: String,
    pub topic: String,
}

pub fn identity(i: usize, groups: usize) -> Identity {
    let g = conns::group(i, groups);
    Identity {
        user: format!("bench-{i}"),
        role: format!("bench-r{g}"),
        topic: format!("bench:t{g}"),
    }
}

/// Runs one measurement to its end (bounded by `--timeout`).
pub async fn run(opts: &Options) -> Result<Report, BenchError> {
    let limit = Duration::from_secs_f64(opts.timeout.max(1.0));
    tokio::time::timeout(limit, run_inner(opts))
        .await
        .map_err(|_| BenchError::Failed(format!("the run did not finish within {limit:?}")))?
}

async fn run_inner(opts: &Options) -> Result<Report, BenchError> {
    check(opts)?;
    let groups = opts.groups.clamp(1, opts.conns.max(1));
    let mut targets = Vec::with_capacity(opts.ws_url.len());
    for url in &opts.ws_url {
        let url = match opts.protocol {
            WireProtocol::Native => url.clone(),
            _ if url == DEFAULT_WS_URL => DEFAULT_CENTRIFUGE_URL.to_owned(),
            _ => url.clone(),
        };
        targets.push(Target::resolve(&url, opts.protocol).await?);
    }
    if targets.is_empty() {
        return Err(BenchError::Usage("give at least one --ws-url".into()));
    }
    let api = match opts.mode {
        Mode::Idle | Mode::Chaos => None,
        _ => Some(Api::connect(opts).await?),
    };
    let files = procfs::raise_open_files();
    if opts.conns as u64 + 64 > files {
        return Err(BenchError::Usage(format!(
            "{} connections need about {} open files; this process may open {files} (raise its hard limit)",
            opts.conns,
            opts.conns + 64
        )));
    }
    let tokens = tokens(opts, groups).await?;
    let mut report = Report::new(opts, groups);
    let pid = (!opts.server_pid.is_empty()).then_some(opts.server_pid.as_slice());
    if let Some(pid) = pid {
        report.server.rss_kib_before = Some(procfs::rss_kib_sum(pid).map_err(BenchError::Usage)?);
    }

    if opts.mode == Mode::Chaos {
        return chaos::run(opts, &targets, tokens, report).await;
    }
    if opts.mode == Mode::Resume {
        let api = api.expect("connected above for every mode but idle");
        return resume::run(opts, &targets, &api, tokens, pid, report).await;
    }

    let stats = Stats::new();
    let sent = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress = (!opts.quiet).then(|| spawn_progress(opts, &stats, &sent));
    let client_cpu0 = procfs::own_cpu_time();

    // Connect.
    let server_cpu0 = pid
        .map(procfs::cpu_time_sum)
        .transpose()
        .map_err(BenchError::Usage)?;
    let started = Instant::now();
    let mut readers = JoinSet::new();
    let outcome = open_all(
        opts,
        &targets,
        groups,
        tokens,
        &stats,
        &stop_rx,
        &mut readers,
    )
    .await;
    let connect_time = started.elapsed();
    if let Err(e) = outcome {
        let _ = stop_tx.send(true);
        readers.shutdown().await;
        return Err(e);
    }
    report.connect(opts.conns as u64, connect_time);
    if let (Some(pid), Some(cpu0)) = (pid, server_cpu0) {
        let cpu = procfs::cpu_time_sum(pid).map_err(BenchError::Usage)? - cpu0;
        report.server.connect_cpu_us_per_conn =
            Some(cpu.as_secs_f64() * 1e6 / opts.conns.max(1) as f64);
    }

    if opts.mode == Mode::Idle {
        tokio::time::sleep(Duration::from_secs_f64(opts.hold.max(0.0))).await;
        if let Some(pid) = pid {
            report.server.rss_kib_connected =
                Some(procfs::rss_kib_sum(pid).map_err(BenchError::Usage)?);
        }
    } else {
        if let Some(pid) = pid {
            report.server.rss_kib_connected =
                Some(procfs::rss_kib_sum(pid).map_err(BenchError::Usage)?);
        }
        stats.reset();
        let api = api.expect("connected above for every mode but idle");
        let server_cpu0 = pid
            .map(procfs::cpu_time_sum)
            .transpose()
            .map_err(BenchError::Usage)?;
        let many = opts.publish_batch > 0 || opts.publish_stream;
        let load = if many {
            drive_many(opts, groups, &api, &sent).await
        } else {
            drive(opts, groups, &api, &sent).await
        };
        let expected = load.expected;
        let deadline = Instant::now() + Duration::from_secs_f64(opts.drain_timeout.max(0.0));
        while stats.counts().unique() < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let (Some(pid), Some(cpu0)) = (pid, server_cpu0) {
            report.server.cpu_seconds =
                Some((procfs::cpu_time_sum(pid).map_err(BenchError::Usage)? - cpu0).as_secs_f64());
            report.server.rss_kib_after =
                Some(procfs::rss_kib_sum(pid).map_err(BenchError::Usage)?);
        }
        report.load(load, stats.counts(), &stats.histogram());
    }
    report.closed_by_server = stats.closes();
    report.client_cpu_seconds = (procfs::own_cpu_time() - client_cpu0).as_secs_f64();
    report.finish();

    let _ = stop_tx.send(true);
    while readers.join_next().await.is_some() {}
    if let Some(p) = progress {
        p.abort();
    }
    Ok(report)
}

fn check(opts: &Options) -> Result<(), BenchError> {
    let usage = |m: &str| Err(BenchError::Usage(m.to_owned()));
    if opts.conns == 0 {
        return usage("--conns must be at least 1");
    }
    if opts.secret.is_none() && opts.token_cmd.is_none() {
        return usage("give --secret (the server's HS256 secret) or --token-cmd to get tokens");
    }
    if opts.mode != Mode::Idle && opts.api_key.is_none() {
        return usage("give --api-key: the load is sent over the gRPC API");
    }
    if !(opts.rate >= 0.0 && opts.rate.is_finite()) {
        return usage("--rate must be 0 (back to back) or a positive number of calls per second");
    }
    if (opts.publish_batch > 0 || opts.publish_stream) && opts.mode != Mode::Topic {
        return usage("--publish-batch and --publish-stream go with the topic mode");
    }
    if (opts.publish_batch > 0 || opts.publish_stream) && opts.rate > 0.0 {
        return usage("--publish-batch and --publish-stream send back to back: leave --rate at 0");
    }
    if opts.publish_batch > 1000 {
        return usage("--publish-batch: a batch has at most 1000 items");
    }
    if opts.in_flight == 0 || opts.connect_concurrency == 0 {
        return usage("--in-flight and --connect-concurrency must be at least 1");
    }
    if matches!(opts.mode, Mode::Resume | Mode::Chaos) && opts.protocol != WireProtocol::Native {
        return usage(
            "the resume and chaos modes speak the native protocol (leave --protocol native)",
        );
    }
    Ok(())
}

/// One token per connection, made before connecting so the connection rate measures the
/// server, not the minting.
async fn tokens(opts: &Options, groups: usize) -> Result<Vec<String>, BenchError> {
    let exp = unix_ns() / 1_000_000_000 + 24 * 3600;
    let mut out = Vec::with_capacity(opts.conns);
    for i in 0..opts.conns {
        let id = identity(i, groups);
        let token = if let Some(secret) = &opts.secret {
            let claims = serde_json::json!({
                "sub": id.user, "exp": exp, "roles": [id.role], "topics": [id.topic],
            });
            jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            )
            .map_err(|e| BenchError::Usage(format!("cannot sign a token with --secret: {e}")))?
        } else {
            let cmd = opts.token_cmd.as_deref().unwrap_or_default();
            token_from_command(cmd, &id).await?
        };
        out.push(token);
    }
    Ok(out)
}

async fn token_from_command(cmd: &str, id: &Identity) -> Result<String, BenchError> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("BENCH_USER", &id.user)
        .env("BENCH_ROLE", &id.role)
        .env("BENCH_TOPIC", &id.topic)
        .output()
        .await
        .map_err(|e| BenchError::Usage(format!("--token-cmd could not run: {e}")))?;
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || token.is_empty() {
        return Err(BenchError::Usage(format!(
            "--token-cmd printed no token for {} ({}): {}",
            id.user,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(token)
}

#[allow(clippy::too_many_arguments)]
async fn open_all(
    opts: &Options,
    targets: &[Target],
    groups: usize,
    tokens: Vec<String>,
    stats: &Arc<Stats>,
    stop: &watch::Receiver<bool>,
    readers: &mut JoinSet<()>,
) -> Result<(), BenchError> {
    let gate = Arc::new(Semaphore::new(opts.connect_concurrency));
    let mut opening = JoinSet::new();
    let topic_mode = opts.mode == Mode::Topic;
    for (i, token) in tokens.into_iter().enumerate() {
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = Arc::clone(&gate)
            .acquire_owned()
            .await
            .expect("open semaphore");
        let target = targets[i % targets.len()].clone();
        let topic = topic_mode.then(|| identity(i, groups).topic);
        let source = target.source(i / targets.len());
        let counted = Arc::clone(stats);
        opening.spawn(async move {
            let ws = conns::open(&target, source, &token, topic.as_deref()).await;
            drop(permit);
            let ws = ws?;
            counted.opened.fetch_add(1, Ordering::Relaxed);
            Ok::<_, BenchError>((i, ws))
        });
        while let Some(done) = opening.try_join_next() {
            start_reader(done, stats, stop, readers)?;
        }
    }
    while let Some(done) = opening.join_next().await {
        start_reader(done, stats, stop, readers)?;
    }
    Ok(())
}

/// Hands an opened connection to its reader task, or passes on why it could not open.
fn start_reader(
    opened: Result<Result<(usize, conns::Ws), BenchError>, tokio::task::JoinError>,
    stats: &Arc<Stats>,
    stop: &watch::Receiver<bool>,
    readers: &mut JoinSet<()>,
) -> Result<(), BenchError> {
    match opened {
        Ok(Ok((i, ws))) => {
            readers.spawn(conns::read(ws, i, Arc::clone(stats), stop.clone()));
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(e) => Err(BenchError::Failed(format!("a connect task failed: {e}"))),
    }
}

/// What the sender did.
#[derive(Debug, Default)]
pub struct Load {
    pub calls: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub expected: u64,
    pub started_ns: u64,
    pub send_time: Duration,
    /// How far behind its schedule the sender fell at worst (paced runs).
    pub max_lag: Duration,
    /// How long each call took to be answered, in microseconds.
    pub call_us: Option<hdrhistogram::Histogram<u64>>,
}

/// Makes `--messages` calls, paced at `--rate` (or back to back), `--in-flight` at a time.
async fn drive(opts: &Options, groups: usize, api: &Api, sent: &Arc<AtomicU64>) -> Load {
    let mut load = Load {
        started_ns: unix_ns(),
        call_us: Some(conns::latency_histogram()),
        ..Load::default()
    };
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(opts.in_flight));
    let mut calls = JoinSet::new();
    let interval = (opts.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / opts.rate));
    for k in 0..opts.messages {
        if let Some(interval) = interval {
            let due = started + interval.mul_f64(k as f64);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep_until(due.into()).await;
            } else {
                load.max_lag = load.max_lag.max(now - due);
            }
        }
        // Never closed: acquiring cannot fail.
        let permit = Arc::clone(&gate)
            .acquire_owned()
            .await
            .expect("open semaphore");
        while let Some(done) = calls.try_join_next() {
            note_call(&mut load, done);
        }
        let (call, recipients) = plan(opts.mode, k, opts.conns, groups);
        load.expected += recipients;
        let sent_ns = send_time_ns(load.started_ns, k, interval, unix_ns());
        let payload = tally::payload(k, sent_ns, opts.payload_bytes);
        let api = api.clone();
        let sent = Arc::clone(sent);
        calls.spawn(async move {
            let t0 = Instant::now();
            let r = api.send(call, payload).await;
            let took = t0.elapsed();
            drop(permit);
            sent.fetch_add(1, Ordering::Relaxed);
            (r, took)
        });
        load.calls += 1;
    }
    while let Some(done) = calls.join_next().await {
        note_call(&mut load, done);
    }
    load.send_time = started.elapsed();
    load
}

/// Topic mode over PublishBatch (`--publish-batch N`) or one PublishStream
/// (`--publish-stream`), back to back: the same messages as unary Publish, fewer calls.
async fn drive_many(opts: &Options, groups: usize, api: &Api, sent: &Arc<AtomicU64>) -> Load {
    let mut load = Load {
        started_ns: unix_ns(),
        call_us: Some(conns::latency_histogram()),
        ..Load::default()
    };
    let started = Instant::now();
    let (conns, payload_bytes) = (opts.conns, opts.payload_bytes);
    let request = move |k: u64, started_ns: u64| {
        let (call, recipients) = plan(Mode::Topic, k, conns, groups);
        let topic = match call {
            Call::Topic(t) => t,
            _ => String::new(),
        };
        let payload = tally::payload(
            k,
            send_time_ns(started_ns, k, None, unix_ns()),
            payload_bytes,
        );
        let message = Some(Message {
            r#type: "bench".into(),
            payload_json: payload,
            id: String::new(),
        });
        (PublishRequest { topic, message }, recipients)
    };
    let failed =
        |r: &crate::proto::PublishResult| (r.code != 0).then(|| format!("{}: {}", r.code, r.error));
    if opts.publish_stream {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let mut client = api.client.clone();
        let started_ns = load.started_ns;
        let messages = opts.messages;
        let mut expected = 0;
        for k in 0..messages {
            expected += plan(Mode::Topic, k, opts.conns, groups).1;
        }
        load.expected = expected;
        let feeder = {
            tokio::spawn(async move {
                for k in 0..messages {
                    if tx.send(request(k, started_ns).0).await.is_err() {
                        return;
                    }
                }
            })
        };
        match client
            .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(results) => {
                let mut results = results.into_inner();
                loop {
                    match results.message().await {
                        Ok(Some(r)) => {
                            sent.fetch_add(1, Ordering::Relaxed);
                            load.calls += 1;
                            if let Some(e) = failed(&r) {
                                load.errors += 1;
                                load.first_error.get_or_insert(e);
                            }
                        }
                        Ok(None) => break,
                        Err(s) => {
                            load.errors += 1;
                            load.first_error.get_or_insert(format!(
                                "{:?}: {}",
                                s.code(),
                                s.message()
                            ));
                            break;
                        }
                    }
                }
            }
            Err(s) => {
                load.errors += 1;
                load.first_error = Some(format!("{:?}: {}", s.code(), s.message()));
            }
        }
        feeder.abort();
    } else {
        let gate = Arc::new(Semaphore::new(opts.in_flight));
        let mut calls = JoinSet::new();
        let mut k = 0;
        while k < opts.messages {
            let n = (opts.messages - k).min(opts.publish_batch as u64);
            let permit = Arc::clone(&gate)
                .acquire_owned()
                .await
                .expect("open semaphore"); // never closed
            while let Some(done) = calls.try_join_next() {
                note_batch(&mut load, done);
            }
            let mut items = Vec::with_capacity(n as usize);
            for i in k..k + n {
                let (req, recipients) = request(i, load.started_ns);
                load.expected += recipients;
                items.push(req);
            }
            k += n;
            load.calls += n;
            let mut client = api.client.clone();
            let sent = Arc::clone(sent);
            calls.spawn(async move {
                let t0 = Instant::now();
                let r = client
                    .publish_batch(crate::proto::PublishBatchRequest { items })
                    .await;
                let took = t0.elapsed();
                drop(permit);
                sent.fetch_add(n, Ordering::Relaxed);
                let r = r
                    .map(|r| {
                        r.into_inner()
                            .results
                            .iter()
                            .filter_map(failed)
                            .collect::<Vec<_>>()
                    })
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()));
                (r, took)
            });
        }
        while let Some(done) = calls.join_next().await {
            note_batch(&mut load, done);
        }
    }
    load.send_time = started.elapsed();
    load
}

type BatchDone = Result<(Result<Vec<String>, String>, Duration), tokio::task::JoinError>;

fn note_batch(load: &mut Load, done: BatchDone) {
    match done {
        Ok((Ok(errors), took)) => {
            if let Some(h) = load.call_us.as_mut() {
                h.saturating_record(took.as_micros() as u64);
            }
            load.errors += errors.len() as u64;
            if let Some(e) = errors.into_iter().next() {
                load.first_error.get_or_insert(e);
            }
        }
        Ok((Err(e), _)) => {
            load.errors += 1;
            load.first_error.get_or_insert(e);
        }
        Err(e) => {
            load.errors += 1;
            load.first_error
                .get_or_insert(format!("the call's task failed: {e}"));
        }
    }
}

type CallDone = Result<(Result<(), String>, Duration), tokio::task::JoinError>;

fn note_call(load: &mut Load, done: CallDone) {
    let err = match done {
        Ok((Ok(()), took)) => {
            if let Some(h) = load.call_us.as_mut() {
                h.saturating_record(took.as_micros() as u64);
            }
            return;
        }
        Ok((Err(e), _)) => e,
        Err(e) => format!("the call's task failed: {e}"),
    };
    load.errors += 1;
    load.first_error.get_or_insert(err);
}

/// The call for message `k` and how many connections should get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Broadcast,
    User(String),
    Role(String),
    Topic(String),
}

pub fn plan(mode: Mode, k: u64, conns: usize, groups: usize) -> (Call, u64) {
    match mode {
        Mode::Idle | Mode::Broadcast => (Call::Broadcast, conns as u64),
        Mode::User | Mode::Resume => {
            let i = (k % conns as u64) as usize;
            (Call::User(identity(i, groups).user), 1)
        }
        Mode::Role | Mode::Topic | Mode::Chaos => {
            let g = (k % groups as u64) as usize;
            let id = identity(g, groups);
            let n = conns::group_size(g, conns, groups);
            if mode == Mode::Role {
                (Call::Role(id.role), n)
            } else {
                (Call::Topic(id.topic), n)
            }
        }
    }
}

/// The gRPC side: a client that sends the API key with every call.
#[derive(Clone)]
struct Api {
    client: RealtimeServiceClient<InterceptedService<Channel, ApiKey>>,
}

#[derive(Clone)]
pub(crate) struct ApiKey(pub(crate) MetadataValue<Ascii>);

impl tonic::service::Interceptor for ApiKey {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

impl Api {
    /// Connects and checks the key with GetStats, so a bad URL or key fails before any load.
    async fn connect(opts: &Options) -> Result<Api, BenchError> {
        let url = &grpc_endpoint(&opts.grpc_url);
        let unreachable = |reason: String| BenchError::Unreachable {
            what: "gRPC API",
            url: url.clone(),
            reason,
        };
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| BenchError::Usage(format!("--grpc-url {url:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        let key = opts.api_key.as_deref().unwrap_or_default();
        let key = format!("Bearer {key}")
            .parse()
            .map_err(|_| BenchError::Usage("--api-key is not a valid header value".into()))?;
        let api = Api {
            client: RealtimeServiceClient::with_interceptor(channel, ApiKey(key)),
        };
        let stats = tokio::time::timeout(
            Duration::from_secs(10),
            api.client.clone().get_stats(GetStatsRequest {}),
        )
        .await
        .map_err(|_| unreachable("GetStats did not answer within 10 s".into()))?;
        match stats {
            Ok(_) => Ok(api),
            Err(s) if s.code() == tonic::Code::Unauthenticated => Err(BenchError::Rejected(
                format!("the API key was refused: {}", s.message()),
            )),
            Err(s) => Err(unreachable(format!("GetStats failed: {s}"))),
        }
    }

    async fn send(&self, call: Call, payload: String) -> Result<(), String> {
        let message = Some(Message {
            r#type: "bench".into(),
            payload_json: payload,
            id: String::new(),
        });
        let mut c = self.client.clone();
        let r = match call {
            Call::Broadcast => c.broadcast(BroadcastRequest { message }).await.map(drop),
            Call::User(user_id) => c
                .send_to_user(SendToUserRequest { user_id, message })
                .await
                .map(drop),
            Call::Role(role) => c
                .send_to_role(SendToRoleRequest { role, message })
                .await
                .map(drop),
            Call::Topic(topic) => c.publish(PublishRequest { topic, message }).await.map(drop),
        };
        r.map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A line a second on stderr while the run goes.
fn spawn_progress(
    opts: &Options,
    stats: &Arc<Stats>,
    sent: &Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let stats = Arc::clone(stats);
    let sent = Arc::clone(sent);
    let conns = opts.conns;
    let messages = opts.messages;
    let idle = opts.mode == Mode::Idle;
    let started = Instant::now();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let mut line = format!(
                "bench: {:>5.1}s  connections {}/{conns}",
                started.elapsed().as_secs_f64(),
                conns::opened(&stats)
            );
            if !idle {
                line.push_str(&format!(
                    "  calls {}/{messages}  deliveries {}",
                    sent.load(Ordering::Relaxed),
                    stats.counts().unique()
                ));
            }
            eprintln!("{line}");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_address_each_mode_as_documented() {
        assert_eq!(plan(Mode::Broadcast, 3, 50, 10), (Call::Broadcast, 50));
        assert_eq!(
            plan(Mode::User, 52, 50, 10),
            (Call::User("bench-2".into()), 1)
        );
        assert_eq!(
            plan(Mode::Role, 13, 25, 10),
            (Call::Role("bench-r3".into()), 3)
        );
        assert_eq!(
            plan(Mode::Topic, 7, 25, 10),
            (Call::Topic("bench:t7".into()), 2)
        );
    }

    #[test]
    fn durations_and_addresses_read_as_people_write_them() {
        assert_eq!(seconds("2s"), Ok(2.0));
        assert_eq!(seconds("500ms"), Ok(0.5));
        assert_eq!(seconds("1m 30s"), Ok(90.0));
        assert_eq!(seconds("2.5"), Ok(2.5));
        assert!(seconds("soon").unwrap_err().contains("not a duration"));
        assert!(seconds("-1").is_err());
        assert_eq!(grpc_endpoint("127.0.0.1:15051"), "http://127.0.0.1:15051");
        assert_eq!(grpc_endpoint("https://h:1"), "https://h:1");
    }

    #[test]
    fn paced_messages_are_timed_from_their_schedule() {
        let every = Some(Duration::from_millis(10));
        assert_eq!(send_time_ns(1_000, 0, every, 99_999_999), 1_000);
        assert_eq!(send_time_ns(1_000, 3, every, 99_999_999), 30_001_000);
        assert_eq!(send_time_ns(1_000, 3, None, 42), 42);
    }
}
