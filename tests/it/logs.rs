//! What the log says about refusals, read from a real `serve` process's JSON lines: a refused
//! upgrade, a refused API call and a rate-limited close each say why, from where and (when
//! known) for whom, never with the token or the key; past ten a second they are summarized.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// The JSON log lines that arrive within `wait` and match `pick`.
fn lines_until(
    logs: &Receiver<String>,
    wait: Duration,
    mut done: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let end = Instant::now() + wait;
    let mut got = Vec::new();
    while Instant::now() < end && !done(&got) {
        if let Ok(line) = logs.recv_timeout(Duration::from_millis(50)) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                got.push(v);
            }
        }
    }
    got
}

fn message(v: &Value) -> &str {
    v["fields"]["message"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_logged_with_why_and_who_and_never_a_secret() {
    let (_child, http, grpc, logs) = spawn_serve(&[("REALTIME_LIMITS__CLIENT_RATE", "2")]);
    let s = TestServer {
        server: None,
        http: http.parse().unwrap(),
        grpc: grpc.parse().unwrap(),
    };
    let forged = format!("{}x", token("mallory", &[]));
    assert_eq!(
        s.upgrade_status(&format!("?token={forged}"), None).await,
        401
    );
    let mut client = s.client().await;
    let mut wrong = tonic::Request::new(boundary_realtime::proto::GetStatsRequest {});
    let wrong_key = "Bearer not-the-key-0123456789";
    wrong
        .metadata_mut()
        .insert("authorization", wrong_key.parse().unwrap());
    assert!(client.get_stats(wrong).await.is_err());
    // A client that sends faster than its rate (2 a second, burst 4) is closed with 4029.
    let mut ws = s.connect("speedy", &[]).await;
    for i in 0..10 {
        ws.send_text(&format!(r#"{{"op":"ping","ref":{i}}}"#)).await;
    }
    assert_eq!(ws.next_close().await.0, 4029);
    let got = lines_until(&logs, WAIT, |got| {
        got.iter().any(|v| v["fields"]["code"] == 4029)
            && got.iter().any(|v| message(v) == "API call refused")
            && got.iter().any(|v| message(v) == "upgrade refused")
    });
    let upgrade = got
        .iter()
        .find(|v| message(v) == "upgrade refused")
        .expect("logged");
    assert_eq!(upgrade["level"], "INFO");
    assert_eq!(upgrade["fields"]["code"], 401);
    let reason = upgrade["fields"]["reason"].as_str().unwrap();
    assert!(reason.contains("signature"), "{upgrade}");
    assert!(upgrade["fields"]["remote_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let api = got
        .iter()
        .find(|v| message(v) == "API call refused")
        .expect("logged");
    assert_eq!(
        (
            api["fields"]["code"].as_u64(),
            api["fields"]["reason"].as_str()
        ),
        (Some(401), Some("invalid API key"))
    );
    let closed = got
        .iter()
        .find(|v| v["fields"]["code"] == 4029)
        .expect("logged");
    assert_eq!(message(closed), "connection closed");
    assert_eq!(closed["fields"]["user_id"], "speedy");
    assert_eq!(closed["fields"]["reason"], "rate limited");
    let all: String = got.iter().map(|v| v.to_string()).collect();
    assert!(!all.contains(&forged) && !all.contains(SECRET) && !all.contains("not-the-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_ten_refusals_a_second_the_rest_are_summarized() {
    let (_child, http, grpc, logs) = spawn_serve(&[]);
    let s = TestServer {
        server: None,
        http: http.parse().unwrap(),
        grpc: grpc.parse().unwrap(),
    };
    let started = Instant::now();
    for _ in 0..30 {
        assert_eq!(s.upgrade_status("?token=garbage", None).await, 401);
    }
    let burst = started.elapsed();
    let counted = |got: &[Value]| {
        let lines = got
            .iter()
            .filter(|v| message(v) == "upgrade refused")
            .count() as u64;
        let summarized: u64 = got
            .iter()
            .filter_map(|v| v["fields"]["not_logged"].as_u64())
            .sum();
        (lines, summarized)
    };
    let got = lines_until(&logs, WAIT, |got| {
        let (lines, summarized) = counted(got);
        lines + summarized == 30
    });
    let (lines, summarized) = counted(&got);
    assert_eq!(lines + summarized, 30, "every refusal logged or counted");
    // The burst took `burst`: at most ten lines in each second it touched.
    let seconds = burst.as_secs() + 2;
    assert!(lines <= 10 * seconds, "{lines} lines in {burst:?}");
    assert!(summarized >= 1, "a summary line");
}
