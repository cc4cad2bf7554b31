//! The PostgreSQL outbox consumer (tokio-postgres). At start (and after each reconnect) it
//! makes sure of the table, `<table>_failed`, `<table>_leases` and the statement-level
//! trigger that sends `NOTIFY <table>`, then LISTENs on its connection. Every second it claims
//! or renews the partitions' leases in `<table>_leases` (a row per partition: holder and
//! expiry; a lease not renewed for `claim_idle_ms` may be taken by any node, so a dead or
//! stopped node loses it). For each partition it holds, it reads up to `batch_size` rows in id
//! order, applies them one by one, and then in one transaction checks that it still holds the
//! lease, moves the failed rows to `<table>_failed` and deletes the done ones. Woken by the
//! notification, else every `poll_interval_ms`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};

use super::record::{backoff_ms, Outcome};
use super::{pause, reconnecting, Applier};
use crate::config::ConsumerConfig;

/// How often leases are renewed: every second, or a third of `claim_idle_ms` if that is
/// shorter, so a busy moment never lets a live holder's lease lapse.
fn renew_every(claim_idle_ms: u64) -> Duration {
    Duration::from_millis((claim_idle_ms / 3).clamp(100, 1000))
}

/// Why a session with the database ended.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("{0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("the node is shutting down")]
    Shutdown,
}

pub async fn run(applier: Arc<Applier>, cfg: ConsumerConfig) {
    reconnecting(&applier, "database", || async {
        match session(&applier, &cfg).await {
            Ok(()) | Err(Ended::Shutdown) => Ok(()),
            // The error names what failed; never the DSN (it may hold a password).
            Err(Ended::Db(e)) => Err(describe(&e)),
        }
    })
    .await;
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// The statements one session uses, with the table's name written in (validated at start to
/// be a plain identifier).
struct Sql {
    read: Statement,
    claim: Statement,
    renew: Statement,
    fail: Statement,
    delete: Statement,
    backlog: Statement,
}

async fn session(applier: &Applier, cfg: &ConsumerConfig) -> Result<(), Ended> {
    let (client, mut connection) = tokio_postgres::connect(cfg.dsn.expose_secret(), NoTls).await?;
    // The connection is driven here, so that its notifications reach the loop.
    let wake = Arc::new(Notify::new());
    let woken = Arc::clone(&wake);
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        use futures_util::StreamExt;
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(_)) => woken.notify_one(),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        woken.notify_one();
    });
    let _driver = AbortOnDrop(driver);
    let t = &cfg.table;
    // A node stopped (SIGSTOP) inside a batch's transaction would hold its lease and rows
    // locked for as long as its connection lives, and the next holder's claim would wait on
    // them: the server ends such a session after half the lease time.
    client
        .batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = {}",
            (cfg.claim_idle_ms / 2).max(500)
        ))
        .await?;
    ensure_schema(&client, t).await?;
    client.batch_execute(&format!("LISTEN {t}")).await?;
    let n = cfg.partitions as i32;
    let filter = if n == 1 {
        "TRUE".to_owned()
    } else {
        format!("mod(mod(partition, {n}) + {n}, {n}) = $2")
    };
    let sql = Sql {
        read: client
            .prepare(&format!(
                "SELECT id, method, payload::text FROM {t} WHERE {filter} ORDER BY id LIMIT $1"
            ))
            .await?,
        claim: client
            .prepare(&format!(
                "INSERT INTO {t}_leases (partition, holder, expires_at) \
                 SELECT p, $1, now() + $2::bigint * interval '1 millisecond' FROM generate_series(0, $3::int - 1) AS p \
                 ON CONFLICT (partition) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
                 WHERE {t}_leases.holder = EXCLUDED.holder OR {t}_leases.expires_at < now() \
                 RETURNING partition"
            ))
            .await?,
        renew: client
            .prepare(&format!(
                "UPDATE {t}_leases SET expires_at = now() + $3::bigint * interval '1 millisecond' \
                 WHERE partition = $1 AND holder = $2"
            ))
            .await?,
        fail: client
            .prepare(&format!(
                "INSERT INTO {t}_failed (id, method, payload, partition, created_at, error, failed_at) \
                 SELECT id, method, payload, partition, created_at, $2, now() FROM {t} WHERE id = $1 \
                 ON CONFLICT (id) DO NOTHING"
            ))
            .await?,
        delete: client
            .prepare(&format!("DELETE FROM {t} WHERE id = ANY($1)"))
            .await?,
        backlog: client
            .prepare(&format!(
                "SELECT count(*)::bigint, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM {t}"
            ))
            .await?,
    };
    applier.status.error(None);
    tracing::info!(consumer = %applier.name, table = %t, "consumer: reading the outbox");
    let me = applier.node_id().to_owned();
    let idle = cfg.claim_idle_ms as i64;
    let mut held: BTreeSet<i32> = BTreeSet::new();
    let mut renew_at = Instant::now();
    let mut down = applier.shutdown_signal();
    let mut retries = 0u32;
    loop {
        if applier.stopping() {
            return Err(Ended::Shutdown);
        }
        if Instant::now() >= renew_at {
            let rows = client.query(&sql.claim, &[&me, &idle, &n]).await?;
            let now_held: BTreeSet<i32> = rows.iter().map(|r| r.get(0)).collect();
            if now_held != held {
                tracing::info!(consumer = %applier.name, partitions = ?now_held, "consumer: partitions held");
            }
            held = now_held;
            applier.status.held(held.iter().copied().collect());
            let b = client.query_one(&sql.backlog, &[]).await?;
            applier.backlog(b.get(0), b.get(1));
            renew_at = Instant::now() + renew_every(cfg.claim_idle_ms);
        }
        let mut busy = false;
        let mut lost = Vec::new();
        for &p in &held {
            match batch(applier, cfg, &client, &sql, p, &me, idle).await? {
                Batch::Full => busy = true,
                Batch::Short => {}
                Batch::Lost => lost.push(p),
                Batch::Retry(why) => {
                    retries += 1;
                    applier.status.error(Some(why));
                    pause(applier, backoff_ms(retries)).await;
                    busy = true;
                    break;
                }
            }
            retries = 0;
            if Instant::now() >= renew_at {
                break;
            }
        }
        for p in lost {
            held.remove(&p);
        }
        if busy {
            continue;
        }
        let wait = renew_at
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(cfg.poll_interval_ms));
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = down.wait_for(|d| *d) => return Err(Ended::Shutdown),
        }
        if client.is_closed() {
            // The driver ended: the next query fails and the session starts again.
            client.query_one("SELECT 1", &[]).await?;
        }
    }
}

enum Batch {
    /// A whole batch was done: there may be more.
    Full,
    /// Fewer rows than a batch: the partition is drained for now.
    Short,
    /// The lease passed to another node meanwhile: nothing was deleted.
    Lost,
    /// The service cannot apply commands now: the rows from the first not applied stay.
    Retry(String),
}

/// One batch of partition `p`: read, apply in order, then delete what is done (and set aside
/// what failed) in one transaction that first renews the lease.
async fn batch(
    applier: &Applier,
    cfg: &ConsumerConfig,
    client: &Client,
    sql: &Sql,
    p: i32,
    me: &str,
    idle: i64,
) -> Result<Batch, Ended> {
    let limit = cfg.batch_size as i64;
    let rows = if cfg.partitions == 1 {
        client.query(&sql.read, &[&limit]).await?
    } else {
        client.query(&sql.read, &[&limit, &p]).await?
    };
    let mut done: Vec<i64> = Vec::with_capacity(rows.len());
    let mut failed: Vec<(i64, String)> = Vec::new();
    let mut retry = None;
    for row in &rows {
        let id: i64 = row.get(0);
        let method: &str = row.get(1);
        let payload: &str = row.get(2);
        match applier.apply(method, payload.as_bytes()).await {
            Outcome::Applied => done.push(id),
            Outcome::Failed(why) => {
                tracing::warn!(consumer = %applier.name, id, method, error = %why, "consumer: record set aside in the failed table");
                failed.push((id, why));
                done.push(id);
            }
            Outcome::Retry(why) => {
                retry = Some(why);
                break;
            }
        }
        if applier.stopping() {
            // The record in hand is finished; the rest waits for the next run.
            break;
        }
    }
    if !done.is_empty() {
        client.batch_execute("BEGIN").await?;
        let tx = Tx { client };
        if tx.execute(&sql.renew, &[&p, &me, &idle]).await? == 0 {
            tx.rollback().await?;
            tracing::warn!(consumer = %applier.name, partition = p, "consumer: lease lost; another node goes on from here");
            return Ok(Batch::Lost);
        }
        for (id, why) in &failed {
            tx.execute(&sql.fail, &[id, why]).await?;
        }
        tx.execute(&sql.delete, &[&done]).await?;
        tx.commit().await?;
        applier.count("applied", (done.len() - failed.len()) as u64);
        applier.count("failed", failed.len() as u64);
    }
    if let Some(why) = retry {
        applier.count("retried", 1);
        return Ok(Batch::Retry(why));
    }
    Ok(if rows.len() as i64 == limit {
        Batch::Full
    } else {
        Batch::Short
    })
}

/// A transaction begun with `BEGIN` on the session's client (tokio-postgres's own takes
/// `&mut Client`; this session runs one statement at a time, so it is the same).
struct Tx<'a> {
    client: &'a Client,
}

impl Tx<'_> {
    async fn execute(
        &self,
        st: &Statement,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, Ended> {
        Ok(self.client.execute(st, params).await?)
    }

    async fn commit(self) -> Result<(), Ended> {
        Ok(self.client.batch_execute("COMMIT").await?)
    }

    async fn rollback(self) -> Result<(), Ended> {
        Ok(self.client.batch_execute("ROLLBACK").await?)
    }
}

/// Creates what is missing: the outbox, its failed table, the leases and the NOTIFY trigger,
/// under a transaction-scoped advisory lock so that nodes starting together do not race.
async fn ensure_schema(client: &Client, t: &str) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock(hashtext('boundary-realtime:{t}'));
             CREATE TABLE IF NOT EXISTS {t} (
               id bigserial PRIMARY KEY,
               method text NOT NULL,
               payload json NOT NULL,
               partition integer NOT NULL DEFAULT 0,
               created_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE IF NOT EXISTS {t}_failed (
               id bigint PRIMARY KEY,
               method text NOT NULL,
               payload json NOT NULL,
               partition integer NOT NULL DEFAULT 0,
               created_at timestamptz NOT NULL DEFAULT now(),
               error text NOT NULL,
               failed_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE IF NOT EXISTS {t}_leases (
               partition integer PRIMARY KEY,
               holder text NOT NULL,
               expires_at timestamptz NOT NULL);
             CREATE OR REPLACE FUNCTION {t}_notify() RETURNS trigger LANGUAGE plpgsql AS
               $fn$ BEGIN PERFORM pg_notify('{t}', ''); RETURN NULL; END $fn$;
             CREATE OR REPLACE TRIGGER {t}_notify AFTER INSERT ON {t}
               FOR EACH STATEMENT EXECUTE FUNCTION {t}_notify();
             COMMIT;"
        ))
        .await
}

/// Stops the connection's driver with the session.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
