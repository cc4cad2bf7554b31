//! The admin console at the HTTP level (PROTOCOL.md section 8): every route needs a session,
//! the sign-in takes an API key (five wrong ones a minute per address, then 429), the cookie's
//! attributes, the Origin rule on every state-changing request, sign-out and expiry ending the
//! session (and its live stream), a removed key ending its sessions, the same answers as the
//! HTTP JSON API, a session valid on every node of a cluster, and no secret in any answer.
//! The page itself is driven in Chromium by clients/js/e2e/admin.e2e.js.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

fn admin_config() -> boundary_realtime::config::Config {
    let mut c = config();
    c.admin.enabled = true;
    c
}

fn origin(s: &TestServer) -> String {
    format!("http://{}", s.http)
}

async fn sign_in_with(s: &TestServer, key: &str) -> Answer {
    let o = origin(s);
    http(
        s,
        "POST",
        "/admin/api/sign-in",
        &[("Origin", &o), ("Content-Type", "application/json")],
        &serde_json::json!({ "key": key }).to_string(),
    )
    .await
}

/// A session cookie signed in with the test key.
async fn signed_in(s: &TestServer) -> String {
    let a = sign_in_with(s, API_KEY).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.cookie()
}

/// A console API call with the session and a same-host Origin.
async fn console(s: &TestServer, cookie: &str, rpc: &str, body: &str) -> Answer {
    let o = origin(s);
    http(
        s,
        "POST",
        &format!("/admin/api/v1/{rpc}"),
        &[("Cookie", cookie), ("Origin", &o)],
        body,
    )
    .await
}

#[tokio::test]
async fn without_a_session_every_api_route_is_401_and_pages_lead_to_sign_in() {
    let s = start_with(admin_config()).await;
    let page = http(&s, "GET", "/admin", &[], "").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/admin/sign-in"));
    let slash = http(&s, "GET", "/admin/", &[], "").await;
    assert_eq!(
        (slash.status, slash.header("location")),
        (308, Some("/admin"))
    );
    let o = origin(&s);
    for (method, path) in [
        ("GET", "/admin/api/session"),
        ("GET", "/admin/api/overview"),
        ("GET", "/admin/api/events"),
        ("POST", "/admin/api/v1/GetStats"),
        ("POST", "/admin/api/v1/Publish"),
        ("POST", "/admin/api/sign-out"),
        ("GET", "/admin/api/no-such-thing"),
        ("GET", "/admin/api"),
    ] {
        for cookie in ["", "rt_admin=forged.token.value"] {
            let a = http(
                &s,
                method,
                path,
                &[("Cookie", cookie), ("Origin", &o)],
                "{}",
            )
            .await;
            assert_eq!(a.status, 401, "{method} {path} with {cookie:?}");
            assert_eq!(a.json()["code"], "UNAUTHENTICATED", "{method} {path}");
            assert_eq!(a.header("cache-control"), Some("no-store"));
        }
    }
    // The sign-in page and its files load without a session, under a strict policy.
    let sign_in = http(&s, "GET", "/admin/sign-in", &[], "").await;
    assert_eq!(sign_in.status, 200);
    assert!(sign_in.body.contains("/admin/assets/sign-in.js"));
    let csp = sign_in.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    for f in ["console.js", "sign-in.js", "admin.css", "icon.svg"] {
        let a = http(&s, "GET", &format!("/admin/assets/{f}"), &[], "").await;
        assert_eq!(a.status, 200, "{f}");
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
    }
    assert_eq!(
        http(&s, "GET", "/admin/assets/nope.js", &[], "")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn a_disabled_console_is_not_served() {
    let s = start().await;
    assert_eq!(http(&s, "GET", "/admin", &[], "").await.status, 404);
    assert_eq!(
        http(&s, "POST", "/admin/api/sign-in", &[], "{}")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn sign_in_sets_a_strict_cookie_and_more_than_five_wrong_keys_a_minute_get_429() {
    let s = start_with(admin_config()).await;
    let ok = sign_in_with(&s, API_KEY).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["keyIndex"], 0);
    let set = ok.header("set-cookie").unwrap();
    let attrs: Vec<&str> = set.split("; ").skip(1).collect();
    assert_eq!(
        attrs,
        [
            "Path=/admin",
            "Max-Age=28800",
            "HttpOnly",
            "SameSite=Strict"
        ],
        "not Secure without TLS: {set}"
    );
    assert!(!ok.body.contains(API_KEY));
    // A sign-in needs a same-host Origin too (no sign-in from another site's form).
    let no_origin = http(
        &s,
        "POST",
        "/admin/api/sign-in",
        &[],
        &serde_json::json!({ "key": API_KEY }).to_string(),
    )
    .await;
    assert_eq!(no_origin.status, 403);
    // Not the key's shape: 400, and it counts as no attempt.
    let o = origin(&s);
    let bad = http(&s, "POST", "/admin/api/sign-in", &[("Origin", &o)], "key=x").await;
    assert_eq!(bad.status, 400);
    for i in 0..5 {
        let wrong = sign_in_with(&s, "not-the-key-0123456789").await;
        assert_eq!(wrong.status, 401, "wrong key {i}");
        assert_eq!(wrong.json()["code"], "UNAUTHENTICATED");
        assert_eq!(wrong.header("set-cookie"), None, "no session");
    }
    // The sixth within the minute is 429, and so is the right key now: its turn comes later.
    let limited = sign_in_with(&s, "not-the-key-0123456789").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["code"], "RESOURCE_EXHAUSTED");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(sign_in_with(&s, API_KEY).await.status, 429);
    // The session signed in before still works.
    let me = http(
        &s,
        "GET",
        "/admin/api/session",
        &[("Cookie", &ok.cookie())],
        "",
    )
    .await;
    assert_eq!(me.status, 200);

    let mut c = admin_config();
    c.admin.secure_cookie = true;
    let secure = start_with(c).await;
    let set = sign_in_with(&secure, API_KEY).await;
    assert!(
        set.header("set-cookie").unwrap().ends_with("; Secure"),
        "{:?}",
        set.header("set-cookie")
    );
}

#[tokio::test]
async fn a_state_changing_request_needs_an_origin_of_this_host_or_a_listed_one() {
    let mut c = admin_config();
    c.http.allowed_origins = vec!["https://ops.example.com".into()];
    let s = start_with(c).await;
    let cookie = signed_in(&s).await;
    let publish = r#"{"topic":"news","message":{"type":"t","payload":1}}"#;
    let with = |o: &'static str| [("Cookie", cookie.clone()), ("Origin", o.to_owned())];
    for (o, want) in [
        ("", 403),
        ("https://evil.example.com", 403),
        ("null", 403),
        ("https://ops.example.com", 200),
    ] {
        let h = with(o);
        let headers: Vec<(&str, &str)> = if o.is_empty() {
            vec![("Cookie", &cookie)]
        } else {
            h.iter().map(|(k, v)| (*k, v.as_str())).collect()
        };
        let a = http(&s, "POST", "/admin/api/v1/Publish", &headers, publish).await;
        assert_eq!(a.status, want, "Origin {o:?}: {}", a.body);
        if want == 403 {
            assert_eq!(a.json()["code"], "PERMISSION_DENIED");
        }
    }
    assert_eq!(console(&s, &cookie, "Publish", publish).await.status, 200);
    // Reads need no Origin.
    let stats = http(
        &s,
        "POST",
        "/admin/api/v1/GetStats",
        &[("Cookie", &cookie)],
        "{}",
    )
    .await;
    assert_eq!(stats.status, 200);
    assert_eq!(stats.json()["nodeId"], "test");
    // Sign-out is an action.
    let out = http(
        &s,
        "POST",
        "/admin/api/sign-out",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(out.status, 403);

    // `*` in allowed_origins opens WebSockets to any page, never the console's actions.
    let mut c = admin_config();
    c.http.allowed_origins = vec!["*".into()];
    let s = start_with(c).await;
    let cookie = signed_in(&s).await;
    let a = http(
        &s,
        "POST",
        "/admin/api/v1/Publish",
        &[("Cookie", &cookie), ("Origin", "https://evil.example.com")],
        publish,
    )
    .await;
    assert_eq!(a.status, 403);
}

#[tokio::test]
async fn the_console_api_answers_as_the_http_api_does_and_acts() {
    let s = start_with(admin_config()).await;
    let cookie = signed_in(&s).await;
    let key = format!("Bearer {API_KEY}");
    for (rpc, body) in [
        (
            "SendToConnection",
            r#"{"connectionId":"nope","message":{"type":"t"}}"#,
        ),
        ("SendToUser", r#"{"userId":"","message":{"type":"t"}}"#),
        ("Publish", r#"{"topic":"news","mesage":{}}"#),
        ("WatchEvents", "{}"),
        ("Nope", "{}"),
        ("Disconnect", r#"{"userId":"u","code":1000}"#),
    ] {
        let via_console = console(&s, &cookie, rpc, body).await;
        let via_api = http(
            &s,
            "POST",
            &format!("/api/v1/{rpc}"),
            &[("Authorization", &key)],
            body,
        )
        .await;
        assert_eq!(
            (via_console.status, via_console.json()),
            (via_api.status, via_api.json()),
            "{rpc}"
        );
        assert!(via_console.status >= 400, "{rpc}: {}", via_console.body);
    }
    // Acting: a user's connections disconnected with the chosen code and reason, listed first.
    let mut ws = s.connect("ada", &[]).await;
    let list = console(&s, &cookie, "ListConnections", r#"{"userId":"ada"}"#).await;
    assert_eq!(list.status, 200);
    assert_eq!(
        list.json()["connections"][0]["connectionId"],
        ws.id.as_str()
    );
    assert_eq!(list.json()["total"], 1);
    let sent = console(
        &s,
        &cookie,
        "SendToUser",
        r#"{"userId":"ada","message":{"type":"hi","payload":{"a":1}}}"#,
    )
    .await;
    assert_eq!(sent.json()["connections"], 1);
    assert_eq!(ws.next_json().await["payload"], serde_json::json!({"a": 1}));
    let d = console(
        &s,
        &cookie,
        "Disconnect",
        &format!(
            r#"{{"connectionId":"{}","code":4321,"reason":"from the console"}}"#,
            ws.id
        ),
    )
    .await;
    assert_eq!(d.json()["disconnected"], 1);
    let (code, reason, _) = ws.next_close().await;
    assert_eq!((code, reason.as_str()), (4321, "from the console"));
    // The overview: totals from counters and each node's line.
    let o = http(&s, "GET", "/admin/api/overview", &[("Cookie", &cookie)], "").await;
    assert_eq!(o.status, 200, "{}", o.body);
    let v = o.json();
    assert_eq!(v["sample"]["totals"]["nodes"], 1);
    assert_eq!(v["sample"]["nodes"][0]["nodeId"], "test");
    assert!(v["series"].is_array());
}

/// Reads a server-sent event stream until `until` is in it (or the time is up).
async fn read_stream(
    s: &TestServer,
    cookie: &str,
    until: &str,
    act: impl std::future::Future,
) -> String {
    let mut stream = tokio::net::TcpStream::connect(s.http).await.unwrap();
    let head = format!(
        "GET /admin/api/events HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n\r\n",
        s.http
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 8192];
    // The first tick arrives, then the action, then what it causes.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut acted = Some(act);
    loop {
        if text.contains("event: stats") {
            if let Some(a) = acted.take() {
                a.await;
            }
        }
        if text.contains(until) {
            return text;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => return text,
            Ok(Ok(n)) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Ok(Err(e)) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn the_live_stream_carries_stats_and_events_and_ends_at_sign_out() {
    let s = start_with(admin_config()).await;
    let cookie = signed_in(&s).await;
    let o = origin(&s);
    let text = read_stream(&s, &cookie, "event: end", async {
        // The connection's events reach the stream before the sign-out below ends it.
        let _ws = s.connect("bob", &[]).await;
        let out = http(
            &s,
            "POST",
            "/admin/api/sign-out",
            &[("Cookie", &cookie), ("Origin", &o)],
            "",
        )
        .await;
        assert_eq!(out.status, 200);
        assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    })
    .await;
    assert!(text.contains("content-type: text/event-stream"), "{text}");
    assert!(text.contains("event: series"), "{text}");
    assert!(text.contains("event: stats"), "{text}");
    assert!(text.contains(r#""kind":"CONNECTED""#), "{text}");
    assert!(text.contains(r#""kind":"USER_ONLINE""#), "{text}");
    assert!(text.contains("event: end"), "{text}");
    // The old cookie opens nothing now.
    for path in ["/admin/api/session", "/admin/api/overview"] {
        let a = http(&s, "GET", path, &[("Cookie", &cookie)], "").await;
        assert_eq!(a.status, 401, "{path}");
    }
    assert_eq!(
        http(&s, "GET", "/admin", &[("Cookie", &cookie)], "")
            .await
            .status,
        303
    );
}

#[tokio::test]
async fn a_session_ends_after_its_ttl() {
    let mut c = admin_config();
    c.admin.session_ttl_ms = 1000;
    let s = start_with(c).await;
    let cookie = signed_in(&s).await;
    let me = http(&s, "GET", "/admin/api/session", &[("Cookie", &cookie)], "").await;
    assert_eq!(me.status, 200);
    let ends = me.json()["expiresAt"].as_i64().unwrap();
    eventually("the session to end", || {
        let (s, cookie) = (&s, &cookie);
        async move {
            http(s, "GET", "/admin/api/session", &[("Cookie", cookie)], "")
                .await
                .status
                == 401
        }
    })
    .await;
    assert!(now_s() * 1000 + 1000 >= ends, "not before its end");
}

#[tokio::test]
async fn removing_a_key_from_the_configuration_ends_its_sessions() {
    let other = "other-api-key-0123456789";
    let mut c = admin_config();
    c.grpc.api_keys = vec![API_KEY.into(), other.into()];
    let s = start_with(c.clone()).await;
    let a = sign_in_with(&s, other).await;
    assert_eq!(a.json()["keyIndex"], 1);
    let cookie = a.cookie();
    // The same keys on another node (or after a restart): the session holds.
    let same = start_with(c.clone()).await;
    let me = http(
        &same,
        "GET",
        "/admin/api/session",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!((me.status, me.json()["keyIndex"].clone()), (200, 1.into()));
    // Its key removed: the session opens nothing.
    c.grpc.api_keys = vec![API_KEY.into()];
    let without = start_with(c.clone()).await;
    let me = http(
        &without,
        "GET",
        "/admin/api/session",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(me.status, 401);
    assert_eq!(
        console(&without, &cookie, "GetStats", "{}").await.status,
        401
    );
}

#[tokio::test]
async fn no_answer_carries_a_key_a_token_or_the_secret() {
    let s = start_with(admin_config()).await;
    let cookie = signed_in(&s).await;
    let token = token("carol", &["ops"]);
    let mut ws = s.connect_token(&token).await;
    let _ = &mut ws;
    let mut bodies = Vec::new();
    for (method, path) in [
        ("GET", "/admin/sign-in"),
        ("GET", "/admin"),
        ("GET", "/admin/assets/console.js"),
        ("GET", "/admin/assets/sign-in.js"),
        ("GET", "/admin/api/session"),
        ("GET", "/admin/api/overview"),
    ] {
        let a = http(&s, method, path, &[("Cookie", &cookie)], "").await;
        assert_eq!(a.status, 200, "{path}");
        bodies.push(a.body);
    }
    for rpc in ["ListConnections", "GetStats", "GetUsers"] {
        let body = if rpc == "GetUsers" {
            r#"{"userIds":["carol"]}"#
        } else {
            "{}"
        };
        let a = console(&s, &cookie, rpc, body).await;
        assert_eq!(a.status, 200, "{rpc}");
        bodies.push(a.body);
    }
    let stream = read_stream(&s, &cookie, r#""kind":"CONNECTED""#, async {
        let _again = s.connect_token(&token).await;
    })
    .await;
    bodies.push(stream);
    let session_token = cookie.trim_start_matches("rt_admin=");
    for b in &bodies {
        for secret in [API_KEY, SECRET, token.as_str(), session_token] {
            assert!(!b.contains(secret), "a secret in an answer: {b}");
        }
    }
}

#[tokio::test]
async fn a_session_works_on_every_node_and_a_sign_out_ends_it_everywhere() {
    let redis = RedisProc::start();
    let node = |id: &str| {
        let mut c = admin_config();
        c.node.id = id.into();
        c.broker.kind = boundary_realtime::config::BrokerKind::Redis;
        c.broker.redis_url = redis.url();
        c.broker.node_ttl_ms = 1500;
        c
    };
    let a = start_with(node("a")).await;
    let b = start_with(node("b")).await;
    let cookie = signed_in(&a).await;
    eventually("the console to see both nodes", || {
        let (b, cookie) = (&b, &cookie);
        async move {
            let o = http(b, "GET", "/admin/api/overview", &[("Cookie", cookie)], "").await;
            o.status == 200 && o.json()["sample"]["totals"]["nodes"] == 2
        }
    })
    .await;
    let ws = a.connect("dora", &[]).await;
    let list = console(&b, &cookie, "ListConnections", r#"{"userId":"dora"}"#).await;
    assert_eq!(list.json()["connections"][0]["nodeId"], "a");
    assert_eq!(
        list.json()["connections"][0]["connectionId"],
        ws.id.as_str()
    );
    let ob = origin(&b);
    let out = http(
        &b,
        "POST",
        "/admin/api/sign-out",
        &[("Cookie", &cookie), ("Origin", &ob)],
        "",
    )
    .await;
    assert_eq!(out.status, 200);
    for node in [&a, &b] {
        let me = http(
            node,
            "GET",
            "/admin/api/session",
            &[("Cookie", &cookie)],
            "",
        )
        .await;
        assert_eq!(me.status, 401);
    }
}

#[test]
fn sign_ins_and_actions_are_logged_with_the_keys_position_never_the_key() {
    let (_child, http_addr, _grpc, logs) = spawn_serve(&[("REALTIME_ADMIN__ENABLED", "true")]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = TestServer {
        server: None,
        http: http_addr.parse().unwrap(),
        grpc: "127.0.0.1:1".parse().unwrap(),
    };
    rt.block_on(async {
        assert_eq!(sign_in_with(&s, "wrong-key-0123456789").await.status, 401);
        let cookie = signed_in(&s).await;
        let a = console(&s, &cookie, "Broadcast", r#"{"message":{"type":"t"}}"#).await;
        assert_eq!(a.status, 200, "{}", a.body);
    });
    let end = std::time::Instant::now() + WAIT;
    let mut lines = Vec::new();
    while std::time::Instant::now() < end
        && !lines.iter().any(|l: &String| l.contains("admin action"))
    {
        if let Ok(l) = logs.recv_timeout(Duration::from_millis(50)) {
            lines.push(l);
        }
    }
    let find = |m: &str| {
        lines
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| v["fields"]["message"] == m)
            .unwrap_or_else(|| panic!("no {m:?} line in {lines:#?}"))
    };
    let refused = find("admin sign-in refused");
    assert_eq!(refused["fields"]["code"], 401);
    assert!(refused["fields"]["remote_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let signed = find("admin sign-in");
    assert_eq!(signed["fields"]["key_index"], 0);
    let action = find("admin action");
    assert_eq!(
        (
            action["fields"]["rpc"].as_str(),
            action["fields"]["key_index"].as_u64()
        ),
        (Some("Broadcast"), Some(0))
    );
    for l in &lines {
        assert!(
            !l.contains(API_KEY) && !l.contains("wrong-key-0123456789"),
            "a key in the log: {l}"
        );
    }
}

#[tokio::test]
async fn an_open_console_stream_never_holds_up_a_shutdown() {
    let mut c = admin_config();
    c.node.shutdown_timeout_ms = 8000;
    let mut s = start_with(c).await;
    let cookie = signed_in(&s).await;
    let mut stream = tokio::net::TcpStream::connect(s.http).await.unwrap();
    let head = format!(
        "GET /admin/api/events HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n\r\n",
        s.http
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
    let started = std::time::Instant::now();
    assert!(s.shutdown().await, "a clean shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the stream ended with the shutdown, not at its timeout: {:?}",
        started.elapsed()
    );
}
