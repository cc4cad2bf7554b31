//! Chaos mode: clients that stay subscribed through failures, a steady publisher, and a check
//! at the end that nothing was silently lost or repeated. It is the load tool's half of
//! `scripts/chaos.sh`, which kills nodes and restarts Redis instances meanwhile.
//!
//! Each client subscribes to its group's topic on one of the nodes; whenever its connection
//! ends it reconnects to the next node and subscribes again with `since` its last position.
//! The publisher sends `--messages` publications at `--rate`, each with its own id, to the
//! nodes of `--grpc-url` in turn, retrying a failed call (same id, so never twice) on the next
//! node. At the end every client's log is checked against what the publisher was told
//! ([`check_log`], pure): within an epoch the client got offsets one by one with nothing
//! skipped or repeated, a change of epoch or a jump came with `recovered: false`, and it
//! reached the last acknowledged publication of its topic.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tonic::transport::Endpoint;

use super::conns::{self, Target};
use super::proto::realtime_service_client::RealtimeServiceClient;
use super::proto::{Message, PublishRequest};
use super::report::{Chaos, Report};
use super::{grpc_endpoint, identity, ApiKey, BenchError, Options};

/// What a client saw on its topic, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A `subscribed` frame: the reply to a subscribe (`resumed` when it gave `since`), or
    /// one the server sent by itself (a resync, `resumed` true).
    Subscribed {
        epoch: String,
        offset: u64,
        recovered: Option<bool>,
        resumed: bool,
    },
    /// A publication, with the publisher's sequence number from its payload.
    Publication { epoch: String, offset: u64, k: u64 },
}

/// The publications the publisher was told were accepted, per topic: position -> sequence.
pub type Acked = BTreeMap<(String, u64), u64>;

/// One client's verdict.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub received: u64,
    /// Times it was told `recovered: false`.
    pub told_lost: u64,
    pub violations: Vec<String>,
}

/// Checks one client's log against its topic's acknowledged publications.
pub fn check_log(log: &[Seen], acked: &Acked) -> Verdict {
    let mut v = Verdict::default();
    let mut cur: Option<(String, u64)> = None;
    for seen in log {
        match seen {
            Seen::Subscribed {
                epoch,
                offset,
                recovered,
                resumed,
            } => match (&cur, resumed, recovered) {
                (Some((e, o)), true, Some(true)) => {
                    if e != epoch || o != offset {
                        v.violations.push(format!(
                            "recovered at {epoch}:{offset} but the replay ended at {e}:{o}"
                        ));
                        cur = Some((epoch.clone(), *offset));
                    }
                }
                (Some(_), true, _) => {
                    v.told_lost += 1;
                    cur = Some((epoch.clone(), *offset));
                }
                _ => cur = Some((epoch.clone(), *offset)),
            },
            Seen::Publication { epoch, offset, k } => {
                v.received += 1;
                if let Some(want) = acked.get(&(epoch.clone(), *offset)) {
                    if want != k {
                        v.violations.push(format!(
                            "{epoch}:{offset} carried #{k}, the publisher was told #{want}"
                        ));
                    }
                }
                match &cur {
                    None => v
                        .violations
                        .push(format!("{epoch}:{offset} before any subscribed")),
                    Some((e, _)) if e != epoch => v.violations.push(format!(
                        "{epoch}:{offset} while at epoch {e}, never told of the change"
                    )),
                    Some((_, o)) if *offset <= *o => v
                        .violations
                        .push(format!("{epoch}:{offset} again or out of order (at {o})")),
                    Some((_, o)) if *offset > o + 1 => v.violations.push(format!(
                        "silent gap: {epoch}:{}..{} never arrived",
                        o + 1,
                        offset - 1
                    )),
                    _ => {}
                }
                cur = Some((epoch.clone(), *offset));
            }
        }
    }
    if let Some((e, o)) = &cur {
        let last = acked
            .range((e.clone(), 0)..=(e.clone(), u64::MAX))
            .next_back()
            .map(|((_, off), _)| *off);
        if let Some(last) = last.filter(|last| last > o) {
            v.violations.push(format!(
                "never got {e}:{}..{last} (acknowledged), nor was told they were lost",
                o + 1
            ));
        }
    }
    v
}

/// A client's state, shared with the check.
#[derive(Default)]
struct Client {
    log: Vec<Seen>,
    /// Its position: what `since` it resubscribes with.
    at: Option<(String, u64)>,
}

/// The run, after the tokens are ready.
pub(crate) async fn run(
    opts: &Options,
    targets: &[Target],
    tokens: Vec<String>,
    mut report: Report,
) -> Result<Report, BenchError> {
    let groups = opts.groups.clamp(1, opts.conns.max(1));
    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let reconnects = Arc::new(AtomicU64::new(0));
    let clients: Vec<Arc<Mutex<Client>>> = (0..opts.conns).map(|_| Default::default()).collect();
    let targets = Arc::new(targets.to_vec());
    let mut tasks = JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let topic = identity(i, groups).topic;
        let (c, t, stop) = (
            Arc::clone(&clients[i]),
            Arc::clone(&targets),
            stop_rx.clone(),
        );
        let r = Arc::clone(&reconnects);
        tasks.spawn(async move { client(i, topic, token, t, c, r, stop).await });
    }
    // Every client subscribed once before the first publication.
    let deadline = Instant::now() + Duration::from_secs(30);
    while clients.iter().any(|c| c.lock().at.is_none()) {
        if Instant::now() > deadline {
            let _ = stop_tx.send(true);
            return Err(BenchError::Failed(
                "not every client could subscribe within 30 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report.connect(opts.conns as u64, started.elapsed());

    let (acked, published, gave_up) = publish(opts, groups).await?;
    // Let every client catch up with the last acknowledged publication of its topic.
    let drain = Instant::now() + Duration::from_secs_f64(opts.drain_timeout.max(1.0));
    let caught_up = |i: usize, c: &Client| {
        let topic = identity(i, groups).topic;
        let Some((e, o)) = &c.at else { return false };
        let last = acked.get(&topic).and_then(|a| {
            a.range((e.clone(), 0)..=(e.clone(), u64::MAX))
                .next_back()
                .map(|((_, off), _)| *off)
        });
        last.is_none_or(|last| *o >= last)
    };
    while Instant::now() < drain
        && !clients
            .iter()
            .enumerate()
            .all(|(i, c)| caught_up(i, &c.lock()))
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}

    let mut chaos = Chaos {
        published,
        acknowledged: acked.values().map(|a| a.len() as u64).sum(),
        gave_up,
        clients: opts.conns as u64,
        reconnects: reconnects.load(Ordering::Relaxed),
        ..Default::default()
    };
    let empty = Acked::new();
    for (i, c) in clients.iter().enumerate() {
        let topic = identity(i, groups).topic;
        let v = check_log(&c.lock().log, acked.get(&topic).unwrap_or(&empty));
        chaos.received += v.received;
        chaos.told_lost += v.told_lost;
        chaos.violations += v.violations.len() as u64;
        for s in v.violations.into_iter().take(3) {
            if chaos.first_violations.len() < 20 {
                chaos
                    .first_violations
                    .push(format!("client {i} ({topic}): {s}"));
            }
        }
    }
    report.chaos = Some(chaos);
    Ok(report)
}

/// One client: subscribed to `topic` on some node, for as long as the run lasts.
async fn client(
    i: usize,
    topic: String,
    token: String,
    targets: Arc<Vec<Target>>,
    state: Arc<Mutex<Client>>,
    reconnects: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut attempt = 0usize;
    while !*stop.borrow() {
        let target = &targets[(i + attempt) % targets.len()];
        attempt += 1;
        let session = async {
            let Ok((mut ws, _)) = conns::open_at(target, None, &token, None, "").await else {
                return;
            };
            let since = state.lock().at.clone();
            let mut sub = serde_json::json!({"op": "subscribe", "topic": topic, "ref": "s"});
            if let Some((epoch, offset)) = &since {
                sub["since"] = serde_json::json!({"offset": offset, "epoch": epoch});
            }
            if ws.send(WsMessage::text(sub.to_string())).await.is_err() {
                return;
            }
            while let Some(Ok(msg)) = ws.next().await {
                let WsMessage::Text(text) = msg else { continue };
                let Ok(f) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                let epoch = f["epoch"].as_str().unwrap_or_default().to_owned();
                let offset = f["offset"].as_u64().unwrap_or_default();
                let seen = if f["op"] == "subscribed" && f["topic"] == topic.as_str() {
                    Seen::Subscribed {
                        epoch,
                        offset,
                        recovered: f["recovered"].as_bool(),
                        resumed: since.is_some() || f["ref"].is_null(),
                    }
                } else if f["topic"] == topic.as_str() && f["type"].is_string() {
                    Seen::Publication {
                        epoch,
                        offset,
                        k: f["payload"]["k"].as_u64().unwrap_or(u64::MAX),
                    }
                } else if f["op"] == "error" {
                    return;
                } else {
                    continue;
                };
                let mut s = state.lock();
                match &seen {
                    Seen::Subscribed {
                        epoch,
                        offset,
                        recovered,
                        ..
                    } if *recovered != Some(true) || s.at.is_none() => {
                        s.at = Some((epoch.clone(), *offset));
                    }
                    Seen::Publication { epoch, offset, .. } => {
                        s.at = Some((epoch.clone(), *offset));
                    }
                    _ => {}
                }
                s.log.push(seen);
            }
        };
        tokio::select! {
            _ = session => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        reconnects.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The publisher: `--messages` publications at `--rate` over the groups' topics, each retried
/// on the next node until accepted or 15 s passed. Returns what was acknowledged per topic,
/// how many were sent, and how many were given up on.
async fn publish(
    opts: &Options,
    groups: usize,
) -> Result<(HashMap<String, Acked>, u64, u64), BenchError> {
    let key = format!("Bearer {}", opts.api_key.as_deref().unwrap_or_default())
        .parse()
        .map_err(|_| BenchError::Usage("--api-key is not a valid header value".into()))?;
    let mut nodes = Vec::new();
    for url in opts.grpc_url.split(',').map(grpc_endpoint) {
        let channel = Endpoint::from_shared(url.clone())
            .map_err(|e| BenchError::Usage(format!("--grpc-url {url:?}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy();
        nodes.push(RealtimeServiceClient::with_interceptor(
            channel,
            ApiKey(Clone::clone(&key)),
        ));
    }
    let run = super::unix_ns();
    let rate = if opts.rate > 0.0 { opts.rate } else { 20.0 };
    let started = Instant::now();
    let mut acked: HashMap<String, Acked> = HashMap::new();
    let (mut sent, mut gave_up) = (0u64, 0u64);
    for k in 0..opts.messages {
        let due = started + Duration::from_secs_f64(k as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let topic = format!("bench:t{}", k as usize % groups);
        let request = PublishRequest {
            topic: topic.clone(),
            message: Some(Message {
                r#type: "chaos".into(),
                payload_json: format!("{{\"k\":{k}}}"),
                id: format!("chaos-{run}-{k}"),
            }),
        };
        sent += 1;
        let give_up = Instant::now() + Duration::from_secs(15);
        let mut n = k as usize;
        loop {
            let node = &mut nodes[n % opts.grpc_url.split(',').count()];
            let call = node.publish(request.clone());
            match tokio::time::timeout(Duration::from_secs(2), call).await {
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    acked
                        .entry(topic)
                        .or_default()
                        .insert((r.epoch, r.offset), k);
                    break;
                }
                _ if Instant::now() > give_up => {
                    gave_up += 1;
                    break;
                }
                _ => {
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    Ok((acked, sent, gave_up))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(epoch: &str, offset: u64, recovered: Option<bool>, resumed: bool) -> Seen {
        Seen::Subscribed {
            epoch: epoch.into(),
            offset,
            recovered,
            resumed,
        }
    }

    fn publ(epoch: &str, offset: u64, k: u64) -> Seen {
        Seen::Publication {
            epoch: epoch.into(),
            offset,
            k,
        }
    }

    fn acked(items: &[(&str, u64, u64)]) -> Acked {
        items
            .iter()
            .map(|(e, o, k)| ((e.to_string(), *o), *k))
            .collect()
    }

    #[test]
    fn a_clean_log_with_a_recovery_and_a_told_loss_passes() {
        let a = acked(&[
            ("e", 1, 0),
            ("e", 2, 1),
            ("e", 3, 2),
            ("f", 1, 3),
            ("f", 2, 4),
        ]);
        let log = [
            sub("e", 0, None, false),
            publ("e", 1, 0),
            // Away, back with since: the replay, then recovered.
            publ("e", 2, 1),
            publ("e", 3, 2),
            sub("e", 3, Some(true), true),
            // The instance lost its data: told, then the new epoch from its position.
            sub("f", 1, Some(false), true),
            publ("f", 2, 4),
        ];
        let v = check_log(&log, &a);
        assert_eq!(
            v,
            Verdict {
                received: 4,
                told_lost: 1,
                violations: vec![]
            }
        );
    }

    #[test]
    fn gaps_repeats_silent_epochs_wrong_payloads_and_missing_tails_are_caught() {
        let a = acked(&[("e", 1, 0), ("e", 2, 1), ("e", 3, 2), ("e", 4, 3)]);
        let cases: [(&[Seen], &str); 6] = [
            (
                &[
                    sub("e", 0, None, false),
                    publ("e", 2, 1),
                    publ("e", 3, 2),
                    publ("e", 4, 3),
                ],
                "silent gap: e:1..1",
            ),
            (
                &[sub("e", 0, None, false), publ("e", 1, 0), publ("e", 1, 0)],
                "again or out of order",
            ),
            (
                &[sub("e", 3, None, false), publ("f", 1, 9)],
                "never told of the change",
            ),
            (&[sub("e", 0, None, false), publ("e", 1, 7)], "carried #7"),
            (
                &[sub("e", 0, None, false), publ("e", 1, 0)],
                "never got e:2..4",
            ),
            (
                &[sub("e", 1, None, false), sub("e", 4, Some(true), true)],
                "the replay ended at e:1",
            ),
        ];
        for (log, want) in cases {
            let v = check_log(log, &a);
            assert!(
                v.violations.iter().any(|s| s.contains(want)),
                "{want}: {:?}",
                v.violations
            );
        }
    }
}
