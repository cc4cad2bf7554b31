//! Consumers (PROTOCOL.md section 9) against the machine's PostgreSQL (127.0.0.1:5432, trust;
//! each test creates and drops a database of its own) and a private redis-server: committed
//! rows delivered in order and rolled-back ones never, bad records set aside without blocking,
//! two nodes on one table each applying a row once and a partition moving when its holder is
//! stopped (SIGSTOP), the connection cut under the consumer, a killed node restarted without
//! loss or double delivery, and a Redis stream whose dead consumer's pending entries are
//! applied by the next holder.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::common::*;
use boundary_realtime::config::{ConsumerConfig, ConsumerKind};

const ADMIN_DSN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

/// A database of this test's own, dropped (forcibly) at the end.
struct Db {
    name: String,
}

impl Db {
    async fn create() -> Db {
        let name = format!(
            "rt_test_{}_{}",
            std::process::id(),
            boundary_realtime::random::hex(6)
        );
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("PostgreSQL on 127.0.0.1:5432 (trust) creates a database");
        Db { name }
    }

    fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port=5432 user=postgres dbname={}",
            self.name
        )
    }

    async fn client(&self) -> Client {
        connect(&self.dsn()).await
    }

    async fn drop_it(self) {
        let _ = admin()
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

async fn connect(dsn: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

async fn admin() -> Client {
    connect(ADMIN_DSN).await
}

fn outbox(db: &Db, name: &str) -> ConsumerConfig {
    ConsumerConfig {
        name: name.into(),
        kind: ConsumerKind::Postgres,
        dsn: db.dsn().into(),
        poll_interval_ms: 200,
        claim_idle_ms: 3000,
        ..ConsumerConfig::default()
    }
}

/// Waits until the consumer made the table.
async fn table_ready(db: &Db, table: &str) {
    let c = db.client().await;
    let q = format!("SELECT to_regclass('{table}_leases') IS NOT NULL");
    eventually("the outbox tables", || {
        let (c, q) = (&c, &q);
        async move {
            c.query_one(q.as_str(), &[])
                .await
                .is_ok_and(|r| r.get::<_, bool>(0))
        }
    })
    .await;
}

/// Waits until the outbox holds no row (every one applied and deleted).
async fn outbox_empty(pg: &Client) {
    eventually("the outbox emptied", || async move {
        pg.query_one("SELECT count(*) FROM realtime_outbox", &[])
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 0)
    })
    .await;
}

fn publish_row(topic: &str, n: u64) -> String {
    serde_json::json!({"topic": topic, "message": {"type": "n", "payload": {"n": n}, "id": format!("evt-{n}")}})
        .to_string()
}

/// The `n` of every publication `ws` got within a short quiet time, until `want` of them.
async fn received(ws: &mut Ws, want: usize) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < want {
        let v = tokio::time::timeout(WAIT, ws.next_json())
            .await
            .unwrap_or_else(|_| panic!("only {} of {want} arrived: {got:?}", got.len()));
        if let Some(n) = v["payload"]["n"].as_u64() {
            got.push(n);
        }
    }
    got
}

/// Inserts `publish` rows `from..=to` for topic "orders", one transaction each, in partition
/// `n % partitions`.
async fn insert_publishes(pg: &Client, from: u64, to: u64, partitions: u64) {
    for n in from..=to {
        pg.execute(
            "INSERT INTO realtime_outbox (method, payload, partition) VALUES ('publish', $1::text::json, $2)",
            &[&publish_row("orders", n), &((n % partitions) as i32)],
        )
        .await
        .unwrap();
    }
}

/// Adds `publish` entries `from..=to` for topic "orders" to the stream "realtime".
async fn xadd_publishes(r: &mut redis::aio::MultiplexedConnection, from: u64, to: u64) {
    for n in from..=to {
        let _: String = redis::cmd("XADD")
            .arg("realtime")
            .arg("*")
            .arg("method")
            .arg("publish")
            .arg("payload")
            .arg(publish_row("orders", n))
            .query_async(r)
            .await
            .unwrap();
    }
}

async fn subscribed(s: &TestServer, user: &str, topic: &str) -> Ws {
    let mut ws = s.connect(user, &[]).await;
    ws.send_text(&format!(
        r#"{{"op":"subscribe","topic":"{topic}","ref":"s"}}"#
    ))
    .await;
    let v = ws.next_json().await;
    assert_eq!(v["op"], "subscribed", "{v}");
    ws
}

fn node_config() -> boundary_realtime::config::Config {
    let mut c = config();
    c.topics.public = vec!["**".into()];
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_rows_arrive_in_order_rolled_back_never_and_bad_ones_are_set_aside() {
    let db = Db::create().await;
    let mut c = node_config();
    c.consumers = vec![outbox(&db, "orders")];
    let s = start_with(c).await;
    table_ready(&db, "realtime_outbox").await;
    let mut ws = subscribed(&s, "ada", "orders").await;
    let mut pg = db.client().await;
    // A job's transaction that rolls back sends nothing.
    let tx = pg.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO realtime_outbox (method, payload) VALUES ('publish', $1::text::json)",
        &[&publish_row("orders", 999)],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    // Bad records between good ones: set aside, never blocking.
    let bad = [
        ("publish", r#"{"topic":"orders","message":{"type":""}}"#),
        ("no_such_method", r#"{}"#),
        ("publish", r#"{"topik":"orders"}"#),
        (
            "send_to_connection",
            r#"{"connectionId":"gone","message":{"type":"t"}}"#,
        ),
    ];
    let tx = pg.transaction().await.unwrap();
    for n in 1..=500u64 {
        tx.execute(
            "INSERT INTO realtime_outbox (method, payload) VALUES ('publish', $1::text::json)",
            &[&publish_row("orders", n)],
        )
        .await
        .unwrap();
        if n % 100 == 0 {
            let (m, p) = bad[(n / 100) as usize % bad.len()];
            tx.execute(
                "INSERT INTO realtime_outbox (method, payload) VALUES ($1, $2::text::json)",
                &[&m, &p],
            )
            .await
            .unwrap();
        }
    }
    tx.commit().await.unwrap();
    let got = received(&mut ws, 500).await;
    assert_eq!(got, (1..=500).collect::<Vec<_>>(), "in id order, each once");
    outbox_empty(&pg).await;
    let failed = pg
        .query(
            "SELECT method, error FROM realtime_outbox_failed ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let failed: Vec<(String, String)> = failed.iter().map(|r| (r.get(0), r.get(1))).collect();
    // The NOT_FOUND one (a connection already gone) counts as applied.
    assert_eq!(failed.len(), 4, "{failed:?}");
    assert!(failed
        .iter()
        .any(|(m, e)| m == "no_such_method" && e.contains("unknown method")));
    assert!(
        failed.iter().any(|(_, e)| e.contains("InvalidArgument")),
        "{failed:?}"
    );
    // The metrics count them.
    let metrics = s.hub().encode_metrics();
    assert!(
        metrics.contains(
            r#"realtime_consumer_records_total{consumer="orders",outcome="applied"} 501"#
        ),
        "{metrics}"
    );
    assert!(metrics
        .contains(r#"realtime_consumer_records_total{consumer="orders",outcome="failed"} 4"#));
    // Nothing else arrived (the rolled-back 999 included).
    let mut client = s.client().await;
    let marker = client
        .publish(authed(boundary_realtime::proto::PublishRequest {
            topic: "orders".into(),
            message: msg("n", r#"{"n":0}"#),
        }))
        .await;
    assert!(marker.is_ok());
    assert_eq!(received(&mut ws, 1).await, vec![0]);
    drop(s);
    db.drop_it().await;
}

/// `serve` as a process of its own with `[[consumers]]` in a config file, on `redis` when
/// given; answers its HTTP and gRPC addresses.
fn spawn_with_consumer(name: &str, toml: &str, redis: Option<&RedisProc>) -> (Reaped, TestServer) {
    let path = std::env::temp_dir().join(format!(
        "rt-consumer-{name}-{}-{}.toml",
        std::process::id(),
        boundary_realtime::random::hex(4)
    ));
    std::fs::write(&path, toml).unwrap();
    let mut cmd = serve_command("json");
    cmd.arg("--config")
        .arg(&path)
        .env("REALTIME_NODE__ID", name);
    cmd.env("REALTIME_TOPICS__PUBLIC", "**");
    if let Some(r) = redis {
        cmd.env("REALTIME_BROKER__KIND", "redis")
            .env("REALTIME_BROKER__REDIS_URL", r.url())
            .env("REALTIME_BROKER__NODE_TTL_MS", "1500");
    }
    let (child, http, grpc, rx) = spawn_command(cmd);
    // Keep reading so the pipe never fills.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    let s = TestServer {
        server: None,
        http: http.parse().unwrap(),
        grpc: grpc.parse().unwrap(),
    };
    (child, s)
}

fn outbox_toml(db: &Db, partitions: u32) -> String {
    format!(
        "[[consumers]]\nname = \"orders\"\nkind = \"postgres\"\ndsn = \"{}\"\npartitions = {partitions}\npoll_interval_ms = 200\nclaim_idle_ms = 3000\n",
        db.dsn()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_apply_each_row_once_and_a_stopped_holder_loses_its_partitions() {
    let db = Db::create().await;
    let (child, a) = spawn_with_consumer("a", &outbox_toml(&db, 4), None);
    table_ready(&db, "realtime_outbox").await;
    // A holds every partition first; then B starts beside it.
    let pg = db.client().await;
    eventually("a to hold the partitions", || {
        let pg = &pg;
        async move {
            pg.query_one(
                "SELECT count(*) FROM realtime_outbox_leases WHERE holder = 'a'",
                &[],
            )
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 4)
        }
    })
    .await;
    let mut c = node_config();
    c.node.id = "b".into();
    let mut cfg = outbox(&db, "orders");
    cfg.partitions = 4;
    c.consumers = vec![cfg];
    let b = start_with(c).await;
    // In memory mode each node delivers to its own connections: one subscriber on each, and
    // every row must arrive at exactly one of them.
    let mut on_a = subscribed(&a, "ada", "orders").await;
    let mut on_b = subscribed(&b, "bob", "orders").await;
    let insert = |from, to| insert_publishes(&pg, from, to, 4);
    insert(1, 200).await;
    let got_a = received(&mut on_a, 200).await;
    assert_eq!(got_a.len(), 200);
    // Per partition, in id order.
    for p in 0..4 {
        let part: Vec<u64> = got_a.iter().copied().filter(|n| n % 4 == p).collect();
        let mut sorted = part.clone();
        sorted.sort();
        assert_eq!(part, sorted, "partition {p} in order");
    }
    // A has deleted what it applied (a batch in flight when a node stops may be applied
    // again by the next holder: at least once, documented).
    outbox_empty(&pg).await;
    // A stops (SIGSTOP): within claim_idle_ms B takes the partitions and applies what comes.
    let pid = child.0.id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    insert(201, 300).await;
    let got_b = tokio::time::timeout(Duration::from_secs(15), received(&mut on_b, 100))
        .await
        .expect("b took over the stopped node's partitions");
    let mut sorted = got_b.clone();
    sorted.sort();
    assert_eq!(sorted, (201..=300).collect::<Vec<_>>());
    let held: i64 = pg
        .query_one(
            "SELECT count(*) FROM realtime_outbox_leases WHERE holder = 'b'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 4);
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // A resumed finds its leases gone and applies nothing more.
    insert(301, 320).await;
    let got_b = received(&mut on_b, 20).await;
    let mut sorted = got_b.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (301..=320).collect::<Vec<_>>(),
        "b got only what came after"
    );
    drop(child);
    drop(b);
    db.drop_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_reconnects_when_its_database_connection_is_cut() {
    let db = Db::create().await;
    let mut c = node_config();
    c.consumers = vec![outbox(&db, "orders")];
    let s = start_with(c).await;
    table_ready(&db, "realtime_outbox").await;
    let mut ws = subscribed(&s, "ada", "orders").await;
    let mut sent = 0u64;
    for round in 0..4 {
        let pg = db.client().await;
        insert_publishes(&pg, sent + 1, sent + 50, 1).await;
        sent += 50;
        if round < 3 {
            // As a database restart does to it: every connection to the database dropped
            // (this test's own included).
            admin()
                .await
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&db.name],
                )
                .await
                .unwrap();
        }
    }
    let got = received(&mut ws, sent as usize).await;
    let mut unique = got.clone();
    unique.dedup();
    assert_eq!(
        unique,
        (1..=sent).collect::<Vec<_>>(),
        "in order, nothing lost"
    );
    drop(s);
    db.drop_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarted_loses_nothing_and_delivers_no_publication_twice() {
    let db = Db::create().await;
    let redis = RedisProc::start();
    let toml = outbox_toml(&db, 1);
    let (child, _a) = spawn_with_consumer("a", &toml, Some(&redis));
    table_ready(&db, "realtime_outbox").await;
    // The subscriber on a second node: the killed one's connections go with it.
    let mut c = node_config();
    c.node.id = "watcher".into();
    c.broker.kind = boundary_realtime::config::BrokerKind::Redis;
    c.broker.redis_url = redis.url();
    c.broker.node_ttl_ms = 1500;
    let w = start_with(c).await;
    let mut ws = subscribed(&w, "ada", "orders").await;
    let pg = db.client().await;
    let total = 3000u64;
    let rows: Vec<String> = (1..=total).map(|n| publish_row("orders", n)).collect();
    pg.execute(
        "INSERT INTO realtime_outbox (method, payload) SELECT 'publish', p::json FROM unnest($1::text[]) AS p",
        &[&rows],
    )
    .await
    .unwrap();
    // Kill it mid-run (after some arrived), then start it again.
    let first = received(&mut ws, 300).await;
    drop(child); // SIGKILL
    let (_child, _a) = spawn_with_consumer("a", &toml, Some(&redis));
    let rest = received(&mut ws, (total - 300) as usize).await;
    let all: Vec<u64> = first.into_iter().chain(rest).collect();
    assert_eq!(all, (1..=total).collect::<Vec<_>>(), "each once, in order");
    outbox_empty(&pg).await;
    drop(w);
    db.drop_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stream_is_applied_in_order_and_a_dead_consumers_pending_entries_first() {
    let redis = RedisProc::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut r = client.get_multiplexed_async_connection().await.unwrap();
    // A consumer "dead" of the group read 1..=5 and died before acknowledging; it held the lease.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("realtime")
        .arg("boundary-realtime")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut r)
        .await
        .unwrap();
    xadd_publishes(&mut r, 1, 5).await;
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("boundary-realtime")
        .arg("dead")
        .arg("COUNT")
        .arg(5)
        .arg("STREAMS")
        .arg("realtime")
        .arg(">")
        .query_async(&mut r)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("realtime:lease:boundary-realtime")
        .arg("dead")
        .arg("PX")
        .arg(1500)
        .query_async(&mut r)
        .await
        .unwrap();
    xadd_publishes(&mut r, 6, 8).await;
    let _: String = redis::cmd("XADD")
        .arg("realtime")
        .arg("*")
        .arg("method")
        .arg("publish")
        .arg("payload")
        .arg("not json")
        .query_async(&mut r)
        .await
        .unwrap();
    let mut c = node_config();
    c.consumers = vec![ConsumerConfig {
        name: "jobs".into(),
        kind: ConsumerKind::RedisStream,
        url: redis.url().into(),
        poll_interval_ms: 200,
        claim_idle_ms: 1500,
        ..ConsumerConfig::default()
    }];
    let s = start_with(c).await;
    let mut ws = subscribed(&s, "ada", "orders").await;
    xadd_publishes(&mut r, 9, 1000).await;
    let got = received(&mut ws, 1000).await;
    assert_eq!(
        got,
        (1..=1000).collect::<Vec<_>>(),
        "the dead one's first, then in order"
    );
    eventually("everything acknowledged", || {
        let mut r = r.clone();
        async move {
            let p: redis::Value = redis::cmd("XPENDING")
                .arg("realtime")
                .arg("boundary-realtime")
                .query_async(&mut r)
                .await
                .unwrap();
            matches!(p, redis::Value::Array(ref a) if a.first() == Some(&redis::Value::Int(0)))
        }
    })
    .await;
    let failed: Vec<redis::streams::StreamId> = {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg("realtime:failed")
            .arg("-")
            .arg("+")
            .query_async(&mut r)
            .await
            .unwrap();
        reply.ids
    };
    assert_eq!(failed.len(), 1);
    let error: String = redis::from_redis_value(failed[0].map["error"].clone()).unwrap();
    assert!(error.contains("InvalidArgument"), "{error}");
    let metrics = s.hub().encode_metrics();
    assert!(
        metrics
            .contains(r#"realtime_consumer_records_total{consumer="jobs",outcome="applied"} 1000"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_broker_is_down_rows_wait_and_then_arrive_in_order() {
    let db = Db::create().await;
    let mut redis = RedisProc::start();
    let mut c = node_config();
    c.broker.kind = boundary_realtime::config::BrokerKind::Redis;
    c.broker.redis_url = redis.url();
    c.broker.node_ttl_ms = 1500;
    c.consumers = vec![outbox(&db, "orders")];
    let s = start_with(c).await;
    table_ready(&db, "realtime_outbox").await;
    let mut ws = subscribed(&s, "ada", "orders").await;
    let pg = db.client().await;
    let insert = |from, to| insert_publishes(&pg, from, to, 1);
    insert(1, 10).await;
    assert_eq!(received(&mut ws, 10).await, (1..=10).collect::<Vec<_>>());
    redis.stop();
    insert(11, 30).await;
    // The commands fail while the broker is away: retried, nothing set aside or deleted.
    eventually("a retry", || async {
        s.hub()
            .encode_metrics()
            .contains(r#"realtime_consumer_records_total{consumer="orders",outcome="retried"}"#)
    })
    .await;
    let waiting: i64 = pg
        .query_one("SELECT count(*) FROM realtime_outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(waiting, 20);
    redis.restart();
    let got = received(&mut ws, 20).await;
    assert_eq!(got, (11..=30).collect::<Vec<_>>(), "in order, nothing lost");
    outbox_empty(&pg).await;
    let failed: i64 = pg
        .query_one("SELECT count(*) FROM realtime_outbox_failed", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(failed, 0);
    drop(s);
    db.drop_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_consumer_reconnects_after_a_redis_restart() {
    let mut redis = RedisProc::start();
    let mut c = node_config();
    c.consumers = vec![ConsumerConfig {
        name: "jobs".into(),
        kind: ConsumerKind::RedisStream,
        url: redis.url().into(),
        poll_interval_ms: 200,
        claim_idle_ms: 1500,
        ..ConsumerConfig::default()
    }];
    let s = start_with(c).await;
    let mut ws = subscribed(&s, "ada", "orders").await;
    let url = redis.url();
    // A connection of its own each time: the one before goes with the restart.
    let add = |from, to| {
        let url = url.clone();
        async move {
            let client = redis::Client::open(url).unwrap();
            let mut r = client.get_multiplexed_async_connection().await.unwrap();
            xadd_publishes(&mut r, from, to).await;
        }
    };
    add(1, 10).await;
    assert_eq!(received(&mut ws, 10).await, (1..=10).collect::<Vec<_>>());
    // Restarted empty (it keeps nothing on disk): the consumer makes its group again.
    redis.stop();
    redis.restart();
    add(11, 20).await;
    assert_eq!(received(&mut ws, 10).await, (11..=20).collect::<Vec<_>>());
}
