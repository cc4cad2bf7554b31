//! Soak test client (not part of CI; run by `scripts/soak.sh`). Holds `--stable` connections
//! for the whole run, each subscribed to the topic `soak:all`, and churns `--churn` more
//! (connect, subscribe to a topic, hold 0.5..3 s, close, again), while broadcasts, per-user
//! messages and publications to `soak:all` flow at steady rates. Every stable connection checks
//! that it gets every message, in order, and every publication with gapless offsets. Reports the server's RSS (from /proc) at the start, under
//! load, and after every connection has closed, plus deliveries, losses and errors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boundary_realtime::proto::realtime_service_client::RealtimeServiceClient;
use boundary_realtime::proto::{
    BroadcastRequest, GetStatsRequest, Message, PublishRequest, SendToUserRequest,
};
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[derive(Parser, Clone)]
struct Args {
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    ws_url: String,
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    grpc_url: String,
    #[arg(long)]
    api_key: String,
    #[arg(long)]
    secret: String,
    #[arg(long)]
    server_pid: u32,
    #[arg(long, default_value_t = 2000)]
    stable: usize,
    #[arg(long, default_value_t = 1000)]
    churn: usize,
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Broadcasts per second.
    #[arg(long, default_value_t = 5)]
    broadcast_rate: u64,
    /// SendToUser calls per second, spread over the stable users.
    #[arg(long, default_value_t = 200)]
    unicast_rate: u64,
    /// Publishes per second to `soak:all`.
    #[arg(long, default_value_t = 5)]
    publish_rate: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    out_of_order: AtomicU64,
    churn_connects: AtomicU64,
    errors: AtomicU64,
    unexpected_closes: AtomicU64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn token(secret: &str, user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 24 * 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": exp, "topics": ["soak:**"]}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects and subscribes to `topic`.
async fn connect(args: &Args, user: &str, topic: &str) -> Result<Ws, String> {
    use futures_util::SinkExt;
    let url = format!("{}?token={}", args.ws_url, token(&args.secret, user));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(WsMessage::Text(t)))) if t.as_str().contains("\"connected\"") => {}
        other => return Err(format!("no connected frame: {other:?}")),
    }
    let sub = json!({"op": "subscribe", "topic": topic, "ref": "s"}).to_string();
    ws.send(WsMessage::Text(sub.into()))
        .await
        .map_err(|e| e.to_string())?;
    // Messages may arrive before the reply (a broadcast to everyone): skip them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(WsMessage::Text(t)))) if t.as_str().contains("\"op\":\"subscribed\"") => {
                return Ok(ws)
            }
            Ok(Some(Ok(WsMessage::Text(t)))) if t.as_str().contains("\"type\"") => continue,
            other => return Err(format!("no subscribed frame: {other:?}")),
        }
    }
}

/// What one stable connection saw.
#[derive(Default)]
struct Seen {
    broadcasts: u64,
    unicasts: u64,
    publications: u64,
}

async fn stable_conn(
    mut ws: Ws,
    c: Arc<Counters>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen::default();
    let (mut next_b, mut next_u, mut next_offset) = (None::<u64>, 0u64, None::<u64>);
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = async { let mut s = stop.clone(); let _ = s.wait_for(|v| *v).await; } => break,
        };
        match msg {
            Some(Ok(WsMessage::Text(t))) => {
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                    continue;
                };
                let seq = v["payload"]["seq"].as_u64().unwrap_or(u64::MAX);
                match v["type"].as_str() {
                    Some("soak.b") => {
                        if next_b.is_some_and(|n| n != seq) {
                            c.out_of_order.fetch_add(1, Ordering::Relaxed);
                        }
                        next_b = Some(seq + 1);
                        seen.broadcasts += 1;
                    }
                    Some("soak.p") => {
                        let offset = v["offset"].as_u64().unwrap_or(0);
                        if next_offset.is_some_and(|n| n != offset) {
                            c.out_of_order.fetch_add(1, Ordering::Relaxed);
                        }
                        next_offset = Some(offset + 1);
                        seen.publications += 1;
                    }
                    Some("soak.u") => {
                        if seq != next_u {
                            c.out_of_order.fetch_add(1, Ordering::Relaxed);
                        }
                        next_u = seq + 1;
                        seen.unicasts += 1;
                    }
                    _ => continue,
                }
                c.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Some(Ok(WsMessage::Close(f))) => {
                eprintln!("stable connection closed by the server: {f:?}");
                c.unexpected_closes.fetch_add(1, Ordering::Relaxed);
                return seen;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                eprintln!("stable connection error: {e}");
                c.errors.fetch_add(1, Ordering::Relaxed);
                return seen;
            }
            None => {
                c.unexpected_closes.fetch_add(1, Ordering::Relaxed);
                return seen;
            }
        }
    }
    let _ = ws.close(None).await;
    // drain until the close handshake ends
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    seen
}

async fn churner(args: Args, i: usize, c: Arc<Counters>, deadline: Instant) {
    let user = format!("churn-{i}");
    let mut n = i as u64;
    while Instant::now() < deadline {
        match connect(&args, &user, &format!("soak:churn:{}", i % 16)).await {
            Ok(mut ws) => {
                c.churn_connects.fetch_add(1, Ordering::Relaxed);
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let hold = Duration::from_millis(500 + (n >> 33) % 2500);
                let until = tokio::time::Instant::now() + hold;
                while let Ok(Some(Ok(_))) = tokio::time::timeout_at(until, ws.next()).await {}
                let _ = ws.close(None).await;
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
            }
            Err(e) => {
                eprintln!("churn connect failed: {e}");
                c.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

fn authed<T>(m: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let c = Arc::new(Counters::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.minutes * 60.0);
    let rss_start = rss_kib(args.server_pid);
    println!("server RSS at start: {rss_start} KiB");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stable = Vec::with_capacity(args.stable);
    for i in 0..args.stable {
        let ws = connect(&args, &format!("stable-{i}"), "soak:all")
            .await
            .expect("stable connection");
        stable.push(tokio::spawn(stable_conn(ws, c.clone(), stop_rx.clone())));
    }
    let rss_stable = rss_kib(args.server_pid);
    println!(
        "{} stable connections open in {:.1}s; server RSS {rss_stable} KiB ({:.2} KiB per connection)",
        args.stable,
        started.elapsed().as_secs_f64(),
        (rss_stable.saturating_sub(rss_start)) as f64 / args.stable.max(1) as f64
    );
    let churners: Vec<_> = (0..args.churn)
        .map(|i| tokio::spawn(churner(args.clone(), i, c.clone(), deadline)))
        .collect();

    let mut client = RealtimeServiceClient::connect(args.grpc_url.clone())
        .await
        .expect("gRPC");
    let sent_b = Arc::new(AtomicU64::new(0));
    let sent_p = Arc::new(AtomicU64::new(0));
    let sent_u: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.stable).map(|_| AtomicU64::new(0)).collect());
    let publisher = {
        let (mut client, args, sent_b, sent_p, sent_u, c) = (
            client.clone(),
            args.clone(),
            sent_b.clone(),
            sent_p.clone(),
            sent_u.clone(),
            c.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut b_due = 0.0f64;
            let mut p_due = 0.0f64;
            let mut u_due = 0.0f64;
            let mut rr = 0usize;
            while Instant::now() < deadline {
                tick.tick().await;
                b_due += args.broadcast_rate as f64 / 100.0;
                p_due += args.publish_rate as f64 / 100.0;
                while p_due >= 1.0 {
                    p_due -= 1.0;
                    let seq = sent_p.load(Ordering::Relaxed);
                    let m = Message {
                        r#type: "soak.p".into(),
                        payload_json: json!({"seq": seq}).to_string(),
                        id: String::new(),
                    };
                    let req = PublishRequest {
                        topic: "soak:all".into(),
                        message: Some(m),
                    };
                    match client.publish(authed(req, &args.api_key)).await {
                        Ok(_) => {
                            sent_p.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("publish failed: {e}");
                            c.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                u_due += args.unicast_rate as f64 / 100.0;
                while b_due >= 1.0 {
                    b_due -= 1.0;
                    let seq = sent_b.load(Ordering::Relaxed);
                    let m = Message {
                        r#type: "soak.b".into(),
                        payload_json: json!({"seq": seq}).to_string(),
                        id: String::new(),
                    };
                    match client
                        .broadcast(authed(BroadcastRequest { message: Some(m) }, &args.api_key))
                        .await
                    {
                        Ok(_) => {
                            sent_b.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("broadcast failed: {e}");
                            c.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                while u_due >= 1.0 && args.stable > 0 {
                    u_due -= 1.0;
                    let i = rr % args.stable;
                    rr += 1;
                    let seq = sent_u[i].load(Ordering::Relaxed);
                    let m = Message {
                        r#type: "soak.u".into(),
                        payload_json: json!({"seq": seq}).to_string(),
                        id: String::new(),
                    };
                    let req = SendToUserRequest {
                        user_id: format!("stable-{i}"),
                        message: Some(m),
                    };
                    match client.send_to_user(authed(req, &args.api_key)).await {
                        Ok(_) => {
                            sent_u[i].fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("send failed: {e}");
                            c.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        })
    };

    let mut rss_peak = rss_stable;
    while Instant::now() < deadline {
        tokio::time::sleep(
            Duration::from_secs(30).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
        let rss = rss_kib(args.server_pid);
        rss_peak = rss_peak.max(rss);
        let stats = client
            .get_stats(authed(GetStatsRequest {}, &args.api_key))
            .await
            .map(|r| r.into_inner());
        println!(
            "[{:>5.0}s] server connections {} RSS {rss} KiB | delivered {} | churn connects {} | out of order {} | errors {} | unexpected closes {}",
            started.elapsed().as_secs_f64(),
            stats.as_ref().map(|s| s.connections).unwrap_or(0),
            c.delivered.load(Ordering::Relaxed),
            c.churn_connects.load(Ordering::Relaxed),
            c.out_of_order.load(Ordering::Relaxed),
            c.errors.load(Ordering::Relaxed),
            c.unexpected_closes.load(Ordering::Relaxed),
        );
    }
    publisher.await.unwrap();
    for ch in churners {
        let _ = ch.await;
    }
    let rss_loaded = rss_kib(args.server_pid);
    // Let in-flight deliveries land: wait until the delivered count stops moving (bounded).
    let mut last = u64::MAX;
    for _ in 0..50 {
        let now = c.delivered.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_tx.send_replace(true);
    let mut lost = 0u64;
    for (i, h) in stable.into_iter().enumerate() {
        let seen = h.await.unwrap();
        let want_b = sent_b.load(Ordering::Relaxed);
        let want_u = sent_u[i].load(Ordering::Relaxed);
        let want_p = sent_p.load(Ordering::Relaxed);
        lost += want_b.saturating_sub(seen.broadcasts)
            + want_u.saturating_sub(seen.unicasts)
            + want_p.saturating_sub(seen.publications);
    }
    // Wait (bounded) for the server to have no connection left, then read its RSS.
    for _ in 0..100 {
        let n = client
            .get_stats(authed(GetStatsRequest {}, &args.api_key))
            .await
            .map(|r| r.into_inner().connections);
        if n.ok() == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The server gives memory back at most every 10 s: sample for 15 s and keep the last.
    let mut rss_end = rss_kib(args.server_pid);
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_end = rss_kib(args.server_pid);
    }
    println!("server RSS 15 s after the last connection closed: {rss_end} KiB");
    let summary = json!({
        "minutes": args.minutes,
        "stable_connections": args.stable,
        "churners": args.churn,
        "churn_connects": c.churn_connects.load(Ordering::Relaxed),
        "broadcasts_sent": sent_b.load(Ordering::Relaxed),
        "unicasts_sent": sent_u.iter().map(|s| s.load(Ordering::Relaxed)).sum::<u64>(),
        "publications_sent": sent_p.load(Ordering::Relaxed),
        "delivered": c.delivered.load(Ordering::Relaxed),
        "lost": lost,
        "out_of_order": c.out_of_order.load(Ordering::Relaxed),
        "errors": c.errors.load(Ordering::Relaxed),
        "unexpected_closes": c.unexpected_closes.load(Ordering::Relaxed),
        "rss_kib": {"start": rss_start, "stable_open": rss_stable, "peak": rss_peak, "loaded_end": rss_loaded, "after_close": rss_end},
    });
    println!("SUMMARY {summary}");
}
