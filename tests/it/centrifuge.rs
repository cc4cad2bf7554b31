//! The Centrifugo-compatible endpoint, spoken by hand over tokio-tungstenite in JSON and in
//! Protobuf: exact replies, pushes, error codes and close codes. (The real SDKs are driven by
//! clients/centrifuge-sdk-tests, run from scripts/test.sh.)

use std::time::Duration;

use boundary_realtime::centrifuge::wire;
use boundary_realtime::proto::{
    DisconnectRequest, ListConnectionsRequest, Message as ProtoMessage, PublishRequest,
    SubscribeRequest, UnsubscribeRequest,
};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::Algorithm;
use prost::Message as _;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::*;

pub(crate) struct Cf {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Replies and pushes read but not yet taken.
    backlog: std::collections::VecDeque<Value>,
}

pub(crate) async fn open(s: &TestServer, subprotocol: Option<&str>) -> Cf {
    let mut req = format!("ws://{}/connection/websocket", s.http)
        .into_client_request()
        .unwrap();
    if let Some(p) = subprotocol {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        subprotocol,
        "the subprotocol is echoed, and none is sent when none was offered"
    );
    Cf {
        ws,
        backlog: Default::default(),
    }
}

impl Cf {
    pub(crate) async fn send(&mut self, commands: &[Value]) {
        let text: Vec<String> = commands.iter().map(|c| c.to_string()).collect();
        self.ws
            .send(Message::Text(text.join("\n").into()))
            .await
            .unwrap();
    }

    /// The next reply or push (a text frame may hold several, one per line).
    pub(crate) async fn next(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.backlog.is_empty() {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("a frame within the wait");
            match m {
                Some(Ok(Message::Text(t))) => {
                    for line in t.as_str().split('\n') {
                        self.backlog.push_back(serde_json::from_str(line).unwrap());
                    }
                }
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
        self.backlog.pop_front().unwrap()
    }

    pub(crate) async fn next_close(&mut self) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("a close within the wait");
            match m {
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    return (code.into(), reason.to_string())
                }
                Some(Ok(Message::Text(t))) if t.as_str() == "{}" => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}

/// Opens a JSON connection and connects with `token`; returns it and the connect result.
pub(crate) async fn connected(s: &TestServer, token: &str) -> (Cf, Value) {
    let mut cf = open(s, None).await;
    cf.send(&[json!({"id":1,"connect":{"token":token,"name":"test"}})])
        .await;
    let r = cf.next().await;
    assert_eq!(r["id"], 1, "{r}");
    (cf, r["connect"].clone())
}

pub(crate) fn news_token(user: &str) -> String {
    sign(
        Algorithm::HS256,
        json!({"sub": user, "exp": now_s() + 3600, "topics": ["news", "chat:*"]}),
    )
}

fn publish(topic: &str, payload: &str) -> tonic::Request<PublishRequest> {
    authed(PublishRequest {
        topic: topic.into(),
        message: Some(ProtoMessage {
            r#type: "t".into(),
            payload_json: payload.into(),
            id: String::new(),
        }),
    })
}

/// The message object a subscriber gets as `data`, without its id and time.
fn strip(data: &Value) -> Value {
    json!({"type": data["type"], "payload": data["payload"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_subscribe_publish_and_direct_message_in_json() {
    let s = start().await;
    let mut client = s.client().await;
    let mut cf = open(&s, None).await;
    // As centrifuge-js does: connect and subscribe in one frame, unknown fields everywhere.
    cf.send(&[
        json!({"id":1,"connect":{"token":news_token("ann"),"name":"js","version":"1","headers":{}}}),
        json!({"id":2,"subscribe":{"channel":"news","flag":1}}),
    ])
    .await;
    let c = cf.next().await;
    let id = c["connect"]["client"].as_str().unwrap().to_owned();
    assert!(id.starts_with("test."), "{c}");
    assert_eq!(c["connect"]["ping"], 25);
    assert_eq!(c["connect"]["pong"], true);
    assert_eq!(c["connect"]["expires"], true);
    let ttl = c["connect"]["ttl"].as_u64().unwrap();
    assert!((3590..=3600).contains(&ttl), "{c}");
    let sub = cf.next().await;
    assert_eq!(
        sub,
        json!({"id":2,"subscribe":{"recoverable":true,"positioned":true,"epoch":sub["subscribe"]["epoch"],"offset":0}})
    );
    let p = client
        .publish(publish("news", r#"{"n":1}"#))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.connections, 1);
    let push = cf.next().await;
    assert_eq!(push["push"]["channel"], "news");
    assert_eq!(push["push"]["pub"]["offset"], 1);
    let data = &push["push"]["pub"]["data"];
    assert_eq!(strip(data), json!({"type":"t","payload":{"n":1}}));
    assert_eq!(data["id"], p.message_id.as_str());
    assert!(
        data.get("topic").is_none(),
        "data is the message object alone: {data}"
    );
    assert_eq!(send_user(&mut client, "ann", "hello", "[1]").await, 1);
    let m = cf.next().await;
    assert_eq!(
        strip(&m["push"]["message"]["data"]),
        json!({"type":"hello","payload":[1]})
    );
    let list = client
        .list_connections(authed(ListConnectionsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.connections.len(), 1);
    assert_eq!(list.connections[0].protocol, "centrifuge-json");
    assert_eq!(list.connections[0].connection_id, id);
    assert_eq!(list.connections[0].topics, vec!["news".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expired_answer_109_invalid_close_3500_and_connect_comes_first() {
    let s = start().await;
    let expired = sign(Algorithm::HS256, json!({"sub": "ann", "exp": now_s() - 10}));
    let mut cf = open(&s, None).await;
    cf.send(&[json!({"id":1,"connect":{"token":expired}})])
        .await;
    assert_eq!(
        cf.next().await,
        json!({"id":1,"error":{"code":109,"message":"token expired"}})
    );
    // The SDK comes back with a fresh token (here on the same socket).
    cf.send(&[json!({"id":2,"connect":{"token":news_token("ann")}})])
        .await;
    assert!(cf.next().await["connect"]["client"].is_string());

    let mut bad = open(&s, None).await;
    bad.send(&[json!({"id":1,"connect":{"token":"not-a-jwt"}})])
        .await;
    assert_eq!(bad.next_close().await, (3500, "invalid token".into()));

    let mut first = open(&s, None).await;
    first
        .send(&[json!({"id":1,"subscribe":{"channel":"news"}})])
        .await;
    assert_eq!(first.next_close().await, (3501, "bad request".into()));

    let mut garbage = open(&s, None).await;
    garbage
        .ws
        .send(Message::Text("{nope".into()))
        .await
        .unwrap();
    assert_eq!(garbage.next_close().await, (3501, "bad request".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_keep_command_order_and_errors_leave_the_connection_up() {
    let mut c = config();
    c.topics.public = vec!["public".into()];
    let s = start_with(c).await;
    let (mut cf, _) = connected(&s, &news_token("ann")).await;
    cf.send(&[
        json!({"id":2,"subscribe":{"channel":"news"}}),
        json!({"id":3,"subscribe":{"channel":"secret"}}),
        json!({"id":4,"subscribe":{"channel":"public"}}),
        json!({"id":5,"subscribe":{"channel":"news"}}),
        json!({"id":6,"publish":{"channel":"news","data":{"x":1}}}),
        json!({"id":7,"rpc":{"method":"m","data":{}}}),
        json!({"id":8,"unsubscribe":{"channel":"never-subscribed"}}),
        json!({"id":9,"unsubscribe":{"channel":"public"}}),
        json!({"id":10,"ping":{}}),
        json!({"id":11,"subscribe":{"channel":"bad name!"}}),
    ])
    .await;
    let mut got = Vec::new();
    for _ in 0..10 {
        let r = cf.next().await;
        let what = match (
            &r["error"],
            r.as_object().unwrap().keys().find(|k| *k != "id"),
        ) {
            (Value::Object(e), _) => format!("error {}", e["code"]),
            (_, Some(k)) => k.clone(),
            _ => "?".into(),
        };
        got.push((r["id"].as_u64().unwrap(), what));
    }
    let want: Vec<(u64, String)> = vec![
        (2, "subscribe".into()),
        (3, "error 103".into()),
        (4, "subscribe".into()),
        (5, "error 105".into()),
        (6, "error 103".into()),
        (7, "error 108".into()),
        (8, "unsubscribe".into()),
        (9, "unsubscribe".into()),
        (10, "ping".into()),
        (11, "error 107".into()),
    ];
    assert_eq!(got, want);
    // Still connected and subscribed to news only.
    let mut client = s.client().await;
    client.publish(publish("public", "0")).await.unwrap();
    client.publish(publish("news", "1")).await.unwrap();
    let push = cf.next().await;
    assert_eq!(push["push"]["channel"], "news");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_is_whole_or_nothing() {
    let s = start().await;
    let mut client = s.client().await;
    let (mut cf, _) = connected(&s, &news_token("ann")).await;
    cf.send(&[json!({"id":2,"subscribe":{"channel":"news"}})])
        .await;
    let sub = cf.next().await;
    let epoch = sub["subscribe"]["epoch"].as_str().unwrap().to_owned();
    client.publish(publish("news", "1")).await.unwrap();
    assert_eq!(cf.next().await["push"]["pub"]["offset"], 1);
    drop(cf);
    for i in 2..=4 {
        client
            .publish(publish("news", &i.to_string()))
            .await
            .unwrap();
    }
    let (mut back, _) = connected(&s, &news_token("ann")).await;
    back.send(&[
        json!({"id":2,"subscribe":{"channel":"news","recover":true,"offset":1,"epoch":epoch}}),
    ])
    .await;
    let r = back.next().await["subscribe"].clone();
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(r["was_recovering"], true);
    assert_eq!(r["offset"], 4);
    let pubs = r["publications"].as_array().unwrap();
    let got: Vec<(u64, Value)> = pubs
        .iter()
        .map(|p| (p["offset"].as_u64().unwrap(), p["data"]["payload"].clone()))
        .collect();
    assert_eq!(got, vec![(2, json!(2)), (3, json!(3)), (4, json!(4))]);
    client.publish(publish("news", "5")).await.unwrap();
    assert_eq!(back.next().await["push"]["pub"]["offset"], 5);

    // A position from another epoch: not recovered, nothing replayed.
    let (mut other, _) = connected(&s, &news_token("bob")).await;
    other
        .send(&[
            json!({"id":2,"subscribe":{"channel":"news","recover":true,"offset":2,"epoch":"elsewhere"}}),
        ])
        .await;
    assert_eq!(
        other.next().await,
        json!({"id":2,"subscribe":{"recoverable":true,"positioned":true,"epoch":epoch,"offset":5,"was_recovering":true}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_stats_and_history() {
    let s = start().await;
    let mut client = s.client().await;
    let (mut a, ca) = connected(&s, &news_token("ann")).await;
    let (mut b, cb) = connected(&s, &news_token("bob")).await;
    a.send(&[json!({"id":2,"presence":{"channel":"news"}})])
        .await;
    assert_eq!(a.next().await["error"]["code"], 103, "subscribe first");
    for cf in [&mut a, &mut b] {
        cf.send(&[json!({"id":3,"subscribe":{"channel":"news"}})])
            .await;
        assert!(cf.next().await["subscribe"].is_object());
    }
    a.send(&[
        json!({"id":4,"presence":{"channel":"news"}}),
        json!({"id":5,"presence_stats":{"channel":"news"}}),
    ])
    .await;
    let (ida, idb) = (
        ca["client"].as_str().unwrap(),
        cb["client"].as_str().unwrap(),
    );
    assert_eq!(
        a.next().await,
        json!({"id":4,"presence":{"presence":{
            ida: {"user":"ann","client":ida},
            idb: {"user":"bob","client":idb},
        }}})
    );
    assert_eq!(
        a.next().await,
        json!({"id":5,"presence_stats":{"num_clients":2,"num_users":2}})
    );
    for i in 1..=5 {
        client
            .publish(publish("news", &i.to_string()))
            .await
            .unwrap();
    }
    for _ in 1..=5 {
        a.next().await;
    }
    a.send(&[
        json!({"id":6,"history":{"channel":"news","limit":2}}),
        json!({"id":7,"history":{"channel":"news","limit":-1,"since":{"offset":3}}}),
        json!({"id":8,"history":{"channel":"news","limit":2,"reverse":true}}),
        json!({"id":9,"history":{"channel":"news"}}),
        json!({"id":10,"history":{"channel":"news","limit":1,"since":{"offset":1,"epoch":"other"}}}),
        json!({"id":11,"history":{"channel":"news","limit":-1,"reverse":true,"since":{"offset":4}}}),
    ])
    .await;
    let offsets = |v: &Value| -> Vec<u64> {
        v["history"]["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["offset"].as_u64().unwrap())
            .collect()
    };
    let h = a.next().await;
    assert_eq!(offsets(&h), vec![1, 2]);
    assert_eq!(h["history"]["offset"], 5);
    assert_eq!(h["history"]["publications"][0]["data"]["payload"], 1);
    assert_eq!(offsets(&a.next().await), vec![4, 5]);
    assert_eq!(offsets(&a.next().await), vec![5, 4]);
    assert_eq!(
        offsets(&a.next().await),
        Vec::<u64>::new(),
        "limit 0: top only"
    );
    assert_eq!(a.next().await["error"]["code"], 112);
    assert_eq!(offsets(&a.next().await), vec![3, 2, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_subscribe_unsubscribe_and_disconnect_codes() {
    let s = start().await;
    let mut client = s.client().await;
    let (mut cf, c) = connected(&s, &news_token("ann")).await;
    let id = c["client"].as_str().unwrap().to_owned();
    let sel = |id: &str| {
        Some(boundary_realtime::proto::subscribe_request::Target::ConnectionId(id.to_owned()))
    };
    client
        .subscribe(authed(SubscribeRequest {
            topic: "alerts".into(),
            target: sel(&id),
        }))
        .await
        .unwrap();
    let push = cf.next().await;
    assert_eq!(push["push"]["channel"], "alerts");
    assert_eq!(push["push"]["subscribe"]["recoverable"], true);
    client.publish(publish("alerts", "1")).await.unwrap();
    assert_eq!(cf.next().await["push"]["pub"]["offset"], 1);
    client
        .unsubscribe(authed(UnsubscribeRequest {
            topic: "alerts".into(),
            target: Some(
                boundary_realtime::proto::unsubscribe_request::Target::ConnectionId(id.clone()),
            ),
        }))
        .await
        .unwrap();
    assert_eq!(
        cf.next().await,
        json!({"push":{"channel":"alerts","unsubscribe":{"code":2000,"reason":"server unsubscribe"}}})
    );
    let disconnect = |code: u32, reason: &str, id: &str| {
        authed(DisconnectRequest {
            code,
            reason: reason.into(),
            target: Some(
                boundary_realtime::proto::disconnect_request::Target::ConnectionId(id.to_owned()),
            ),
        })
    };
    client
        .disconnect(disconnect(4501, "banned", &id))
        .await
        .unwrap();
    assert_eq!(cf.next_close().await, (4501, "banned".into()));
    let (mut cf, c) = connected(&s, &news_token("ann")).await;
    client
        .disconnect(disconnect(0, "", c["client"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(cf.next_close().await, (4000, "disconnected".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_pings_a_missing_pong_closes_3012_and_refresh_extends() {
    let mut c = config();
    c.limits.ping_interval_ms = 1000;
    c.limits.pong_timeout_ms = 500;
    let s = start_with(c).await;
    let (mut quiet, r) = connected(&s, &news_token("ann")).await;
    assert_eq!(r["ping"], 1);
    assert_eq!(quiet.next().await, json!({}), "a ping");
    assert_eq!(quiet.next_close().await, (3012, "no pong".into()));

    let short = sign(Algorithm::HS256, json!({"sub": "bob", "exp": now_s() + 3}));
    let (mut live, r) = connected(&s, &short).await;
    let ttl = r["ttl"].as_u64().unwrap();
    assert!((1..=3).contains(&ttl), "{r}");
    // Answer pings, and refresh before exp.
    live.send(&[json!({"id":2,"refresh":{"token":news_token("bob")}})])
        .await;
    loop {
        let m = live.next().await;
        if m == json!({}) {
            live.send(&[json!({})]).await;
            continue;
        }
        assert_eq!(m["id"], 2, "{m}");
        assert_eq!(m["refresh"]["expires"], true);
        assert!(m["refresh"]["ttl"].as_u64().unwrap() > 3000);
        break;
    }
    // Past the first token's exp, still connected: pings keep coming and are answered.
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        let m = live.next().await;
        assert_eq!(m, json!({}), "only pings");
        live.send(&[json!({})]).await;
    }
    // A refresh for another user closes 3500.
    live.send(&[json!({"id":3,"refresh":{"token":news_token("eve")}})])
        .await;
    let (code, reason) = live.next_close().await;
    assert_eq!((code, reason.as_str()), (3500, "invalid token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrefreshed_connection_closes_3005_at_exp() {
    let s = start().await;
    let short = sign(Algorithm::HS256, json!({"sub": "bob", "exp": now_s() + 2}));
    let (mut cf, _) = connected(&s, &short).await;
    assert_eq!(cf.next_close().await, (3005, "connection expired".into()));
}

/// Protobuf: length-delimited binary frames, decoded here with our own wire types (the real
/// SDK's Protobuf build checks the field numbers, in scripts/test.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_connect_subscribe_and_publication() {
    let s = start().await;
    let mut client = s.client().await;
    let mut cf = open(&s, Some("centrifuge-protobuf")).await;
    let mut frame = wire::Command {
        id: 1,
        connect: Some(wire::ConnectRequest {
            token: news_token("ann"),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_length_delimited_to_vec();
    frame.extend(
        wire::Command {
            id: 2,
            subscribe: Some(wire::SubscribeRequest {
                channel: "news".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_length_delimited_to_vec(),
    );
    cf.ws.send(Message::Binary(frame.into())).await.unwrap();
    let mut replies = Vec::new();
    while replies.len() < 2 {
        match tokio::time::timeout(WAIT, cf.ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => {
                let mut buf = &b[..];
                while !buf.is_empty() {
                    replies.push(wire::Reply::decode_length_delimited(&mut buf).unwrap());
                }
            }
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
    let connect = replies[0].connect.as_ref().expect("connect result");
    assert!(connect.client.starts_with("test."));
    assert_eq!(replies[1].id, 2);
    assert!(replies[1].subscribe.as_ref().unwrap().recoverable);
    client.publish(publish("news", r#""hi""#)).await.unwrap();
    let push = match tokio::time::timeout(WAIT, cf.ws.next()).await.unwrap() {
        Some(Ok(Message::Binary(b))) => wire::Reply::decode_length_delimited(&mut &b[..])
            .unwrap()
            .push
            .unwrap(),
        other => panic!("expected a binary frame, got {other:?}"),
    };
    assert_eq!(push.channel, "news");
    let p = push.publication.unwrap();
    assert_eq!(p.offset, 1);
    let data: Value = serde_json::from_slice(&p.data).unwrap();
    assert_eq!(strip(&data), json!({"type":"t","payload":"hi"}));
    let list = client
        .list_connections(authed(ListConnectionsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.connections[0].protocol, "centrifuge-protobuf");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_reach_the_subscribers_that_asked() {
    let s = start().await;
    let (mut a, ca) = connected(&s, &news_token("ann")).await;
    let ida = ca["client"].as_str().unwrap().to_owned();
    a.send(&[json!({"id":2,"subscribe":{"channel":"news","join_leave":true}})])
        .await;
    assert!(a.next().await["subscribe"].is_object());
    assert_eq!(
        a.next().await,
        json!({"push":{"channel":"news","join":{"info":{"user":"ann","client":ida}}}}),
        "its own join first"
    );
    // A subscriber that did not ask hears nothing of it; a native client's join counts too.
    let (mut b, cb) = connected(&s, &news_token("bob")).await;
    let idb = cb["client"].as_str().unwrap().to_owned();
    b.send(&[json!({"id":2,"subscribe":{"channel":"news"}})])
        .await;
    assert!(b.next().await["subscribe"].is_object());
    assert_eq!(
        a.next().await,
        json!({"push":{"channel":"news","join":{"info":{"user":"bob","client":idb}}}})
    );
    let mut native = s.connect_token(&news_token("cat")).await;
    native
        .send_text(r#"{"op":"subscribe","topic":"news","ref":"1"}"#)
        .await;
    assert_eq!(native.next_json().await["op"], "subscribed");
    assert_eq!(
        a.next().await,
        json!({"push":{"channel":"news","join":{"info":{"user":"cat","client":native.id}}}})
    );
    drop(native);
    assert_eq!(a.next().await["push"]["leave"]["info"]["user"], "cat");
    b.send(&[json!({"id":3,"unsubscribe":{"channel":"news"}})])
        .await;
    assert_eq!(b.next().await, json!({"id":3,"unsubscribe":{}}));
    assert_eq!(
        a.next().await,
        json!({"push":{"channel":"news","leave":{"info":{"user":"bob","client":idb}}}})
    );
    b.send(&[json!({"id":4,"subscribe":{"channel":"news"}})])
        .await;
    assert!(b.next().await["subscribe"].is_object());
    assert_eq!(
        a.next().await["push"]["join"]["info"]["client"],
        idb.as_str()
    );
    drop(b);
    assert_eq!(
        a.next().await,
        json!({"push":{"channel":"news","leave":{"info":{"user":"bob","client":idb}}}}),
        "a disconnect is a leave"
    );
    // Nothing else was queued: the next push is this publication.
    let mut client = s.client().await;
    client.publish(publish("news", "1")).await.unwrap();
    assert_eq!(a.next().await["push"]["pub"]["offset"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_limits_apply_with_the_sdks_codes() {
    let mut c = config();
    c.limits.max_connections_per_user = 1;
    c.limits.client_rate = 5;
    let s = start_with(c).await;
    // Origin: the same check as /ws.
    let mut req = format!("ws://{}/connection/websocket", s.http)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403)
        }
        other => panic!("expected 403, got {other:?}"),
    }
    // Connections per user: terminal 3504.
    let (mut first, _) = connected(&s, &news_token("ann")).await;
    let mut second = open(&s, None).await;
    second
        .send(&[json!({"id":1,"connect":{"token":news_token("ann")}})])
        .await;
    assert_eq!(second.next_close().await, (3504, "connection limit".into()));
    // The client rate: 3013, which the SDKs retry later.
    for i in 0..20 {
        let _ = first
            .ws
            .send(Message::Text(
                json!({"id": 10 + i, "ping": {}}).to_string().into(),
            ))
            .await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    let code = loop {
        match tokio::time::timeout_at(deadline, first.ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(Some(f)))) => break (u16::from(f.code), f.reason.to_string()),
            Some(Ok(_)) => continue,
            other => panic!("expected a close, got {other:?}"),
        }
    };
    assert_eq!(code, (3013, "too many requests".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_personal_channel_carries_direct_messages_and_recovers_on_reconnect() {
    let mut c = config();
    c.centrifuge.personal_channel = true;
    let s = start_with(c).await;
    let mut client = s.client().await;
    let (mut cf, reply) = connected(&s, &news_token("pia")).await;
    let sub = &reply["subs"]["#pia"];
    assert_eq!(
        (&sub["recoverable"], &sub["positioned"], &sub["offset"]),
        (&json!(true), &json!(true), &json!(0)),
        "{reply}"
    );
    let epoch = sub["epoch"].as_str().unwrap().to_owned();
    assert_eq!(send_user(&mut client, "pia", "note", "1").await, 1);
    let push = cf.next().await;
    assert_eq!(push["push"]["channel"], "#pia", "{push}");
    assert_eq!(push["push"]["pub"]["offset"], 1);
    assert_eq!(push["push"]["pub"]["data"]["type"], "note");
    // Client commands naming it: 103, and the connection stays.
    for cmd in [
        json!({"id":2,"subscribe":{"channel":"#pia"}}),
        json!({"id":3,"unsubscribe":{"channel":"#pia"}}),
        json!({"id":4,"history":{"channel":"#pia","limit":10}}),
        json!({"id":5,"presence":{"channel":"#pia"}}),
    ] {
        cf.send(std::slice::from_ref(&cmd)).await;
        let r = cf.next().await;
        assert_eq!(r["error"]["code"], 103, "{cmd} -> {r}");
    }
    // Not a topic: not in the connection's topics, nor in Stats.
    let conns = client
        .list_connections(authed(ListConnectionsRequest {
            user_id: "pia".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .connections;
    assert_eq!(conns[0].topics, Vec::<String>::new());
    drop(cf);
    // Away: two more; back, recovering from offset 1.
    for p in ["2", "3"] {
        send_user(&mut client, "pia", "note", p).await;
    }
    let mut cf = open(&s, None).await;
    cf.send(&[json!({"id":1,"connect":{"token":news_token("pia"),
        "subs":{"#pia":{"recover":true,"offset":1,"epoch":epoch}}}})])
        .await;
    let r = cf.next().await;
    let sub = &r["connect"]["subs"]["#pia"];
    assert_eq!(
        (
            &sub["recovered"],
            &sub["was_recovering"],
            &sub["offset"],
            &sub["epoch"]
        ),
        (&json!(true), &json!(true), &json!(3), &json!(epoch)),
        "{r}"
    );
    let pubs: Vec<(u64, Value)> = sub["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["offset"].as_u64().unwrap(), p["data"]["payload"].clone()))
        .collect();
    assert_eq!(pubs, vec![(2, json!(2)), (3, json!(3))]);
    send_user(&mut client, "pia", "note", "4").await;
    let push = cf.next().await;
    assert_eq!(push["push"]["pub"]["offset"], 4, "live after: {push}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_personal_channel_without_user_streams_is_a_configuration_error() {
    let mut c = config();
    c.centrifuge.personal_channel = true;
    c.users.history_size = 0;
    let Err(e) = c.validate() else {
        panic!("a personal channel without user streams was accepted");
    };
    let text = e.to_string();
    assert!(
        text.contains("centrifuge.personal_channel") && text.contains("users.history_size"),
        "{text}"
    );
}
