//! Topics: subscribe/unsubscribe with authorization, publish with offsets and epochs,
//! idempotent publish, recovery (also under a concurrent publisher), presence, history,
//! server-side subscribe, events.

use boundary_realtime::proto::*;
use futures_util::StreamExt;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

use crate::common::*;

fn token_topics(user: &str, topics: &[&str]) -> String {
    sign(
        Algorithm::HS256,
        json!({"sub": user, "exp": now_s() + 3600, "topics": topics}),
    )
}

async fn sub(ws: &mut Ws, topic: &str, since: Option<Value>, r: &str) -> Value {
    let mut f = json!({"op":"subscribe","topic":topic,"ref":r});
    if let Some(s) = since {
        f["since"] = s;
    }
    ws.send_text(&f.to_string()).await;
    ws.next_json().await
}

fn publish(topic: &str, kind: &str, payload: &str, id: &str) -> tonic::Request<PublishRequest> {
    authed(PublishRequest {
        topic: topic.into(),
        message: Some(Message {
            r#type: kind.into(),
            payload_json: payload.into(),
            id: id.into(),
        }),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_is_authorized_by_claim_patterns_and_public_topics() {
    let mut c = config();
    c.topics.public = vec!["news".into(), "public:*".into()];
    let s = start_with(c).await;
    let mut ws = s
        .connect_token(&token_topics("u", &["orders:*", "chat:**"]))
        .await;
    for (topic, ok) in [
        ("orders:42", true),
        ("orders:42:items", false),
        ("chat:room:1:thread", true),
        ("news", true),
        ("public:x", true),
        ("private", false),
    ] {
        let reply = sub(&mut ws, topic, None, topic).await;
        if ok {
            assert_eq!(reply["op"], "subscribed", "{topic}: {reply}");
            assert_eq!(reply["topic"], topic);
            assert_eq!(reply["offset"], 0, "never published");
            assert!(reply["epoch"].as_str().is_some_and(|e| !e.is_empty()));
            assert!(reply.get("recovered").is_none());
        } else {
            assert_eq!(
                (reply["op"].as_str(), reply["code"].as_str()),
                (Some("error"), Some("forbidden")),
                "{topic}"
            );
        }
        assert_eq!(reply["ref"], topic);
    }
    // invalid names are bad requests (and the connection stays open)
    let reply = sub(&mut ws, "bad topic!", None, "x").await;
    assert_eq!(reply["code"], "bad_request");
    ws.send_text(r#"{"op":"ping","ref":"alive"}"#).await;
    assert_eq!(ws.next_json().await["ref"], "alive");
    let mut client = s.client().await;
    let conn = client
        .get_connection(authed(GetConnectionRequest {
            connection_id: ws.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        conn.topics,
        vec!["chat:room:1:thread", "news", "orders:42", "public:x"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_exactly_the_subscribers_with_gapless_offsets() {
    let s = start().await;
    let mut client = s.client().await;
    let mut a = s.connect_token(&token_topics("a", &["t:*"])).await;
    let mut b = s.connect_token(&token_topics("b", &["t:*"])).await;
    let mut other = s.connect_token(&token_topics("c", &["t:*"])).await;
    let ra = sub(&mut a, "t:1", None, "1").await;
    sub(&mut b, "t:1", None, "1").await;
    sub(&mut other, "t:2", None, "1").await;
    let epoch = ra["epoch"].as_str().unwrap().to_owned();
    for i in 1..=3u64 {
        let r = client
            .publish(publish("t:1", "evt", &i.to_string(), ""))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (r.offset, r.connections, r.epoch.as_str()),
            (i, 2, epoch.as_str())
        );
        for ws in [&mut a, &mut b] {
            let f = ws.next_json().await;
            assert_eq!(
                (
                    f["topic"].as_str(),
                    f["offset"].as_u64(),
                    f["epoch"].as_str()
                ),
                (Some("t:1"), Some(i), Some(epoch.as_str()))
            );
            assert_eq!(
                (f["type"].as_str(), f["payload"].as_u64()),
                (Some("evt"), Some(i))
            );
            assert_eq!(f["id"].as_str(), Some(r.message_id.as_str()));
        }
    }
    s.assert_nothing_pending(&mut client, &mut [&mut other])
        .await;
    // unsubscribe: the reply, then nothing more from that topic
    b.send_text(r#"{"op":"unsubscribe","topic":"t:1","ref":"u"}"#)
        .await;
    assert_eq!(
        b.next_json().await,
        json!({"op":"unsubscribed","topic":"t:1","ref":"u"})
    );
    let r = client
        .publish(publish("t:1", "evt", "4", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.offset, r.connections), (4, 1));
    assert_eq!(a.next_json().await["offset"], 4);
    s.assert_nothing_pending(&mut client, &mut [&mut b]).await;
    // a topic nobody listens to still counts offsets and keeps history
    let r = client
        .publish(publish("t:none", "evt", "1", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.offset, r.connections), (1, 0));
    let st = client
        .get_stats(authed(GetStatsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.topics, 3, "t:1, t:2 (a subscriber) and t:none (history)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_an_id_again_is_not_delivered_twice() {
    let s = start().await;
    let mut client = s.client().await;
    let mut ws = s.connect_token(&token_topics("a", &["**"])).await;
    sub(&mut ws, "orders", None, "1").await;
    let first = client
        .publish(publish("orders", "o", "1", "order-7"))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .publish(publish("orders", "o", "1", "order-7"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.offset, again.offset, again.connections), (1, 1, 0));
    assert_eq!(again.message_id, "order-7");
    let next = client
        .publish(publish("orders", "o", "2", "order-8"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.offset, 2);
    assert_eq!(ws.next_json().await["id"], "order-7");
    assert_eq!(ws.next_json().await["id"], "order-8");
    s.assert_nothing_pending(&mut client, &mut [&mut ws]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_replays_what_was_missed_then_says_recovered() {
    let mut c = config();
    c.topics.history_size = 5;
    let s = start_with(c).await;
    let mut client = s.client().await;
    for i in 1..=3 {
        client
            .publish(publish("room", "m", &i.to_string(), ""))
            .await
            .unwrap();
    }
    let mut ws = s.connect_token(&token_topics("a", &["room"])).await;
    let first = sub(&mut ws, "room", None, "1").await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    assert_eq!(first["offset"], 3);
    drop(ws);
    for i in 4..=6 {
        client
            .publish(publish("room", "m", &i.to_string(), ""))
            .await
            .unwrap();
    }
    let mut ws = s.connect_token(&token_topics("a", &["room"])).await;
    ws.send_text(
        &json!({"op":"subscribe","topic":"room","since":{"offset":3,"epoch":epoch},"ref":"2"})
            .to_string(),
    )
    .await;
    for want in 4..=6u64 {
        let f = ws.next_json().await;
        assert_eq!(
            (f["offset"].as_u64(), f["payload"].as_u64()),
            (Some(want), Some(want))
        );
    }
    let done = ws.next_json().await;
    assert_eq!(
        done,
        json!({"op":"subscribed","topic":"room","offset":6,"epoch":epoch,"recovered":true,"ref":"2"})
    );
    // wrong epoch: nothing replayed, recovered false, start from the latest
    let mut ws2 = s.connect_token(&token_topics("a", &["room"])).await;
    let r = sub(
        &mut ws2,
        "room",
        Some(json!({"offset":3,"epoch":"nope"})),
        "3",
    )
    .await;
    assert_eq!(
        (
            r["op"].as_str(),
            r["recovered"].as_bool(),
            r["offset"].as_u64()
        ),
        (Some("subscribed"), Some(false), Some(6))
    );
    // history too short (size 5 keeps 2..=6): from offset 0 cannot be recovered
    let r = sub(
        &mut ws2,
        "room",
        Some(json!({"offset":0,"epoch":epoch})),
        "4",
    )
    .await;
    assert_eq!(r["recovered"], false, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_joins_the_live_stream_with_no_gap_and_no_duplicate() {
    let s = start().await;
    let client = s.client().await;
    const N: u64 = 300;
    const SUBSCRIBERS: usize = 8;
    // The publisher starts once every subscriber holds its first subscription, and is paced so
    // that publications keep arriving while the subscribers drop and recover.
    let ready = std::sync::Arc::new(tokio::sync::Barrier::new(SUBSCRIBERS + 1));
    let publisher = {
        let mut client = client.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            ready.wait().await;
            for i in 1..=N {
                client
                    .publish(publish("live", "m", &i.to_string(), ""))
                    .await
                    .unwrap();
                tokio::time::sleep(std::time::Duration::from_micros(500)).await;
            }
        })
    };
    let url = s.ws_url();
    let mut subscribers = Vec::new();
    for k in 0..SUBSCRIBERS {
        let url = url.clone();
        let ready = ready.clone();
        subscribers.push(tokio::spawn(async move {
            let token = token_topics(&format!("r{k}"), &["live"]);
            let mut seen: Vec<u64> = Vec::new();
            let mut pos: Option<(u64, String)> = None;
            let mut rounds = 0;
            while seen.last().copied() != Some(N) {
                rounds += 1;
                assert!(rounds < 1000, "bounded");
                let (stream, _) = tokio_tungstenite::connect_async(format!("{url}?token={token}"))
                    .await
                    .unwrap();
                let mut ws = Ws {
                    stream,
                    id: String::new(),
                };
                ws.next_json().await; // connected
                let mut f = json!({"op":"subscribe","topic":"live","ref":"s"});
                if let Some((o, e)) = &pos {
                    f["since"] = json!({"offset": o, "epoch": e});
                }
                ws.send_text(&f.to_string()).await;
                // read a few frames, then drop the connection mid-stream
                for _ in 0..(5 + k * 3) {
                    let v = ws.next_json().await;
                    match v["op"].as_str() {
                        Some("subscribed") => {
                            if pos.is_none() {
                                // first subscribe: nothing published yet
                                assert_eq!(v["offset"], 0);
                                pos = Some((0, v["epoch"].as_str().unwrap().to_owned()));
                                ready.wait().await;
                            } else {
                                assert_eq!(v["recovered"], true, "{v}");
                            }
                        }
                        None => {
                            let o = v["offset"].as_u64().unwrap();
                            seen.push(o);
                            if let Some(p) = pos.as_mut() {
                                p.0 = o;
                            }
                            if o == N {
                                break;
                            }
                        }
                        _ => panic!("{v}"),
                    }
                }
            }
            (seen, rounds)
        }));
    }
    publisher.await.unwrap();
    for h in subscribers {
        let (seen, rounds) = h.await.unwrap();
        let want: Vec<u64> = (1..=N).collect();
        assert_eq!(seen, want, "every offset, once, in order");
        assert!(
            rounds >= 3,
            "the subscriber dropped and recovered several times ({rounds})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_history_server_side_subscribe_and_events() {
    let s = start().await;
    let mut client = s.client().await;
    let mut watch = client
        .watch_events(authed(WatchEventsRequest { kinds: vec![3, 4] }))
        .await
        .unwrap()
        .into_inner();
    let mut a1 = s.connect("alice", &[]).await;
    let mut a2 = s.connect("alice", &[]).await;
    let mut b = s.connect("bob", &[]).await;
    // server-side subscribe needs no claim
    let r = client
        .subscribe(authed(SubscribeRequest {
            topic: "team".into(),
            target: Some(subscribe_request::Target::UserId("alice".into())),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.connections, 2);
    for ws in [&mut a1, &mut a2] {
        let f = ws.next_json().await;
        assert_eq!(
            (f["op"].as_str(), f["topic"].as_str()),
            (Some("subscribed"), Some("team"))
        );
    }
    let r = client
        .subscribe(authed(SubscribeRequest {
            topic: "team".into(),
            target: Some(subscribe_request::Target::ConnectionId(b.id.clone())),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.connections, 1);
    b.next_json().await;
    for _ in 0..3 {
        let e = tokio::time::timeout(WAIT, watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.kind, e.topic.as_str()),
            (event::Kind::Subscribed as i32, "team")
        );
    }
    let p = client
        .presence(authed(PresenceRequest {
            topic: "team".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((p.clients.len(), p.users, p.connections), (3, 2, 3));
    assert_eq!(p.next_page_token, "");
    let counts = client
        .presence(authed(PresenceRequest {
            topic: "team".into(),
            counts_only: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (counts.clients.len(), counts.users, counts.connections),
        (0, 2, 3)
    );
    let list = client
        .list_connections(authed(ListConnectionsRequest {
            topic: "team".into(),
            user_id: "alice".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.total, 2);
    let all = client
        .list_connections(authed(ListConnectionsRequest {
            topic: "team".into(),
            page_size: 2,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (all.connections.len(), all.total),
        (2, 3),
        "a topic alone pages over its subscribers"
    );
    let rest = client
        .list_connections(authed(ListConnectionsRequest {
            topic: "team".into(),
            page_size: 2,
            page_token: all.next_page_token.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (rest.connections.len(), rest.next_page_token.as_str()),
        (1, "")
    );
    assert_eq!(rest.connections[0].connection_id, b.id);
    // history
    for i in 1..=5 {
        client
            .publish(publish("team", "m", &i.to_string(), &format!("id-{i}")))
            .await
            .unwrap();
    }
    let h = client
        .history(authed(HistoryRequest {
            topic: "team".into(),
            since_offset: 2,
            limit: 2,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert_eq!(
        (
            h.latest_offset,
            h.publications[0].message_id.as_str(),
            h.publications[0].payload_json.as_str()
        ),
        (5, "id-3", "3")
    );
    assert_eq!(h.publications[0].r#type, "m");
    let none = client
        .history(authed(HistoryRequest {
            topic: "nothing".into(),
            since_offset: 0,
            limit: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            none.publications.len(),
            none.latest_offset,
            none.epoch.as_str()
        ),
        (0, 0, "")
    );
    // server-side unsubscribe, and a disconnect unsubscribes from everything
    let r = client
        .unsubscribe(authed(UnsubscribeRequest {
            topic: "team".into(),
            target: Some(unsubscribe_request::Target::ConnectionId(b.id.clone())),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.connections, 1);
    drop(a1);
    let mut left = 0;
    while left < 2 {
        let e = tokio::time::timeout(WAIT, watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.kind, e.topic.as_str()),
            (event::Kind::Unsubscribed as i32, "team")
        );
        left += 1;
    }
    let p = client
        .presence(authed(PresenceRequest {
            topic: "team".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((p.clients.len(), p.users), (1, 1));
    // invalid arguments name the field
    let e = client.publish(publish("", "m", "1", "")).await.unwrap_err();
    assert!(e.message().starts_with("topic:"), "{e:?}");
    let e = client
        .presence(authed(PresenceRequest {
            topic: "bad topic".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = client
        .subscribe(authed(SubscribeRequest {
            topic: "team".into(),
            target: Some(subscribe_request::Target::ConnectionId(
                "test.0000000000000001".into(),
            )),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_cap_answers_an_error_and_keeps_the_connection() {
    let mut c = config();
    c.topics.max_subscriptions = 2;
    let s = start_with(c).await;
    let mut ws = s.connect_token(&token_topics("u", &["*"])).await;
    assert_eq!(sub(&mut ws, "a", None, "1").await["op"], "subscribed");
    assert_eq!(sub(&mut ws, "b", None, "2").await["op"], "subscribed");
    assert_eq!(
        sub(&mut ws, "b", None, "3").await["op"],
        "subscribed",
        "again: still 2"
    );
    let e = sub(&mut ws, "c", None, "4").await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("too_many_subscriptions"), Some("4"))
    );
    ws.send_text(r#"{"op":"unsubscribe","topic":"a","ref":"5"}"#)
        .await;
    assert_eq!(ws.next_json().await["op"], "unsubscribed");
    assert_eq!(sub(&mut ws, "c", None, "6").await["op"], "subscribed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_with_no_subscriber_and_expired_history_is_forgotten() {
    let mut c = config();
    c.topics.history_ttl_ms = 300;
    c.topics.public = vec!["quiet".into()];
    c.limits.ping_interval_ms = 100; // the sweeper ticks every 25 ms
    c.limits.pong_timeout_ms = 100;
    let s = start_with(c).await;
    let mut client = s.client().await;
    let first = client
        .publish(publish("brief", "m", "1", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.offset, 1);
    let topics = |mut client: Client| async move {
        client
            .get_stats(authed(GetStatsRequest {}))
            .await
            .unwrap()
            .into_inner()
            .topics
    };
    assert_eq!(
        topics(client.clone()).await,
        1,
        "kept while its history lives"
    );
    // A quiet topic (never published) that its subscriber leaves keeps its position.
    let mut ws = s.connect("q", &[]).await;
    let quiet = sub(&mut ws, "quiet", None, "1").await;
    assert_eq!(quiet["op"], "subscribed", "{quiet}");
    drop(ws);
    eventually("the topic to be forgotten", || {
        let client = client.clone();
        async move { topics(client).await == 0 }
    })
    .await;
    let h = client
        .history(authed(HistoryRequest {
            topic: "brief".into(),
            since_offset: 0,
            limit: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (h.publications.len(), h.latest_offset, h.epoch.as_str()),
        (0, 0, "")
    );
    // it starts again with a new epoch and offsets from 1
    let again = client
        .publish(publish("brief", "m", "2", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.offset, 1);
    assert_ne!(again.epoch, first.epoch);
    // The sweeps that forgot "brief" kept "quiet": a client that saw all of it recovers.
    let mut ws = s.connect("q", &[]).await;
    let since = json!({"offset": 0, "epoch": quiet["epoch"]});
    let back = sub(&mut ws, "quiet", Some(since), "2").await;
    assert_eq!(
        (back["recovered"].clone(), back["epoch"].clone()),
        (json!(true), quiet["epoch"].clone())
    );
}

/// Publishes 1..=5 to `topic` through the gRPC door, then reads them back through the hub in
/// every direction a history read walks (the store does the walking and the limiting).
pub async fn history_queries_walk_both_ways(s: &TestServer, topic: &str) {
    use boundary_realtime::core::model::HistoryQuery;
    let mut client = s.client().await;
    for i in 1..=5 {
        client
            .publish(publish(topic, "m", &i.to_string(), &format!("id{i}")))
            .await
            .unwrap();
    }
    let q = |since, limit, reverse| HistoryQuery {
        since,
        limit,
        reverse,
    };
    let cases: [(HistoryQuery, &[u64]); 7] = [
        (q(None, 10, false), &[1, 2, 3, 4, 5]),
        (q(Some(2), 2, false), &[3, 4]),
        (q(Some(5), 10, false), &[]),
        (q(None, 2, true), &[5, 4]),
        (q(Some(4), 10, true), &[3, 2, 1]),
        (q(Some(1), 10, true), &[]),
        (q(None, 0, true), &[]),
    ];
    for (query, want) in cases {
        let page = s.hub().history(topic, query).await.unwrap();
        let got: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
        assert_eq!((query, got.as_slice()), (query, want));
        assert_eq!(page.latest, 5);
        assert!(!page.epoch.is_empty());
    }
    let page = s.hub().history(topic, q(Some(3), 1, false)).await.unwrap();
    let kept = &page.publications[0];
    assert_eq!(
        (
            kept.kind.as_str(),
            kept.payload_json.as_str(),
            kept.message_id.as_str()
        ),
        ("m", "4", "id4")
    );
    let none = s
        .hub()
        .history("never-used", q(None, 10, true))
        .await
        .unwrap();
    assert_eq!(
        (none.publications.len(), none.latest, none.epoch.as_str()),
        (0, 0, "")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_walk_forward_and_back_in_memory() {
    let s = start().await;
    history_queries_walk_both_ways(&s, "walk").await;
}

/// Subscribes `n` connections (users u0, u1, u2 in turn) to `topic`, spread over `servers`,
/// then pages through Presence on the first with `page_size` 2: every subscriber listed once,
/// in order, the counts of all of them on every page; `counts_only` lists no one.
pub async fn presence_pages_and_counts(servers: &[&TestServer], topic: &str, n: usize) -> Vec<Ws> {
    let mut conns = Vec::new();
    for i in 0..n {
        let s = servers[i % servers.len()];
        let mut ws = s
            .connect_token(&token_topics(&format!("u{}", i % 3), &["**"]))
            .await;
        ws.send_text(&json!({"op":"subscribe","topic":topic,"ref":1}).to_string())
            .await;
        assert_eq!(ws.next_json().await["op"], "subscribed");
        conns.push(ws);
    }
    let mut client = servers[0].client().await;
    let mut token = String::new();
    let mut seen = Vec::new();
    loop {
        let p = client
            .presence(authed(PresenceRequest {
                topic: topic.into(),
                page_size: 2,
                page_token: token.clone(),
                counts_only: false,
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(p.clients.len() <= 2);
        assert_eq!(
            (p.users, p.connections),
            (3, n as u32),
            "counts of all, on every page"
        );
        seen.extend(p.clients.into_iter().map(|c| c.connection_id));
        if p.next_page_token.is_empty() {
            break;
        }
        token = p.next_page_token;
    }
    let mut want: Vec<String> = conns.iter().map(|c| c.id.clone()).collect();
    want.sort_by_key(|id| {
        let (node, seq) = id.rsplit_once('.').unwrap();
        (node.to_owned(), u64::from_str_radix(seq, 16).unwrap())
    });
    assert_eq!(
        seen, want,
        "each subscriber once, in ListConnections' order"
    );
    let counts = client
        .presence(authed(PresenceRequest {
            topic: topic.into(),
            counts_only: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            counts.clients.len(),
            counts.users,
            counts.connections,
            counts.next_page_token.as_str()
        ),
        (0, 3, n as u32, "")
    );
    let e = client
        .presence(authed(PresenceRequest {
            topic: topic.into(),
            page_token: "not-a-token".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(e.message().starts_with("page_token:"), "{e:?}");
    conns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_pages_with_counts_of_all() {
    let s = start().await;
    presence_pages_and_counts(&[&s], "room", 5).await;
}
