//! Resume mode: every client (one user each) connects and notes its user stream's position,
//! goes away, misses the messages sent to its user meanwhile (`--messages` SendToUser calls,
//! spread over the users in turn), and then every client comes back at once with
//! `?since=<offset>&epoch=<epoch>`. It reports how many were told `recovered: true`, whether
//! every missed message arrived once and in order, and how long the reconnect and the drain
//! took (from the first reconnect to the last missed message). Native protocol only.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::conns::{self, Stats, Target};
use super::report::{Report, Resume};
use super::{drive, procfs, start_reader, Api, BenchError, Options};

/// A stream position as `connected` gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// Reads the position out of a `connected` frame, and whether it says `recovered`.
pub fn connected(frame: &str) -> Result<(Position, Option<bool>), String> {
    let v: serde_json::Value =
        serde_json::from_str(frame).map_err(|e| format!("connected is not JSON: {e}"))?;
    let offset = v["offset"].as_u64();
    let epoch = v["epoch"].as_str();
    match (offset, epoch) {
        (Some(offset), Some(epoch)) => Ok((
            Position {
                offset,
                epoch: epoch.to_owned(),
            },
            v["recovered"].as_bool(),
        )),
        _ => Err(format!(
            "connected carries no user stream position (are user streams off?): {frame}"
        )),
    }
}

/// The measurement, after the API and the tokens are ready.
pub(crate) async fn run(
    opts: &Options,
    targets: &[Target],
    api: &Api,
    tokens: Vec<String>,
    pid: Option<&[u32]>,
    mut report: Report,
) -> Result<Report, BenchError> {
    let started = Instant::now();
    let positions = first_visit(opts, targets, &tokens).await?;
    report.connect(positions.len() as u64, started.elapsed());

    // Away: the messages are sent while nobody is connected.
    let stats = Stats::new();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load = drive(opts, 1, api, &sent).await;
    let expected = load.expected;

    // Back, all at once.
    let server_cpu0 = pid
        .map(procfs::cpu_time_sum)
        .transpose()
        .map_err(BenchError::Usage)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut readers = JoinSet::new();
    let back = Instant::now();
    let told = come_back(
        opts,
        targets,
        tokens,
        &positions,
        &stats,
        &stop_rx,
        &mut readers,
    )
    .await;
    let reconnect = back.elapsed();
    let told = match told {
        Ok(t) => t,
        Err(e) => {
            let _ = stop_tx.send(true);
            readers.shutdown().await;
            return Err(e);
        }
    };
    let deadline = Instant::now() + Duration::from_secs_f64(opts.drain_timeout.max(0.0));
    while stats.counts().unique() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drained = back.elapsed();
    if let (Some(pid), Some(cpu0)) = (pid, server_cpu0) {
        report.server.cpu_seconds =
            Some((procfs::cpu_time_sum(pid).map_err(BenchError::Usage)? - cpu0).as_secs_f64());
    }
    let counts = stats.counts();
    report.load(load, counts, &stats.histogram());
    report.resume = Some(Resume {
        clients: positions.len() as u64,
        recovered: told.0,
        not_recovered: told.1,
        reconnect_seconds: reconnect.as_secs_f64(),
        drain_seconds: drained.as_secs_f64(),
    });
    report.closed_by_server = stats.closes();
    report.finish();
    let _ = stop_tx.send(true);
    while readers.join_next().await.is_some() {}
    Ok(report)
}

/// Connects every client once, notes its position, and closes it.
async fn first_visit(
    opts: &Options,
    targets: &[Target],
    tokens: &[String],
) -> Result<Vec<Position>, BenchError> {
    let gate = Arc::new(Semaphore::new(opts.connect_concurrency));
    let mut opening = JoinSet::new();
    for (i, token) in tokens.iter().enumerate() {
        let target = targets[i % targets.len()].clone();
        let source = target.source(i / targets.len());
        let token = token.clone();
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = Arc::clone(&gate)
            .acquire_owned()
            .await
            .expect("open semaphore");
        opening.spawn(async move {
            let (mut ws, frame) = conns::open_at(&target, source, &token, None, "").await?;
            let _ = ws.close(None).await;
            drop(permit);
            let frame = frame.unwrap_or_default();
            let (position, _) = connected(&frame).map_err(BenchError::Failed)?;
            Ok::<_, BenchError>((i, position))
        });
    }
    let mut positions = vec![None; tokens.len()];
    while let Some(done) = opening.join_next().await {
        let (i, p) =
            done.map_err(|e| BenchError::Failed(format!("a connect task failed: {e}")))??;
        positions[i] = Some(p);
    }
    Ok(positions.into_iter().flatten().collect())
}

/// Reconnects every client from its position, `--connect-concurrency` at a time, and starts
/// its reader. Returns how many `connected` frames said recovered, and how many did not.
async fn come_back(
    opts: &Options,
    targets: &[Target],
    tokens: Vec<String>,
    positions: &[Position],
    stats: &Arc<Stats>,
    stop: &watch::Receiver<bool>,
    readers: &mut JoinSet<()>,
) -> Result<(u64, u64), BenchError> {
    let gate = Arc::new(Semaphore::new(opts.connect_concurrency));
    let mut opening = JoinSet::new();
    for (i, (token, p)) in tokens.into_iter().zip(positions).enumerate() {
        let target = targets[i % targets.len()].clone();
        let source = target.source(i / targets.len());
        let query = format!("since={}&epoch={}", p.offset, p.epoch);
        let counted = Arc::clone(stats);
        // Never closed: acquiring cannot fail.
        let permit = Arc::clone(&gate)
            .acquire_owned()
            .await
            .expect("open semaphore");
        opening.spawn(async move {
            let (ws, frame) = conns::open_at(&target, source, &token, None, &query).await?;
            drop(permit);
            counted.opened.fetch_add(1, Ordering::Relaxed);
            let (_, recovered) =
                connected(&frame.unwrap_or_default()).map_err(BenchError::Failed)?;
            Ok::<_, BenchError>((i, ws, recovered == Some(true)))
        });
    }
    let (mut yes, mut no) = (0, 0);
    while let Some(done) = opening.join_next().await {
        let done = done.map(|r| {
            r.map(|(i, ws, recovered)| {
                match recovered {
                    true => yes += 1,
                    false => no += 1,
                }
                (i, ws)
            })
        });
        start_reader(done, stats, stop, readers)?;
    }
    Ok((yes, no))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_position_and_the_answer_from_connected() {
        let (p, r) =
            connected(r#"{"op":"connected","offset":32,"epoch":"ab12","recovered":true}"#).unwrap();
        assert_eq!((p.offset, p.epoch.as_str(), r), (32, "ab12", Some(true)));
        let (_, r) = connected(r#"{"op":"connected","offset":0,"epoch":"e"}"#).unwrap();
        assert_eq!(r, None);
        assert!(connected(r#"{"op":"connected"}"#)
            .unwrap_err()
            .contains("user streams off"));
        assert!(connected("nope").is_err());
    }
}
