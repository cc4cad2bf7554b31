//! Operations: health, readiness, metrics, and graceful shutdown (1001 to every socket,
//! UNAVAILABLE to every watcher, in time).

use boundary_realtime::proto::*;
use futures_util::StreamExt;

use crate::common::*;
use crate::delivery::{http_get, http_get_raw, http_get_status};
use boundary_realtime::server::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let s = start().await;
    assert_eq!(http_get(&s, "/healthz").await, "ok\n");
    assert_eq!(http_get(&s, "/readyz").await, "ready\n");
    let mut client = s.client().await;
    let _a = s.connect("a", &[]).await;
    let _b = s.connect("b", &[]).await;
    assert_eq!(s.upgrade_status("?token=bad", None).await, 401);
    client
        .broadcast(authed(BroadcastRequest {
            message: msg("t", "1"),
        }))
        .await
        .unwrap();
    let _ = client
        .get_connection(authed(GetConnectionRequest {
            connection_id: "x".into(),
        }))
        .await;
    let m = http_get(&s, "/metrics").await;
    for line in [
        "realtime_connections 2",
        "realtime_users 2",
        "realtime_messages_sent_total 2",
        "realtime_messages_dropped_total 0",
        "realtime_handshakes_total{outcome=\"ok\"} 2",
        "realtime_handshakes_total{outcome=\"malformed\"} 1",
        "realtime_grpc_requests_total{method=\"Broadcast\",code=\"OK\"} 1",
        "realtime_grpc_requests_total{method=\"GetConnection\",code=\"NOT_FOUND\"} 1",
        "realtime_grpc_request_duration_seconds_count{method=\"Broadcast\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
    }
    assert!(!m.contains(SECRET) && !m.contains(API_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_sockets_with_1001_and_ends_watchers() {
    let mut s = start().await;
    let mut client = s.client().await;
    let mut watch = client
        .watch_events(authed(WatchEventsRequest { kinds: vec![] }))
        .await
        .unwrap()
        .into_inner();
    let mut a = s.connect("a", &[]).await;
    let mut b = s.connect("b", &[]).await;
    let pending = s.connect_bare().await; // still authenticating
    assert!(matches!(watch.next().await, Some(Ok(_))));
    assert!(matches!(watch.next().await, Some(Ok(_))));
    let http = s.http;
    let started = std::time::Instant::now();
    // The clients read while the server shuts down: shutdown waits for their close replies.
    let mut pending = pending;
    let (clean, closes) = tokio::join!(s.shutdown(), async {
        let mut codes = Vec::new();
        for ws in [&mut a, &mut b, &mut pending] {
            codes.push(ws.next_close().await.0);
        }
        codes
    });
    assert!(clean, "shut down within shutdown_timeout_ms");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(closes, [1001, 1001, 1001]);
    // The watcher saw both disconnects, then UNAVAILABLE.
    let mut status = None;
    while let Some(item) = tokio::time::timeout(WAIT, watch.next()).await.unwrap() {
        if let Err(e) = item {
            status = Some(e);
            break;
        }
    }
    assert_eq!(status.expect("a status").code(), tonic::Code::Unavailable);
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(http).await.is_err());
}

#[tokio::test]
async fn the_demo_page_is_served_only_when_enabled() {
    let s = start().await;
    assert_eq!(http_get_status(&s, "/demo").await.0, 404);
    assert_eq!(http_get_status(&s, "/demo/realtime.js").await.0, 404);

    let mut c = config();
    c.http.demo = true;
    let s = start_with(c).await;
    let page = http_get_raw(&s, "/demo").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("content-type: text/html"), "{page}");
    assert!(
        page.contains("content-security-policy: default-src 'self'"),
        "{page}"
    );
    assert!(page.contains(r#"<script type="module" src="/demo/demo.js">"#));
    let script = http_get(&s, "/demo/demo.js").await;
    assert!(script.contains(r#"import { RealtimeClient } from "/demo/realtime.js""#));
    let lib = http_get_raw(&s, "/demo/realtime.js").await;
    assert!(lib.contains("access-control-allow-origin: *"), "{lib}");
    assert!(lib.contains("export class RealtimeClient"));
}

/// Shutdown as the process sees it: `Server::shutdown` returns, then the runtime is dropped
/// with whatever tasks are left (as when `main` returns). Every socket that was upgraded,
/// including one told `connected` a moment ago and one still registering, must have been sent
/// 1001 by then; a task cut off before its close frame shows as 1006 at the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_socket_gets_1001_before_shutdown_returns_even_one_still_registering() {
    for round in 0..5 {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let node = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let clean = rt.block_on(async move {
                let server = Server::start(config()).await.expect("server starts");
                addr_tx.send(server.http_addr).unwrap();
                let _ = stop_rx.await;
                server.shutdown().await
            });
            // What is still running is abandoned, as at process exit.
            rt.shutdown_background();
            clean
        });
        let http = addr_rx.recv().unwrap();
        let url = format!("ws://{http}/ws?token={}", token("u", &[]));
        let url = &url;
        let mut told = Vec::new();
        for _ in 0..60 {
            let (stream, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            let mut ws = Ws {
                stream,
                id: String::new(),
            };
            assert_eq!(ws.next_json().await["op"], "connected");
            told.push(ws);
        }
        // Upgraded, but not waited for: shutdown comes while it registers.
        let (stream, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut registering = Ws {
            stream,
            id: String::new(),
        };
        stop_tx.send(()).unwrap();
        // Read concurrently, as independent browsers would (each replies to its close).
        let told = told.into_iter().map(|mut ws| {
            tokio::spawn(async move {
                let (code, _, frames) = ws.next_close().await;
                (code, frames.len())
            })
        });
        let told: Vec<_> = futures_util::future::join_all(told).await;
        for closed in told {
            assert_eq!((round, closed.unwrap()), (round, (1001, 0)));
        }
        let (code, _, frames) = registering.next_close().await;
        assert_eq!((round, code), (round, 1001), "{frames:?}");
        assert!(frames.iter().all(|f| f["op"] == "connected"), "{frames:?}");
        let clean = tokio::task::spawn_blocking(move || node.join().unwrap())
            .await
            .unwrap();
        assert!(clean, "shut down within shutdown_timeout_ms");
    }
}
