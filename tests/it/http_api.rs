//! The HTTP JSON API through real HTTP requests against the real server: the same key, the
//! same validation and messages as gRPC, the proto3 JSON mapping both ways with the `payload`
//! convenience, every status of the contract, and its guard against browser pages.

use serde_json::{json, Value};

use crate::common::*;

/// One HTTP/1.1 request; answers the status and the body parsed as JSON (Null when it is not).
async fn request(
    s: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let a = http(s, method, path, headers, &String::from_utf8_lossy(body)).await;
    (a.status, a.json())
}

const AUTH: (&str, &str) = ("Authorization", "Bearer test-api-key-0123456789");

async fn post(s: &TestServer, rpc: &str, body: Value) -> (u16, Value) {
    request(
        s,
        "POST",
        &format!("/api/v1/{rpc}"),
        &[AUTH],
        body.to_string().as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_sends_with_curl_as_with_grpc() {
    let s = start().await;
    assert_eq!(AUTH.1, format!("Bearer {API_KEY}"));
    let mut ws = s.connect("alice", &[]).await;
    // `payload` as any JSON value: forwarded as written.
    let (status, body) = post(
        &s,
        "SendToUser",
        json!({"userId":"alice","message":{"type":"order.updated","payload":{"id":42}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["connections"], 1);
    assert_eq!(body["offset"].as_str(), Some("1"), "64-bit as strings");
    assert_eq!(body["epoch"].as_str().map(str::len), Some(8), "{body}");
    let got = ws.next_json().await;
    assert_eq!(
        (got["type"].clone(), got["payload"].clone()),
        (json!("order.updated"), json!({"id":42}))
    );
    assert_eq!(got["id"], body["messageId"]);
    // The field names of the .proto work too, and payloadJson as a string.
    let (status, body) = post(
        &s,
        "Publish",
        json!({"topic":"news","message":{"type":"t","payload_json":"[1]","id":"p-1"}}),
    )
    .await;
    assert_eq!(
        (status, body["offset"].as_str()),
        (200, Some("1")),
        "{body}"
    );
    let (status, body) = post(&s, "GetStats", json!({})).await;
    assert_eq!(
        (status, body["connections"].as_str()),
        (200, Some("1")),
        "{body}"
    );
    // A batch, each item with the payload convenience; results in order, 64-bit as strings.
    let (status, body) = post(
        &s,
        "PublishBatch",
        json!({"items":[
            {"topic":"news","message":{"type":"t","payload":[2]}},
            {"topic":"bad topic","message":{"type":"t","payload":1}}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["response"]["offset"], "2");
    assert_eq!(
        (
            body["results"][1]["index"].clone(),
            body["results"][1]["code"].clone()
        ),
        (json!(1), json!(3))
    );
    let (status, body) = post(&s, "ListConnections", json!({"userId":"alice"})).await;
    assert_eq!(status, 200);
    assert_eq!(body["connections"][0]["userId"], "alice");
    assert_eq!(body["nextPageToken"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_of_the_contract() {
    let s = start().await;
    let err = |body: &Value| {
        (
            body["code"].as_str().unwrap_or("").to_owned(),
            body["message"].as_str().unwrap_or("").to_owned(),
        )
    };
    // 401 without the key, or with another.
    let (status, body) = request(&s, "POST", "/api/v1/GetStats", &[], b"{}").await;
    assert_eq!((status, err(&body).0.as_str()), (401, "UNAUTHENTICATED"));
    let (status, _) = request(
        &s,
        "POST",
        "/api/v1/GetStats",
        &[("Authorization", "Bearer wrong-key-0123456789")],
        b"{}",
    )
    .await;
    assert_eq!(status, 401);
    // The key comes first: without it, nothing of the body is read, however bad or large.
    let (status, _) = request(&s, "POST", "/api/v1/SendToUser", &[], b"not json").await;
    assert_eq!(status, 401);
    let huge = vec![b'x'; 200 * 1024];
    let (status, _) = request(&s, "POST", "/api/v1/SendToUser", &[], &huge).await;
    assert_eq!(status, 401);
    // 400 with gRPC's own message, naming the field.
    let (status, body) = post(&s, "SendToUser", json!({"message":{"type":"t"}})).await;
    assert_eq!(
        (status, err(&body)),
        (
            400,
            ("INVALID_ARGUMENT".into(), "user_id: is required".into())
        )
    );
    let (status, body) = post(
        &s,
        "SendToUser",
        json!({"userId":"a","message":{"type":"bad type"}}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(err(&body).1.starts_with("message.type:"), "{body}");
    // 400: not JSON, not the request message (a typo included), payload and payloadJson both.
    let (status, body) = request(&s, "POST", "/api/v1/GetStats", &[AUTH], b"nope").await;
    assert_eq!((status, err(&body).0.as_str()), (400, "INVALID_ARGUMENT"));
    let (status, body) = post(&s, "SendToUser", json!({"userid":"a"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = post(
        &s,
        "SendToUser",
        json!({"userId":"a","message":{"type":"t","payload":1,"payloadJson":"1"}}),
    )
    .await;
    assert_eq!(status, 400);
    // 404: a connection that is not live; an unknown or streaming method (UNIMPLEMENTED).
    let (status, body) = post(
        &s,
        "GetConnection",
        json!({"connectionId":"test.00000000000000ff"}),
    )
    .await;
    assert_eq!((status, err(&body).0.as_str()), (404, "NOT_FOUND"));
    for rpc in ["WatchEvents", "PublishStream", "Nope"] {
        let (status, body) = post(&s, rpc, json!({})).await;
        assert_eq!(
            (status, err(&body).0.as_str()),
            (404, "UNIMPLEMENTED"),
            "{rpc}"
        );
    }
    // 405: another method.
    let (status, _) = request(&s, "GET", "/api/v1/GetStats", &[AUTH], b"").await;
    assert_eq!(status, 405);
    // 403: a request from a web page (an Origin header), even with the key.
    let (status, body) = request(
        &s,
        "POST",
        "/api/v1/GetStats",
        &[AUTH, ("Origin", "https://evil.example")],
        b"{}",
    )
    .await;
    assert_eq!((status, err(&body).0.as_str()), (403, "PERMISSION_DENIED"));
    // 413: a body over max_payload_bytes plus 64 KiB.
    let big = vec![b' '; 65_536 + 64 * 1024 + 1];
    let (status, body) = request(&s, "POST", "/api/v1/GetStats", &[AUTH], &big).await;
    assert_eq!((status, err(&body).0.as_str()), (413, "RESOURCE_EXHAUSTED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_can_be_turned_off() {
    let mut c = config();
    c.http.api = false;
    let s = start_with(c).await;
    let (status, _) = post(&s, "GetStats", json!({})).await;
    assert_eq!(status, 404);
}
