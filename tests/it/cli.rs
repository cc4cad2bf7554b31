//! The binary itself: `--version`, `token`, configuration errors, and `serve` stopping on
//! SIGTERM with 1001 to its sockets and exit code 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

#[test]
fn version_prints_the_crate_version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("boundary-realtime {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn token_mints_a_verifiable_token_with_roles_and_topics() {
    let out = Command::new(BIN)
        .args([
            "token", "--sub", "alice", "--role", "admin", "--role", "ops", "--topic", "orders:*",
            "--ttl", "120",
        ])
        .env("REALTIME_JWT__SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "the token alone on stdout");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &v,
    )
    .unwrap();
    assert_eq!(data.claims["sub"], "alice");
    assert_eq!(data.claims["roles"], serde_json::json!(["admin", "ops"]));
    assert_eq!(data.claims["topics"], serde_json::json!(["orders:*"]));
    let ttl = data.claims["exp"].as_i64().unwrap() - data.claims["iat"].as_i64().unwrap();
    assert_eq!(ttl, 120);
}

#[test]
fn token_without_a_secret_says_so_and_fails() {
    let out = Command::new(BIN)
        .args(["token", "--sub", "a"])
        .env_remove("REALTIME_JWT__SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("jwt.secret"));
}

#[test]
fn invalid_configuration_stops_start_up_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("rt-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("[limits]\nsend_queue = 0\n", "limits.send_queue"),
        ("[limits]\nsend_queue = \"many\"\n", "limits.send_queue"),
        ("[http]\nlisten = \"somewhere\"\n", "http.listen"),
        ("[jwt]\nalgorithm = \"HS999\"\n", "jwt.algorithm"),
        ("[limits]\nmax_frame_byte = 10\n", "max_frame_byte"),
    ];
    for (i, (toml, key)) in cases.iter().enumerate() {
        let path = dir.join(format!("c{i}.toml"));
        std::fs::write(
            &path,
            format!("[grpc]\napi_keys = [\"{API_KEY}\"]\n[node]\nid = \"x\"\n{toml}"),
        )
        .unwrap();
        let out = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .env("REALTIME_JWT__SECRET", SECRET)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{toml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{toml}: {err}");
    }
    // from the environment too
    let out = Command::new(BIN)
        .args(["serve"])
        .env("REALTIME_JWT__SECRET", SECRET)
        .env("REALTIME_GRPC__API_KEYS", API_KEY)
        .env("REALTIME_LIMITS__CLIENT_RATE", "fast")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.client_rate"));
    let out = Command::new(BIN)
        .args(["serve"])
        .env("REALTIME_JWT__SECRET", SECRET)
        .env_remove("REALTIME_GRPC__API_KEYS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("grpc.api_keys"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_on_sigterm_with_1001_and_exit_0_and_logs_no_secret() {
    let (mut child, http, grpc, logs) = spawn_serve(&[]);
    let s = TestServer {
        server: None,
        http: http.parse().unwrap(),
        grpc: grpc.parse().unwrap(),
    };
    let mut ws = s.connect("alice", &[]).await;
    // A refused token and a gRPC call with a wrong key, so the logs had a chance to leak them.
    assert_eq!(
        s.upgrade_status(&format!("?token={}x", token("u", &[])), None)
            .await,
        401
    );
    let mut client = s.client().await;
    let _ = client
        .get_stats(tonic::Request::new(
            boundary_realtime::proto::GetStatsRequest {},
        ))
        .await;
    let st = client
        .get_stats(authed(boundary_realtime::proto::GetStatsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((st.connections, st.node_id.as_str()), (1, "bin"));

    let started = std::time::Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    let (code, _, _) = ws.next_close().await;
    assert_eq!(code, 1001);
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "exited within shutdown_timeout_ms"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    let all: Vec<String> = logs.try_iter().collect();
    let text = all.join("\n");
    assert!(text.contains("shutting down"), "{text}");
    assert!(
        !text.contains(SECRET) && !text.contains(API_KEY) && !text.contains("eyJ"),
        "a secret reached the logs:\n{text}"
    );
}

/// `dev` prints everything the README's quick start uses, and it works as printed: a browser
/// on another origin connects with the printed token (first frame), and the printed API key
/// sends it a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_prints_a_working_quick_start() {
    let mut child = Reaped(
        Command::new(BIN)
            .args([
                "dev",
                "--http-listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
            ])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut ws_url, mut grpc, mut key, mut token) = (None, None, None, None);
    let deadline = std::time::Instant::now() + WAIT;
    while token.is_none() || key.is_none() || ws_url.is_none() || grpc.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("banner");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["WebSocket", url, ..] => ws_url = Some(url.to_string()),
            ["gRPC", addr, ..] => grpc = Some(addr.to_string()),
            ["API", "key", k] => key = Some(k.to_string()),
            ["Token", t] => token = Some(t.to_string()),
            _ => {}
        }
    }
    let (ws_url, grpc, key, token) = (ws_url.unwrap(), grpc.unwrap(), key.unwrap(), token.unwrap());
    // a browser console on some other page: a foreign Origin, token in the first frame
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        ws_url.as_str(),
    )
    .unwrap();
    req.headers_mut()
        .insert("origin", "https://example.com".parse().unwrap());
    let (stream, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("dev accepts any origin");
    let mut ws = Ws {
        stream,
        id: String::new(),
    };
    ws.send_text(&serde_json::json!({"op":"auth","token":token}).to_string())
        .await;
    let connected = ws.next_json().await;
    assert_eq!(
        (connected["op"].as_str(), connected["user_id"].as_str()),
        (Some("connected"), Some("dev-user"))
    );
    let mut client =
        boundary_realtime::proto::realtime_service_client::RealtimeServiceClient::connect(format!(
            "http://{grpc}"
        ))
        .await
        .unwrap();
    let mut req = tonic::Request::new(boundary_realtime::proto::SendToUserRequest {
        user_id: "dev-user".into(),
        message: msg("hello", r#"{"text":"hi"}"#),
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    assert_eq!(
        client
            .send_to_user(req)
            .await
            .unwrap()
            .into_inner()
            .connections,
        1
    );
    let m = ws.next_json().await;
    assert_eq!(
        (m["type"].as_str(), m["payload"]["text"].as_str()),
        (Some("hello"), Some("hi"))
    );
    // The printed commands work as pasted: first curl to the HTTP JSON API, then the mint
    // command (it names this binary, not a PATH entry).
    let mut banner = Vec::new();
    let mint = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("the mint command");
        if line.contains("token --sub alice") {
            break line;
        }
        banner.push(line);
    };
    let start = banner
        .iter()
        .position(|l| l.trim_start().starts_with("curl "))
        .expect("a curl command first");
    let end = start
        + banner[start..]
            .iter()
            .position(|l| l.contains("/api/v1/SendToUser"))
            .expect("to SendToUser");
    let curl = banner[start..=end].join("\n");
    let out = Command::new("sh")
        .args(["-c", &format!("{curl} -sS")])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{curl}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(answer["connections"], 1, "{answer}");
    let m = ws.next_json().await;
    assert_eq!(
        (m["type"].as_str(), m["payload"]["text"].as_str()),
        (Some("hello"), Some("hi"))
    );
    let out = Command::new("sh")
        .args(["-c", mint.trim()])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{mint}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).split('.').count(),
        3,
        "a JWT"
    );
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let mut child = Reaped(serve_command("human").spawn().unwrap());
    let stderr = child.0.stderr.take().unwrap();
    let line = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("listening"))
        .expect("a listening line");
    assert!(!line.contains('\u{1b}'), "{line:?}");
}

#[test]
fn token_refuses_a_zero_ttl() {
    let out = Command::new(BIN)
        .args(["token", "--sub", "alice", "--ttl", "0"])
        .env("REALTIME_JWT__SECRET", SECRET)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ttl"), "{err}");
    assert!(out.stdout.is_empty(), "no token printed");
}

#[test]
fn the_example_configuration_loads_and_check_config_says_so() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/realtime.example.toml");
    let c = boundary_realtime::config::load_unchecked(Some(std::path::Path::new(example)))
        .expect("the shipped example parses");
    let mut defaults = boundary_realtime::config::Config::default();
    defaults.jwt.secret = c.jwt.secret.clone();
    defaults.grpc.api_keys = c.grpc.api_keys.clone();
    assert_eq!(
        serde_json::to_value(&c).unwrap(),
        serde_json::to_value(&defaults).unwrap(),
        "every other key is at its default"
    );
    // With its two placeholders replaced (here from the environment), it is valid.
    let out = Command::new(BIN)
        .args(["serve", "--check-config", "--config", example])
        .env("REALTIME_JWT__SECRET", SECRET)
        .env("REALTIME_GRPC__API_KEYS", API_KEY)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("configuration is valid"), "{said}");
    // Copied unchanged, its placeholders are refused, by serve and by token: anyone who read
    // the example could mint tokens or call the API with them.
    let out = Command::new(BIN)
        .args(["serve", "--check-config", "--config", example])
        .env_remove("REALTIME_JWT__SECRET")
        .env_remove("REALTIME_GRPC__API_KEYS")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("grpc.api_keys: holds the example file's placeholder")
            && err.contains("jwt.secret: holds the example file's placeholder"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["token", "--config", example, "--sub", "alice"])
        .env_remove("REALTIME_JWT__SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no token printed");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("jwt.secret holds the example file's placeholder"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A bad value is reported and nothing starts.
    let out = Command::new(BIN)
        .args(["serve", "--check-config", "--config", example])
        .env("REALTIME_LIMITS__SEND_QUEUE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.send_queue"));
}

#[test]
fn a_log_filter_that_is_not_levels_is_refused_naming_where_it_came_from() {
    let check = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--check-config"])
            .args(args)
            .env("REALTIME_JWT__SECRET", SECRET)
            .env("REALTIME_GRPC__API_KEYS", API_KEY)
            .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = check(&["--log-level", "verbose"], &[]);
    assert!(!ok && err.contains("--log-level: \"verbose\""), "{err}");
    let (ok, err) = check(&[], &[("RUST_LOG", "nonsense[[")]);
    assert!(!ok && err.contains("RUST_LOG: \"nonsense[[\""), "{err}");
    let (ok, err) = check(&[], &[("REALTIME_LOG__LEVEL", "loud")]);
    assert!(!ok && err.contains("log.level: \"loud\""), "{err}");
    // The flag wins over a bad RUST_LOG, which is then not used; good filters pass.
    let (ok, err) = check(
        &["--log-level", "info,boundary_realtime=debug"],
        &[("RUST_LOG", "x[[")],
    );
    assert!(ok, "{err}");
}
