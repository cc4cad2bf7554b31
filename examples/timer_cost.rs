//! Measures what a heartbeat timer per connection costs against one sweeper per node, in
//! isolation (not part of CI; see docs/benchmarks.md). Spawns `--n` idle tasks shaped like a
//! connection task (a bounded queue of 8-byte items, woken to send a ping every
//! `--interval-ms`), driven either by a `tokio::time::Interval` each (`--mode per-task`) or
//! by one sweeper task that walks shared per-task state and wakes what is due
//! (`--mode sweeper`, what the server does). Reports RSS growth per task and CPU time per
//! wakeup over `--secs`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::sync::{mpsc, Notify};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    mode: String,
    #[arg(long, default_value_t = 100_000)]
    n: usize,
    #[arg(long, default_value_t = 20)]
    secs: u64,
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of this process, in seconds.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

struct Shared {
    ping_sent: AtomicI64,
    notify: Notify,
}

static PINGS: AtomicU64 = AtomicU64::new(0);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let interval = Duration::from_millis(args.interval_ms);
    let per_task = match args.mode.as_str() {
        "per-task" => true,
        "sweeper" => false,
        other => panic!("--mode per-task|sweeper, not {other}"),
    };
    let base = rss_kib();
    let mut senders = Vec::with_capacity(args.n);
    let mut shared = Vec::with_capacity(args.n);
    for i in 0..args.n {
        let (tx, mut rx) = mpsc::channel::<Arc<()>>(1024);
        let s = Arc::new(Shared {
            ping_sent: AtomicI64::new(0),
            notify: Notify::new(),
        });
        senders.push(tx);
        shared.push(Arc::clone(&s));
        // Stagger the start so both modes spread wakeups over the interval alike.
        let offset = interval.mul_f64(i as f64 / args.n as f64);
        if per_task {
            tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
                loop {
                    tokio::select! {
                        m = rx.recv() => if m.is_none() { return },
                        _ = tick.tick() => { PINGS.fetch_add(1, Ordering::Relaxed); }
                    }
                }
            });
        } else {
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        m = rx.recv() => if m.is_none() { return },
                        _ = s.notify.notified() => { PINGS.fetch_add(1, Ordering::Relaxed); }
                    }
                }
            });
        }
    }
    if !per_task {
        let shared = shared.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let tick_ms = (args.interval_ms / 4).clamp(10, 1000);
            let mut tick = tokio::time::interval(Duration::from_millis(tick_ms));
            loop {
                tick.tick().await;
                let now = start.elapsed().as_millis() as i64;
                for (i, s) in shared.iter().enumerate() {
                    let offset = (args.interval_ms as i64 * i as i64) / args.n as i64;
                    let last = s.ping_sent.load(Ordering::Relaxed);
                    if now - offset - last >= args.interval_ms as i64
                        || (last == 0 && now >= offset)
                    {
                        s.ping_sent.store(now - offset, Ordering::Relaxed);
                        s.notify.notify_one();
                    }
                }
            }
        });
    }
    tokio::time::sleep(interval * 2).await;
    let rss = rss_kib();
    let (cpu0, p0) = (cpu_secs(), PINGS.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    let (cpu1, p1) = (cpu_secs(), PINGS.load(Ordering::Relaxed));
    let wakeups = p1 - p0;
    println!(
        "mode={} n={} interval_ms={} rss_per_task_bytes={:.0} wakeups={} cpu_s={:.2} cpu_ns_per_wakeup={:.0}",
        args.mode,
        args.n,
        args.interval_ms,
        (rss.saturating_sub(base)) as f64 * 1024.0 / args.n as f64,
        wakeups,
        cpu1 - cpu0,
        (cpu1 - cpu0) * 1e9 / wakeups.max(1) as f64
    );
    drop(senders);
}
