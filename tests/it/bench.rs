//! The load tool's smoke run: `bench` against an in-process server with a few connections,
//! checking the tool's own counting against what the calls must deliver and what the server
//! says it sent. No performance figure is asserted here.

use boundary_realtime::proto::GetStatsRequest;
use boundary_realtime_bench::{self as bench, BenchError, Options};
use clap::Parser;

use crate::common::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    opts: Options,
}

fn options(server: &TestServer, args: &[&str]) -> Options {
    options_with(&server.ws_url(), &format!("http://{}", server.grpc), args)
}

/// Options for `ws` (one URL, or several separated by commas) and one gRPC URL.
pub fn options_with(ws: &str, grpc: &str, args: &[&str]) -> Options {
    let mut argv = vec![
        "bench",
        "--ws-url",
        ws,
        "--grpc-url",
        grpc,
        "--api-key",
        API_KEY,
        "--secret",
        SECRET,
        "--quiet",
        "--timeout",
        "60",
    ];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv)
        .expect("valid bench arguments")
        .opts
}

async fn messages_sent(server: &TestServer) -> u64 {
    let mut client = server.client().await;
    client
        .get_stats(authed(GetStatsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .messages_sent
}

/// Each mode with 12 connections in 3 groups of 4 and 9 calls: the deliveries it must count.
pub const SMOKE_ARGS: [&str; 6] = ["--conns", "12", "--groups", "3", "--messages", "9"];
pub const SMOKE_CASES: [(&str, u64); 4] = [
    ("broadcast", 9 * 12),
    ("user", 9),
    ("role", 9 * 4),
    ("topic", 9 * 4),
];

/// The topic mode over PublishBatch and over one PublishStream delivers the same as unary
/// Publish: every message once, in order, no error.
#[tokio::test]
async fn topic_mode_publishes_through_batches_and_a_stream_too() {
    let server = start().await;
    for form in [&["--publish-batch", "4"][..], &["--publish-stream"][..]] {
        let mut args = vec!["topic"];
        args.extend(SMOKE_ARGS);
        args.extend(form);
        let r = bench::run(&options(&server, &args))
            .await
            .unwrap_or_else(|e| panic!("{form:?}: {e}"));
        assert_eq!(r.calls.made, 9, "{form:?}: counted in messages");
        assert_eq!(r.calls.errors, 0, "{form:?}: {:?}", r.calls.first_error);
        assert_eq!(
            (
                r.deliveries.expected,
                r.deliveries.received,
                r.deliveries.lost
            ),
            (36, 36, 0),
            "{form:?}"
        );
        assert_eq!(r.deliveries.out_of_order, 0, "{form:?}");
    }
    let mut args = vec!["user", "--publish-stream"];
    args.extend(SMOKE_ARGS);
    assert!(matches!(
        bench::run(&options(&server, &args)).await,
        Err(BenchError::Usage(_))
    ));
}

#[tokio::test]
async fn every_mode_counts_exactly_what_its_calls_deliver() {
    let server = start().await;
    for (mode, expected) in SMOKE_CASES {
        let before = messages_sent(&server).await;
        let mut args = vec![mode];
        args.extend(SMOKE_ARGS);
        let opts = options(&server, &args);
        let r = bench::run(&opts)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let after = messages_sent(&server).await;
        assert_eq!(r.connect.opened, 12, "{mode}");
        assert_eq!(r.calls.made, 9, "{mode}");
        assert_eq!(r.calls.errors, 0, "{mode}: {:?}", r.calls.first_error);
        assert_eq!(r.deliveries.expected, expected, "{mode}");
        assert_eq!(r.deliveries.received, expected, "{mode}");
        assert_eq!(r.deliveries.lost, 0, "{mode}");
        assert_eq!(r.deliveries.out_of_order, 0, "{mode}");
        assert_eq!(r.deliveries.duplicates, 0, "{mode}");
        // The server queued exactly what the tool counted.
        assert_eq!(after - before, expected, "{mode}: server count");
        assert!(
            r.latency_ms.p50 > 0.0 && r.latency_ms.p50 <= r.latency_ms.max,
            "{mode}"
        );
        assert!(
            r.closed_by_server.is_empty(),
            "{mode}: {:?}",
            r.closed_by_server
        );
        // Every connection was closed by the tool at the end.
        eventually("the tool's connections to close", || async {
            server.hub().local().registry.is_empty()
        })
        .await;
    }
}

/// Resume: 12 clients miss 3 messages each while away, then all come back from their
/// position: every one recovered, every missed message once and in order.
#[tokio::test]
async fn resume_mode_brings_every_client_back_with_what_it_missed() {
    let server = start().await;
    let args = [
        "resume",
        "--conns",
        "12",
        "--messages",
        "36",
        "--in-flight",
        "4",
    ];
    let r = bench::run(&options(&server, &args)).await.unwrap();
    let resume = r.resume.as_ref().expect("a resume section");
    assert_eq!(
        (resume.clients, resume.recovered, resume.not_recovered),
        (12, 12, 0)
    );
    assert_eq!(r.calls.errors, 0, "{:?}", r.calls.first_error);
    assert_eq!(
        (
            r.deliveries.expected,
            r.deliveries.received,
            r.deliveries.lost,
            r.deliveries.out_of_order,
            r.deliveries.duplicates
        ),
        (36, 36, 0, 0, 0)
    );
    assert!(resume.drain_seconds >= resume.reconnect_seconds);
    assert!(r.human().contains("12 clients back: 12 recovered, 0 not"));
    // Not for the Centrifugo protocols.
    let args = ["resume", "--protocol", "centrifuge-json"];
    assert!(matches!(
        bench::run(&options(&server, &args)).await,
        Err(BenchError::Usage(_))
    ));
}

#[tokio::test]
async fn a_paced_run_reports_its_schedule_and_json() {
    let server = start().await;
    let pid = std::process::id().to_string();
    let opts = options(
        &server,
        &[
            "user",
            "--conns",
            "5",
            "--messages",
            "20",
            "--rate",
            "200",
            "--server-pid",
            &pid,
        ],
    );
    let r = bench::run(&opts).await.unwrap();
    assert_eq!(r.deliveries.received, 20);
    // 20 calls at 200/s take about 95 ms.
    assert!(r.calls.seconds >= 0.09, "{}", r.calls.seconds);
    assert!(r.server.rss_kib_before.is_some() && r.server.cpu_us_per_delivery.is_some());
    let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
    assert_eq!(json["mode"], "user");
    assert_eq!(json["deliveries"]["received"], 20);
    assert_eq!(json["deliveries"]["lost"], 0);
    assert!(r.human().contains("deliveries  20 of 20"), "{}", r.human());
}

#[tokio::test]
async fn idle_holds_the_connections() {
    let server = start().await;
    let opts = options(&server, &["idle", "--conns", "8", "--hold", "0.2"]);
    let r = bench::run(&opts).await.unwrap();
    assert_eq!(r.connect.opened, 8);
    assert!(r.connect.per_second > 0.0);
    assert_eq!(r.deliveries.expected, 0);
}

#[tokio::test]
async fn tokens_can_come_from_a_command() {
    let server = start().await;
    let mut opts = options(
        &server,
        &["role", "--conns", "4", "--groups", "2", "--messages", "4"],
    );
    opts.secret = None;
    // The binary's own `token` command, given the bench identity of each connection.
    opts.token_cmd = Some(format!(
        r#"REALTIME_JWT__SECRET={SECRET} '{}' token --sub "$BENCH_USER" --role "$BENCH_ROLE" --topic "$BENCH_TOPIC""#,
        env!("CARGO_BIN_EXE_boundary-realtime")
    ));
    let r = bench::run(&opts).await.unwrap();
    assert_eq!(r.connect.opened, 4);
    assert_eq!(r.deliveries.received, 8);
    assert_eq!(r.deliveries.lost, 0);

    opts.token_cmd = Some("exit 3".into());
    match bench::run(&opts).await {
        Err(BenchError::Usage(m)) => assert!(m.contains("--token-cmd printed no token"), "{m}"),
        other => panic!("expected a token-cmd error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refused_token_or_key_and_an_absent_server_are_clear_errors() {
    let server = start().await;
    let mut opts = options(&server, &["idle", "--conns", "2"]);
    opts.secret = Some("not-the-server-secret-at-all".into());
    match bench::run(&opts).await {
        Err(BenchError::Rejected(m)) => assert!(m.contains("HTTP 401"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    let mut opts = options(&server, &["broadcast", "--conns", "2"]);
    opts.api_key = Some("not-the-api-key-0000".into());
    match bench::run(&opts).await {
        Err(BenchError::Rejected(m)) => assert!(m.contains("API key"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    let port = free_port();
    let mut opts = options(&server, &["idle", "--conns", "2"]);
    opts.ws_url = vec![format!("ws://127.0.0.1:{port}/ws")];
    match bench::run(&opts).await {
        Err(e @ BenchError::Unreachable { .. }) => {
            assert!(e.to_string().contains("Connection refused"), "{e}")
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn grpc_url_takes_host_port_and_durations_are_human() {
    let server = start().await;
    let grpc = server.grpc.to_string();
    let args = [
        "user",
        "--conns",
        "2",
        "--messages",
        "3",
        "--hold",
        "1s",
        "--drain-timeout",
        "500ms",
    ];
    let opts = options_with(&server.ws_url(), &grpc, &args);
    assert_eq!(
        (opts.hold, opts.drain_timeout, opts.timeout),
        (1.0, 0.5, 60.0)
    );
    let r = bench::run(&opts)
        .await
        .expect("host:port reaches the gRPC API");
    assert_eq!((r.calls.errors, r.deliveries.received), (0, 3));
    let bad = Cli::try_parse_from(["bench", "idle", "--hold", "soon"])
        .err()
        .expect("refused");
    assert!(bad.to_string().contains("--hold"), "{bad}");
}

/// The same smoke run over the Centrifugo endpoint, in JSON and in Protobuf.
#[tokio::test]
async fn the_centrifugo_protocols_count_exactly_too() {
    let server = start().await;
    let url = format!("ws://{}/connection/websocket", server.http);
    let grpc = format!("http://{}", server.grpc);
    for protocol in ["centrifuge-json", "centrifuge-protobuf"] {
        for (mode, expected) in SMOKE_CASES {
            let mut args = vec![mode, "--protocol", protocol];
            args.extend(SMOKE_ARGS);
            let opts = options_with(&url, &grpc, &args);
            let r = bench::run(&opts)
                .await
                .unwrap_or_else(|e| panic!("{protocol} {mode}: {e}"));
            assert_eq!(r.connect.opened, 12, "{protocol} {mode}");
            assert_eq!(r.calls.errors, 0, "{protocol} {mode}");
            assert_eq!(r.deliveries.received, expected, "{protocol} {mode}");
            assert_eq!(r.deliveries.lost, 0, "{protocol} {mode}");
            assert_eq!(r.deliveries.out_of_order, 0, "{protocol} {mode}");
            assert_eq!(r.deliveries.duplicates, 0, "{protocol} {mode}");
        }
    }
}
