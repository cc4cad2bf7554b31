//! Publish fan-out measurement (not part of CI; see docs/benchmarks.md): opens `--subscribers`
//! WebSocket connections subscribed to one topic, then makes `--publishes` Publish calls one
//! after another, each waiting until every subscriber has the publication. Reports the time
//! per publish (median and worst), deliveries per second, and the server's CPU per delivery
//! (from /proc/<server-pid>/stat).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boundary_realtime::proto::realtime_service_client::RealtimeServiceClient;
use boundary_realtime::proto::{Message, PublishRequest};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "ws://127.0.0.1:18080/ws")]
    ws_url: String,
    #[arg(long, default_value = "http://127.0.0.1:15051")]
    grpc_url: String,
    #[arg(long)]
    api_key: String,
    #[arg(long)]
    secret: String,
    #[arg(long)]
    server_pid: u32,
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    #[arg(long, default_value_t = 200)]
    publishes: u64,
}

fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    t / 100.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let received = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    let opened = Instant::now();
    for i in 0..args.subscribers {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub": format!("fan-{i}"), "exp": exp, "topics": ["fan"]}),
            &jsonwebtoken::EncodingKey::from_secret(args.secret.as_bytes()),
        )
        .unwrap();
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("{}?token={token}", args.ws_url))
                .await
                .expect("connect");
        ws.next().await; // connected
        ws.send(WsMessage::Text(
            r#"{"op":"subscribe","topic":"fan","ref":"s"}"#.into(),
        ))
        .await
        .unwrap();
        ws.next().await; // subscribed
        let received = received.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                if matches!(m, WsMessage::Text(_)) {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    println!(
        "{} subscribers in {:.1}s",
        args.subscribers,
        opened.elapsed().as_secs_f64()
    );
    let mut client = RealtimeServiceClient::connect(args.grpc_url.clone())
        .await
        .unwrap();
    let payload = json!({"pad": "x".repeat(80)}).to_string();
    let publish_req = || {
        let mut req = tonic::Request::new(PublishRequest {
            topic: "fan".into(),
            message: Some(Message {
                r#type: "fan".into(),
                payload_json: payload.clone(),
                id: String::new(),
            }),
        });
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", args.api_key).parse().unwrap(),
        );
        req
    };
    let cpu0 = cpu_secs(args.server_pid);
    let started = Instant::now();
    let mut per_publish = Vec::with_capacity(args.publishes as usize);
    for n in 1..=args.publishes {
        let t0 = Instant::now();
        let req = publish_req();
        let r = client.publish(req).await.unwrap().into_inner();
        assert_eq!(r.connections as usize, args.subscribers);
        let want = n * args.subscribers as u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while received.load(Ordering::Relaxed) < want {
            assert!(Instant::now() < deadline, "deliveries stalled");
            // Poll gently: a spinning client would take the server's CPU on a small box.
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        per_publish.push(t0.elapsed());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_secs(args.server_pid) - cpu0;
    per_publish.sort();
    let deliveries = args.publishes * args.subscribers as u64;
    println!(
        "{} publishes to {} subscribers: median {:.2} ms, worst {:.2} ms per publish (until all have it); {:.0} deliveries/s; server CPU {:.2} s = {:.2} us per delivery",
        args.publishes,
        args.subscribers,
        per_publish[per_publish.len() / 2].as_secs_f64() * 1e3,
        per_publish.last().unwrap().as_secs_f64() * 1e3,
        deliveries as f64 / elapsed,
        cpu,
        cpu * 1e6 / deliveries as f64
    );

    // Back to back: every publish sent without waiting, then wait for all deliveries. Frames
    // queue up per connection and are written several per syscall.
    let base = received.load(Ordering::Relaxed);
    let cpu0 = cpu_secs(args.server_pid);
    let started = Instant::now();
    for _ in 0..args.publishes {
        let req = publish_req();
        client.publish(req).await.unwrap();
    }
    let want = base + deliveries;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) < want {
        assert!(Instant::now() < deadline, "deliveries stalled");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_secs(args.server_pid) - cpu0;
    println!(
        "{} publishes back to back to {} subscribers: all delivered in {:.2} s; {:.0} deliveries/s; server CPU {:.2} s = {:.2} us per delivery",
        args.publishes,
        args.subscribers,
        elapsed,
        deliveries as f64 / elapsed,
        cpu,
        cpu * 1e6 / deliveries as f64
    );
}
