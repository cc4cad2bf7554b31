//! Cluster mode: two or three nodes (in-process servers, and a real process where one must be
//! killed) share a real `redis-server` of the test's own, and every RPC answers the same on any
//! node (PROTOCOL.md section 3).

use std::time::Duration;

use boundary_realtime::config::Config;
use boundary_realtime::proto::{self, event::Kind};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tonic::Code;

use crate::common::*;

fn node_config(redis: &RedisProc, id: &str) -> Config {
    let mut c = config();
    c.node.id = id.into();
    c.broker.kind = boundary_realtime::config::BrokerKind::Redis;
    c.broker.redis_url = redis.url();
    c.broker.node_ttl_ms = 1500;
    c.topics.public = vec!["**".into()];
    c
}

/// One or more Redis instances of the test's own, for nodes to spread their topics and users
/// over (`[broker] redis_urls`).
struct Instances(Vec<RedisProc>);

impl Instances {
    fn start(n: usize) -> Self {
        Instances((0..n).map(|_| RedisProc::start()).collect())
    }

    /// Stops every instance.
    fn stop(&mut self) {
        self.0.iter_mut().for_each(RedisProc::stop);
    }

    /// Starts every instance again.
    fn restart(&mut self) {
        self.0.iter_mut().for_each(RedisProc::restart);
    }
}

async fn nodes(redis: &RedisProc, ids: &[&str]) -> Vec<TestServer> {
    nodes_with(ids, |id| node_config(redis, id)).await
}

async fn nodes_on(redis: &Instances, ids: &[&str]) -> Vec<TestServer> {
    nodes_with(ids, |id| {
        let mut c = node_config(&redis.0[0], id);
        if redis.0.len() > 1 {
            c.broker.redis_urls = redis.0.iter().map(RedisProc::url).collect();
        }
        c
    })
    .await
}

async fn nodes_with(ids: &[&str], config: impl Fn(&str) -> Config) -> Vec<TestServer> {
    let mut out = Vec::new();
    for id in ids {
        out.push(start_with(config(id)).await);
    }
    let n = ids.len() as u32;
    let mut client = out[0].client().await;
    // Until every node has vouched for the others, calls answer UNAVAILABLE: wait it out.
    eventually("the nodes to see each other", || {
        let mut client = client.clone();
        async move {
            client
                .get_stats(authed(proto::GetStatsRequest {}))
                .await
                .is_ok_and(|r| r.into_inner().nodes == n)
        }
    })
    .await;
    let _ = &mut client;
    out
}

async fn stats(client: &mut Client) -> proto::Stats {
    client
        .get_stats(authed(proto::GetStatsRequest {}))
        .await
        .expect("GetStats")
        .into_inner()
}

async fn subscribe(ws: &mut Ws, topic: &str, since: Option<Value>) -> Value {
    let mut f = json!({"op":"subscribe","topic":topic,"ref":"s"});
    if let Some(s) = since {
        f["since"] = s;
    }
    ws.send_text(&f.to_string()).await;
    loop {
        let v = ws.next_json().await;
        if v["op"] == "subscribed" {
            return v;
        }
    }
}

async fn publish(
    client: &mut Client,
    topic: &str,
    payload: &str,
    id: &str,
) -> proto::PublishResponse {
    client
        .publish(authed(proto::PublishRequest {
            topic: topic.into(),
            message: Some(proto::Message {
                r#type: "news".into(),
                payload_json: payload.into(),
                id: id.into(),
            }),
        }))
        .await
        .expect("Publish")
        .into_inner()
}

async fn list_all(client: &mut Client, page_size: u32) -> (Vec<proto::Connection>, u32) {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let p = client
            .list_connections(authed(proto::ListConnectionsRequest {
                page_size,
                page_token: token.clone(),
                ..Default::default()
            }))
            .await
            .expect("ListConnections")
            .into_inner();
        out.extend(p.connections);
        if p.next_page_token.is_empty() {
            return (out, p.total);
        }
        token = p.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_reaches_every_node_and_counts_once() {
    every_delivery_reaches_every_node_and_counts_once_on(1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_reaches_every_node_and_counts_once_on_two_redis_instances() {
    every_delivery_reaches_every_node_and_counts_once_on(2).await
}

async fn every_delivery_reaches_every_node_and_counts_once_on(instances: usize) {
    let redis = Instances::start(instances);
    let n = nodes_on(&redis, &["a", "b"]).await;
    let mut on_a = n[0].connect("u1", &["staff"]).await;
    let mut on_b = n[1].connect("u1", &[]).await;
    let mut other = n[1].connect("u2", &["staff"]).await;
    let mut via_a = n[0].client().await;
    let mut via_b = n[1].client().await;

    assert_eq!(send_user(&mut via_a, "u1", "dm", "1").await, 2);
    for ws in [&mut on_a, &mut on_b] {
        let f = ws.next_json().await;
        assert_eq!(
            (f["type"].as_str(), f["payload"].as_i64()),
            (Some("dm"), Some(1))
        );
    }
    assert_eq!(send_role(&mut via_b, "staff", "role", "2").await, 2);
    for ws in [&mut on_a, &mut other] {
        assert_eq!(ws.next_json().await["type"], "role");
    }
    let r = via_b
        .send_to_connection(authed(proto::SendToConnectionRequest {
            connection_id: on_a.id.clone(),
            message: msg("one", "3"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.connections, 1);
    assert_eq!(on_a.next_json().await["type"], "one");
    let all = via_a
        .broadcast(authed(proto::BroadcastRequest {
            message: msg("all", "4"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.connections, 3);
    for ws in [&mut on_a, &mut on_b, &mut other] {
        assert_eq!(ws.next_json().await["type"], "all");
    }
    assert_eq!(send_user(&mut via_b, "nobody", "dm", "5").await, 0);
    for id in ["b.00000000deadbeef", "gone.0000000000000001", "garbage"] {
        let e = via_a
            .send_to_connection(authed(proto::SendToConnectionRequest {
                connection_id: id.into(),
                message: msg("x", "1"),
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{id}");
    }
    // Nothing else reached anyone: no copy through a second path.
    n[1].assert_nothing_pending(&mut via_a, &mut [&mut on_a, &mut on_b, &mut other])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_and_commands_are_cluster_wide() {
    questions_and_commands_are_cluster_wide_on(1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_and_commands_are_cluster_wide_on_two_redis_instances() {
    questions_and_commands_are_cluster_wide_on(2).await
}

async fn questions_and_commands_are_cluster_wide_on(instances: usize) {
    let redis = Instances::start(instances);
    let n = nodes_on(&redis, &["a", "b"]).await;
    let mut a1 = n[0].connect("u1", &[]).await;
    let mut b1 = n[1].connect("u1", &["ops"]).await;
    let mut b2 = n[1].connect("u2", &[]).await;
    let mut via_a = n[0].client().await;
    let mut via_b = n[1].client().await;

    // ListConnections pages across nodes in (node, sequence) order with no duplicate.
    let (conns, total) = list_all(&mut via_b, 1).await;
    let ids: Vec<&str> = conns.iter().map(|c| c.connection_id.as_str()).collect();
    assert_eq!(ids, [a1.id.as_str(), b1.id.as_str(), b2.id.as_str()]);
    assert_eq!(total, 3);
    assert_eq!(conns[1].node_id, "b");
    assert_eq!(conns[1].roles, ["ops"]);
    assert_eq!(conns[1].protocol, "native");
    let by_user = via_a
        .list_connections(authed(proto::ListConnectionsRequest {
            user_id: "u1".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_user.total, 2);

    let got = via_a
        .get_connection(authed(proto::GetConnectionRequest {
            connection_id: b2.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((got.user_id.as_str(), got.node_id.as_str()), ("u2", "b"));

    let s = stats(&mut via_a).await;
    assert_eq!((s.connections, s.users, s.nodes), (3, 2, 2));

    // A server-side Subscribe by user through A subscribes the connections on both nodes.
    let r = via_a
        .subscribe(authed(proto::SubscribeRequest {
            topic: "room".into(),
            target: Some(proto::subscribe_request::Target::UserId("u1".into())),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.connections, 2);
    for ws in [&mut a1, &mut b1] {
        let f = ws.next_json().await;
        assert_eq!(
            (f["op"].as_str(), f["topic"].as_str()),
            (Some("subscribed"), Some("room"))
        );
    }
    subscribe(&mut b2, "room", None).await;
    let p = via_b
        .presence(authed(proto::PresenceRequest {
            topic: "room".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((p.clients.len(), p.users), (3, 2));
    assert_eq!(stats(&mut via_b).await.topics, 1);

    let r = via_b
        .unsubscribe(authed(proto::UnsubscribeRequest {
            topic: "room".into(),
            target: Some(proto::unsubscribe_request::Target::ConnectionId(
                a1.id.clone(),
            )),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.connections, 1);
    assert_eq!(a1.next_json().await["op"], "unsubscribed");

    // Disconnect by user through B closes the user's connections on A and B with the code.
    let d = via_b
        .disconnect(authed(proto::DisconnectRequest {
            code: 4321,
            reason: "bye".into(),
            target: Some(proto::disconnect_request::Target::UserId("u1".into())),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.disconnected, 2);
    for ws in [&mut a1, &mut b1] {
        let (code, reason, _) = ws.next_close().await;
        assert_eq!((code, reason.as_str()), (4321, "bye"));
    }
    let e = via_a
        .disconnect(authed(proto::DisconnectRequest {
            code: 0,
            reason: String::new(),
            target: Some(proto::disconnect_request::Target::ConnectionId(
                a1.id.clone(),
            )),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    eventually("the cluster to count one connection", || {
        let mut c = via_a.clone();
        async move { stats(&mut c).await.connections == 1 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_through_any_node_make_one_gapless_order_and_recover_anywhere() {
    publishes_through_any_node_make_one_gapless_order_and_recover_anywhere_on(1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_through_any_node_make_one_gapless_order_and_recover_anywhere_on_two_redis_instances(
) {
    publishes_through_any_node_make_one_gapless_order_and_recover_anywhere_on(2).await
}

async fn publishes_through_any_node_make_one_gapless_order_and_recover_anywhere_on(
    instances: usize,
) {
    let redis = Instances::start(instances);
    let n = nodes_on(&redis, &["a", "b"]).await;
    let mut sa = n[0].connect("sa", &[]).await;
    let mut sb = n[1].connect("sb", &[]).await;
    let first = subscribe(&mut sa, "feed", None).await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    assert_eq!(first["offset"], 0);
    subscribe(&mut sb, "feed", None).await;
    let via = [n[0].client().await, n[1].client().await];
    const N: u64 = 60;
    // Four concurrent publishers, two through each node.
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let mut c = via[(w % 2) as usize].clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..N / 4 {
                let p = publish(&mut c, "feed", &(w * 100 + i).to_string(), "").await;
                assert_eq!(p.connections, 2, "both subscribers, counted once");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for ws in [&mut sa, &mut sb] {
        for want in 1..=N {
            let f = ws.next_json().await;
            assert_eq!(
                (f["offset"].as_u64(), f["epoch"].as_str()),
                (Some(want), Some(epoch.as_str()))
            );
        }
    }
    // A retry with the same id through the other node is not delivered again.
    let mut c0 = via[0].clone();
    let mut c1 = via[1].clone();
    let p1 = publish(&mut c0, "feed", "1", "order-7").await;
    let p2 = publish(&mut c1, "feed", "1", "order-7").await;
    assert_eq!(
        (p2.offset, p2.epoch.as_str(), p2.connections),
        (p1.offset, p1.epoch.as_str(), 0)
    );
    assert_eq!(sa.next_json().await["offset"], N + 1);
    assert_eq!(sb.next_json().await["offset"], N + 1);
    let hist = c1
        .history(authed(proto::HistoryRequest {
            topic: "feed".into(),
            since_offset: N - 1,
            limit: 10,
        }))
        .await
        .unwrap()
        .into_inner();
    let offs: Vec<u64> = hist.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offs, [N, N + 1]);
    assert_eq!(hist.publications[1].message_id, "order-7");
    assert_eq!(
        (hist.latest_offset, hist.epoch.as_str()),
        (N + 1, epoch.as_str())
    );

    // A client that was on A comes back on B with its position: it gets what it missed.
    drop(sa);
    for i in 0..3 {
        publish(&mut c0, "feed", &i.to_string(), "").await;
    }
    let mut back = n[1].connect("sa", &[]).await;
    back.send_text(
        &json!({"op":"subscribe","topic":"feed","since":{"offset":N + 1,"epoch":epoch},"ref":"r"})
            .to_string(),
    )
    .await;
    for want in N + 2..=N + 4 {
        assert_eq!(back.next_json().await["offset"], want);
    }
    let done = back.next_json().await;
    assert_eq!(
        done,
        json!({"op":"subscribed","topic":"feed","offset":N + 4,"epoch":epoch,"recovered":true,"ref":"r"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_every_nodes_events() {
    a_watcher_sees_every_nodes_events_on(1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_every_nodes_events_on_two_redis_instances() {
    a_watcher_sees_every_nodes_events_on(2).await
}

async fn a_watcher_sees_every_nodes_events_on(instances: usize) {
    let redis = Instances::start(instances);
    let n = nodes_on(&redis, &["a", "b"]).await;
    let mut via_a = n[0].client().await;
    let mut events = via_a
        .watch_events(authed(proto::WatchEventsRequest { kinds: vec![] }))
        .await
        .unwrap()
        .into_inner();
    let mut ws = n[1].connect("w", &[]).await;
    subscribe(&mut ws, "t", None).await;
    let e = next_event(&mut events).await;
    let c = e.connection.unwrap();
    assert_eq!(
        (e.kind, c.node_id.as_str(), c.connection_id.as_str()),
        (Kind::Connected as i32, "b", ws.id.as_str())
    );
    let e = next_event(&mut events).await;
    assert_eq!((e.kind, e.topic.as_str()), (Kind::Subscribed as i32, "t"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centrifuge_connections_work_across_nodes() {
    use crate::centrifuge::{connected, news_token};
    use serde_json::json;
    let redis = RedisProc::start();
    let n = nodes(&redis, &["a", "b"]).await;
    let mut via_a = n[0].client().await;
    let mut events = via_a
        .watch_events(authed(proto::WatchEventsRequest { kinds: vec![] }))
        .await
        .unwrap()
        .into_inner();
    let (mut on_b, c) = connected(&n[1], &news_token("ann")).await;
    let id = c["client"].as_str().unwrap().to_owned();
    assert!(id.starts_with("b."), "{id}");
    let e = next_event(&mut events).await;
    let conn = e.connection.unwrap();
    assert_eq!(
        (e.kind, conn.connection_id.as_str(), conn.protocol.as_str()),
        (Kind::Connected as i32, id.as_str(), "centrifuge-json")
    );
    on_b.send(&[json!({"id":2,"subscribe":{"channel":"news","join_leave":true}})])
        .await;
    assert!(on_b.next().await["subscribe"].is_object());
    assert_eq!(
        on_b.next().await["push"]["join"]["info"]["client"],
        id.as_str()
    );
    // A subscriber on the other node: its join and leave cross over.
    let (mut on_a, ca) = connected(&n[0], &news_token("bob")).await;
    let ida = ca["client"].as_str().unwrap().to_owned();
    on_a.send(&[json!({"id":2,"subscribe":{"channel":"news"}})])
        .await;
    assert!(on_a.next().await["subscribe"].is_object());
    assert_eq!(
        on_b.next().await,
        json!({"push":{"channel":"news","join":{"info":{"user":"bob","client":ida}}}})
    );
    let p = publish(&mut via_a, "news", "1", "").await;
    assert_eq!(p.connections, 2);
    assert_eq!(on_b.next().await["push"]["pub"]["offset"], 1);
    assert_eq!(on_a.next().await["push"]["pub"]["offset"], 1);
    assert_eq!(send_user(&mut via_a, "ann", "direct", "7").await, 1);
    assert_eq!(on_b.next().await["push"]["message"]["data"]["payload"], 7);
    let (all, _) = list_all(&mut via_a, 10).await;
    let mut protocols: Vec<(String, String)> = all
        .iter()
        .map(|c| (c.connection_id.clone(), c.protocol.clone()))
        .collect();
    protocols.sort();
    assert_eq!(
        protocols,
        vec![
            (ida.clone(), "centrifuge-json".to_owned()),
            (id.clone(), "centrifuge-json".to_owned())
        ]
    );
    drop(on_a);
    assert_eq!(
        on_b.next().await["push"]["leave"]["info"]["client"],
        ida.as_str()
    );
    via_a
        .disconnect(authed(proto::DisconnectRequest {
            code: 4500,
            reason: "bye".into(),
            target: Some(proto::disconnect_request::Target::ConnectionId(id)),
        }))
        .await
        .unwrap();
    assert_eq!(on_b.next_close().await, (4500, "bye".into()));
}

async fn redis_conn(redis: &RedisProc) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("a test connection to Redis")
}

async fn numsub(con: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let v: (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(con)
        .await
        .unwrap();
    v.1
}

/// A node subscribes to a user's channel only while it holds one of the user's connections,
/// once however many it holds, and lets it go shortly after the last one leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_channel_is_held_by_need_and_released_after_a_linger() {
    let redis = RedisProc::start();
    let n = nodes(&redis, &["a", "b"]).await;
    let mut con = redis_conn(&redis).await;
    assert_eq!(numsub(&mut con, "rt:u:carol").await, 0);
    let first = n[0].connect("carol", &["team"]).await;
    let second = n[0].connect("carol", &["team"]).await;
    assert_eq!(
        numsub(&mut con, "rt:u:carol").await,
        1,
        "one subscription for the node"
    );
    assert_eq!(numsub(&mut con, "rt:r:team").await, 1);
    let on_b = n[1].connect("carol", &[]).await;
    assert_eq!(numsub(&mut con, "rt:u:carol").await, 2);
    drop(on_b);
    drop(first);
    eventually("node b to let carol's channel go", || {
        let mut con = con.clone();
        async move { numsub(&mut con, "rt:u:carol").await == 1 }
    })
    .await;
    // Node a still holds one of carol's connections: it keeps the channel, past the linger
    // after which an unused channel would have gone.
    let linger = boundary_realtime::cluster::redis::interest::LINGER;
    throughout("node a to keep carol's channel", linger * 3 / 2, || {
        let mut con = con.clone();
        async move { numsub(&mut con, "rt:u:carol").await == 1 }
    })
    .await;
    drop(second);
    eventually("node a to let carol's and the role's channels go", || {
        let mut con = con.clone();
        async move {
            numsub(&mut con, "rt:u:carol").await == 0 && numsub(&mut con, "rt:r:team").await == 0
        }
    })
    .await;
}

/// A publication lost on its way to the nodes (written to history, never published) leaves a
/// gap; the next live one reveals it, and each node catches up from history before going on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_live_stream_is_filled_from_history() {
    let redis = RedisProc::start();
    let n = nodes(&redis, &["a", "b"]).await;
    let mut ws = n[1].connect("g", &[]).await;
    let sub = subscribe(&mut ws, "gap", None).await;
    let epoch = sub["epoch"].as_str().unwrap().to_owned();
    let mut via_a = n[0].client().await;
    publish(&mut via_a, "gap", "1", "").await;
    assert_eq!(ws.next_json().await["offset"], 1);
    // What the publish script does, minus the PUBLISH: offset 2 exists only in history.
    let mut con = redis_conn(&redis).await;
    let offset: u64 = redis::cmd("HINCRBY")
        .arg("rt:hm:{gap}")
        .arg("s")
        .arg(1)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(offset, 2);
    let frame = json!({"type":"news","payload":"lost","id":"x2","ts":1,"topic":"gap","offset":2,"epoch":epoch})
        .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let _: String = redis::cmd("XADD")
        .arg("rt:h:{gap}")
        .arg("2-0")
        .arg("f")
        .arg(&frame)
        .arg("m")
        .arg("")
        .arg("t")
        .arg(now)
        .query_async(&mut con)
        .await
        .unwrap();
    let p = publish(&mut via_a, "gap", "3", "").await;
    assert_eq!(
        (p.offset, p.connections),
        (3, 1),
        "counted though it waited for the gap"
    );
    let two = ws.next_json().await;
    assert_eq!(
        (two["offset"].as_u64(), two["payload"].as_str()),
        (Some(2), Some("lost"))
    );
    let three = ws.next_json().await;
    assert_eq!(
        (three["offset"].as_u64(), three["payload"].as_i64()),
        (Some(3), Some(3))
    );
    let metrics = http_get(n[1].http, "/metrics").await;
    assert!(
        metrics.contains("realtime_cluster_gap_repairs_total 1"),
        "{metrics}"
    );
}

/// The load tool spreads its connections over the nodes and calls through one of them; it
/// counts exactly what the calls deliver, cluster-wide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_drives_a_cluster() {
    let redis = RedisProc::start();
    let n = nodes(&redis, &["a", "b"]).await;
    let ws = format!("{},{}", n[0].ws_url(), n[1].ws_url());
    let grpc = format!("http://{}", n[1].grpc);
    for (mode, expected) in crate::bench::SMOKE_CASES {
        let mut args = vec![mode];
        args.extend(crate::bench::SMOKE_ARGS);
        let opts = crate::bench::options_with(&ws, &grpc, &args);
        let r = boundary_realtime_bench::run(&opts)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(r.connect.opened, 12, "{mode}");
        assert_eq!(r.calls.errors, 0, "{mode}: {:?}", r.calls.first_error);
        assert_eq!(r.deliveries.received, expected, "{mode}");
        assert_eq!(
            (
                r.deliveries.lost,
                r.deliveries.out_of_order,
                r.deliveries.duplicates
            ),
            (0, 0, 0),
            "{mode}"
        );
        eventually("the tool's connections to close", || async {
            n[0].hub().local().registry.is_empty() && n[1].hub().local().registry.is_empty()
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_with_the_same_id_is_refused() {
    let redis = RedisProc::start();
    let _a = nodes(&redis, &["same"]).await;
    let err = boundary_realtime::server::Server::start(node_config(&redis, "same"))
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.starts_with("broker.redis_url: another node with id \"same\" is live"),
        "{msg}"
    );
}

/// A node process killed without a goodbye leaves the cluster view within `node_ttl_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_disappears_and_a_live_one_stays() {
    let redis = RedisProc::start();
    let a = start_with(node_config(&redis, "a")).await;
    let url = redis.url();
    let (mut child, http, _grpc, _logs) = spawn_serve(&[
        ("REALTIME_BROKER__KIND", "redis"),
        ("REALTIME_BROKER__REDIS_URL", url.as_str()),
        ("REALTIME_BROKER__NODE_TTL_MS", "1500"),
        ("REALTIME_TOPICS__PUBLIC", "**"),
        ("REALTIME_NODE__ID", "killed"),
    ]);
    let mut via_a = a.client().await;
    eventually("the process to join", || {
        let mut c = via_a.clone();
        async move {
            c.get_stats(authed(proto::GetStatsRequest {}))
                .await
                .is_ok_and(|r| r.into_inner().nodes == 2)
        }
    })
    .await;
    let (stream, _) =
        tokio_tungstenite::connect_async(format!("ws://{http}/ws?token={}", token("victim", &[])))
            .await
            .unwrap();
    let mut victim = Ws {
        stream,
        id: String::new(),
    };
    assert_eq!(victim.next_json().await["op"], "connected");
    subscribe(&mut victim, "room", None).await;
    let mut local = a.connect("stays", &[]).await;
    subscribe(&mut local, "room", None).await;
    let p = via_a
        .presence(authed(proto::PresenceRequest {
            topic: "room".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.clients.len(), 2);

    child.0.kill().unwrap();
    let _ = child.0.wait();
    let killed_at = std::time::Instant::now();
    eventually("the killed node to leave the cluster view", || {
        let mut c = via_a.clone();
        async move {
            let s = stats(&mut c).await;
            let p = c
                .presence(authed(proto::PresenceRequest {
                    topic: "room".into(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            s.nodes == 1 && s.connections == 1 && p.clients.len() == 1
        }
    })
    .await;
    assert!(
        killed_at.elapsed() < Duration::from_millis(1500 + 1000),
        "within node_ttl_ms"
    );
    let (conns, _) = list_all(&mut via_a, 10).await;
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].connection_id, local.id);
    // The sweep takes the dead node's counts out of Redis, and leaves the live one's.
    let mut con = redis_conn(&redis).await;
    eventually("the dead node's counts to be swept", || {
        let mut con = con.clone();
        async move {
            let ids: i64 = redis::cmd("EXISTS")
                .arg("rt:cx:killed")
                .query_async(&mut con)
                .await
                .unwrap();
            let room: Vec<String> = redis::cmd("HKEYS")
                .arg("rt:tc:{room}")
                .query_async(&mut con)
                .await
                .unwrap();
            let users: Vec<String> = redis::cmd("HKEYS")
                .arg("rt:tu:{room}")
                .query_async(&mut con)
                .await
                .unwrap();
            ids == 0 && room == ["a"] && users == ["stays"]
        }
    })
    .await;
    let counts = via_a
        .presence(authed(proto::PresenceRequest {
            topic: "room".into(),
            counts_only: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((counts.connections, counts.users), (1, 1));
    let live: i64 = redis::cmd("SCARD")
        .arg("rt:cx:a")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(live, 1);
    // The survivor itself never disappears from its own view while it runs: not for longer
    // than the node_ttl_ms after which a silent node is dropped.
    let ttl = Duration::from_millis(node_config(&redis, "a").broker.node_ttl_ms);
    throughout("the survivor to see itself", ttl * 4 / 3, || {
        let mut c = via_a.clone();
        async move { stats(&mut c).await.nodes == 1 }
    })
    .await;
    assert_eq!(send_user(&mut via_a, "stays", "still", "1").await, 1);
    assert_eq!(local.next_json().await["type"], "still");
}

/// Redis stopped in the middle of traffic: not ready, UNAVAILABLE (never a false success),
/// sockets stay open; Redis back: ready again, deliveries resume, and the topic's new epoch
/// is told to its subscriber (no silent gap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_survived() {
    a_redis_restart_is_survived_on(1).await
}

/// The same with topics and users over two Redis instances, both restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_survived_on_two_redis_instances() {
    a_redis_restart_is_survived_on(2).await
}

async fn a_redis_restart_is_survived_on(instances: usize) {
    let mut redis = Instances::start(instances);
    let n = nodes_on(&redis, &["a", "b"]).await;
    let mut ws = n[1].connect("r", &[]).await;
    let sub = subscribe(&mut ws, "live", None).await;
    let old_epoch = sub["epoch"].as_str().unwrap().to_owned();
    let mut via_a = n[0].client().await;
    publish(&mut via_a, "live", "1", "").await;
    assert_eq!(ws.next_json().await["offset"], 1);
    let ready = |addr: std::net::SocketAddr| async move {
        let body = http_get(addr, "/readyz").await;
        body.starts_with("HTTP/1.1 200")
    };
    assert!(ready(n[0].http).await);

    redis.stop();
    eventually("readyz to fail while Redis is down", || async {
        !ready(n[0].http).await
    })
    .await;
    let e = via_a
        .send_to_user(authed(proto::SendToUserRequest {
            user_id: "r".into(),
            message: msg("lost", "1"),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let e = via_a
        .publish(authed(proto::PublishRequest {
            topic: "live".into(),
            message: msg("lost", "1"),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    // The socket is still open: a ping is answered by the node (it does not need Redis).
    ws.send_text(r#"{"op":"ping","ref":"p"}"#).await;
    assert_eq!(ws.next_json().await, json!({"op":"pong","ref":"p"}));

    redis.restart();
    eventually("both nodes to be ready again", || async {
        ready(n[0].http).await && ready(n[1].http).await
    })
    .await;
    // Readiness follows the first instance; the others come back on their own.
    eventually(
        "both nodes to be subscribed to every instance again",
        || async {
            let want = format!("realtime_cluster_subscribed_total {}", 2 * instances);
            http_get(n[0].http, "/metrics").await.contains(&want)
                && http_get(n[1].http, "/metrics").await.contains(&want)
        },
    )
    .await;
    // Without persistence the topic and the user stream start new epochs, and the client is
    // told of both (in either order).
    let (a, b) = (ws.next_json().await, ws.next_json().await);
    let (reset, user) = if a["op"] == "subscribed" {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(
        (reset["op"].as_str(), reset["recovered"].as_bool()),
        (Some("subscribed"), Some(false)),
        "{reset}"
    );
    assert_ne!(reset["epoch"], old_epoch.as_str());
    assert_eq!(
        (user["op"].as_str(), user["recovered"].as_bool()),
        (Some("user_stream"), Some(false)),
        "{user}"
    );
    assert_eq!(send_user(&mut via_a, "r", "back", "1").await, 1);
    let back = ws.next_json().await;
    assert_eq!(
        (&back["type"], &back["offset"]),
        (&json!("back"), &json!(1))
    );
    assert_eq!(back["epoch"], user["epoch"]);
    let metrics = http_get(n[1].http, "/metrics").await;
    assert!(metrics.contains("realtime_ready 1"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "realtime_cluster_subscribed_total {}",
            2 * instances
        )),
        "subscribed to each instance at start and once after the restart: {metrics}"
    );
    let p = publish(&mut via_a, "live", "2", "").await;
    assert_eq!((p.offset, p.connections), (1, 1));
    let f = ws.next_json().await;
    assert_eq!(
        (f["offset"].as_u64(), &f["epoch"]),
        (Some(1), &reset["epoch"])
    );
}

/// SendToUser every few milliseconds while Redis stops and comes back: every call that
/// answered OK was delivered (no false success), every other one answered UNAVAILABLE, the
/// socket stayed open throughout, and nothing arrived twice or out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_through_a_redis_restart_never_reports_a_false_success() {
    traffic_through_a_redis_restart_never_reports_a_false_success_on(1).await
}

/// The same with topics and users over two Redis instances, both restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_through_a_redis_restart_never_reports_a_false_success_on_two_redis_instances() {
    traffic_through_a_redis_restart_never_reports_a_false_success_on(2).await
}

async fn traffic_through_a_redis_restart_never_reports_a_false_success_on(instances: usize) {
    use std::sync::{Arc, Mutex};
    let mut redis = Instances::start(instances);
    let n = nodes_on(&redis, &["a", "b"]).await;
    let mut ws = n[1].connect("t", &[]).await;
    let via_a = n[0].client().await;
    type Outcomes = Arc<Mutex<Vec<(u64, Result<u32, Code>)>>>;
    let results: Outcomes = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (results, stop, mut c) = (Arc::clone(&results), Arc::clone(&stop), via_a.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = c
                    .send_to_user(authed(proto::SendToUserRequest {
                        user_id: "t".into(),
                        message: msg("tick", &i.to_string()),
                    }))
                    .await
                    .map(|r| r.into_inner().connections)
                    .map_err(|e| e.code());
                results.lock().unwrap().push((i, r));
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let count = |ok: bool| {
        let results = Arc::clone(&results);
        move || {
            let n = results
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, r)| r.is_ok() == ok)
                .count();
            async move { n }
        }
    };
    let (oks, errs) = (count(true), count(false));
    eventually("calls to succeed before the stop", || {
        let f = oks();
        async move { f.await >= 20 }
    })
    .await;
    redis.stop();
    eventually("calls to fail while Redis is down", || {
        let f = errs();
        async move { f.await >= 1 }
    })
    .await;
    redis.restart();
    let before = oks().await;
    eventually("calls to succeed again after the restart", || {
        let f = oks();
        async move { f.await >= before + 20 }
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.await.unwrap();
    let results = results.lock().unwrap().clone();
    let mut delivered = Vec::new();
    for (i, r) in &results {
        match r {
            Ok(c) => {
                let around: Vec<_> = results
                    .iter()
                    .filter(|(j, _)| j.abs_diff(*i) <= 4)
                    .collect();
                assert_eq!(*c, 1, "call {i}: {around:?}");
                delivered.push(*i);
            }
            Err(code) => assert_eq!(*code, Code::Unavailable, "call {i}"),
        }
    }
    // Everything that answered OK arrives, in order; calls that failed may or may not have
    // reached the node (a lost answer), but nothing arrives twice.
    let mut got = Vec::new();
    while got.last() != delivered.last() {
        let f = ws.next_json().await;
        if f["op"] == "user_stream" {
            // The restart lost the user stream's position: said, then the stream goes on.
            assert_eq!(f["recovered"], false, "{f}");
            continue;
        }
        assert_eq!(f["type"], "tick", "{f}");
        got.push(f["payload"].as_u64().unwrap());
    }
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicate: {got:?}"
    );
    for i in &delivered {
        assert!(
            got.contains(i),
            "call {i} answered OK but was not delivered"
        );
    }
}

async fn next_event(events: &mut tonic::Streaming<proto::Event>) -> proto::Event {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("an event")
        .expect("the stream goes on")
        .expect("an event, not an error")
}

/// A raw HTTP/1.1 GET; the response as text.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_walk_forward_and_back_in_redis() {
    let redis = RedisProc::start();
    let n = nodes(&redis, &["a"]).await;
    crate::topics::history_queries_walk_both_ways(&n[0], "walk").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_pages_and_counts_across_nodes() {
    presence_pages_and_counts_across_nodes_on(1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_pages_and_counts_across_nodes_on_two_redis_instances() {
    presence_pages_and_counts_across_nodes_on(2).await
}

async fn presence_pages_and_counts_across_nodes_on(instances: usize) {
    let redis = Instances::start(instances);
    let n = nodes_on(&redis, &["a", "b"]).await;
    crate::topics::presence_pages_and_counts(&[&n[0], &n[1]], "room", 5).await;
}

/// A delivery waits for no node (PROTOCOL.md section 3): with one node stopped (SIGSTOP, its
/// sockets open), every kind of delivery through the other answers at once and still counts
/// the stopped node's connections, which get everything in order once it runs again. Killed
/// (SIGKILL), its share leaves the counts at once, and its connection ids are NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_delays_no_delivery_and_a_killed_one_leaves_the_counts() {
    let redis = RedisProc::start();
    let mut cfg = node_config(&redis, "a");
    cfg.broker.node_ttl_ms = 30_000;
    let a = start_with(cfg).await;
    let url = redis.url();
    let (mut child, http, _grpc, _logs) = spawn_serve(&[
        ("REALTIME_BROKER__KIND", "redis"),
        ("REALTIME_BROKER__REDIS_URL", url.as_str()),
        ("REALTIME_BROKER__NODE_TTL_MS", "30000"),
        ("REALTIME_TOPICS__PUBLIC", "**"),
        ("REALTIME_NODE__ID", "sleepy"),
    ]);
    let mut via_a = a.client().await;
    eventually("the process to join", || {
        let mut c = via_a.clone();
        async move { stats(&mut c).await.nodes == 2 }
    })
    .await;
    let (mut far, hello) =
        connect_url(format!("ws://{http}/ws?token={}", token("u", &["staff"]))).await;
    assert_eq!(hello["op"], "connected");
    subscribe(&mut far, "room", None).await;
    let mut near = a.connect("u", &["staff"]).await;
    subscribe(&mut near, "room", None).await;

    let pid = child.0.id().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    let quick = Duration::from_millis(500);
    let t = std::time::Instant::now();
    assert_eq!(send_user(&mut via_a, "u", "dm", "1").await, 2);
    assert!(t.elapsed() < quick, "SendToUser took {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let p = publish(&mut via_a, "room", "2", "").await;
    assert!(t.elapsed() < quick, "Publish took {:?}", t.elapsed());
    assert_eq!((p.offset, p.connections), (1, 2));
    let t = std::time::Instant::now();
    assert_eq!(send_role(&mut via_a, "staff", "role", "3").await, 2);
    assert!(t.elapsed() < quick, "SendToRole took {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let one = via_a
        .send_to_connection(authed(proto::SendToConnectionRequest {
            connection_id: far.id.clone(),
            message: msg("one", "4"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(
        t.elapsed() < quick,
        "SendToConnection took {:?}",
        t.elapsed()
    );
    assert_eq!(one.connections, 1);
    let t = std::time::Instant::now();
    let all = via_a
        .broadcast(authed(proto::BroadcastRequest {
            message: msg("all", "5"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(t.elapsed() < quick, "Broadcast took {:?}", t.elapsed());
    assert_eq!(all.connections, 2);
    // Different routes keep no order between them (each keeps its own): compared as sets.
    async fn kinds(ws: &mut Ws, n: usize) -> Vec<String> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(ws.next_json().await["type"].as_str().unwrap().to_owned());
        }
        v.sort();
        v
    }
    assert_eq!(kinds(&mut near, 4).await, ["all", "dm", "news", "role"]);
    signal("-CONT");
    assert_eq!(
        kinds(&mut far, 5).await,
        ["all", "dm", "news", "one", "role"]
    );

    child.0.kill().unwrap();
    let _ = child.0.wait();
    eventually("the killed node's share to leave the counts", || {
        let mut c = via_a.clone();
        async move { send_user(&mut c, "u", "dm", "6").await == 1 }
    })
    .await;
    assert_eq!(publish(&mut via_a, "room", "7", "").await.connections, 1);
    assert_eq!(send_role(&mut via_a, "staff", "role", "8").await, 1);
    // GetUsers counts the same way (the dead node is not swept yet: node_ttl_ms is 30 s).
    let u = via_a
        .get_users(authed(proto::GetUsersRequest {
            user_ids: vec!["u".into()],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((u.users[0].online, u.users[0].connections), (true, 1));
    let e = via_a
        .send_to_connection(authed(proto::SendToConnectionRequest {
            connection_id: far.id.clone(),
            message: msg("one", "9"),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let all = via_a
        .broadcast(authed(proto::BroadcastRequest {
            message: msg("all", "10"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.connections, 1);
}

/// The first `prefix<i>` name that instance `inst` of two keeps, by `place`.
fn placed(inst: usize, place: fn(&str, usize) -> usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| place(n, 2) == inst)
        .expect("some name lands on each instance")
}

async fn exists(con: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    let n: i64 = redis::cmd("EXISTS")
        .arg(key)
        .query_async(con)
        .await
        .unwrap();
    n == 1
}

/// Two Redis instances (PROTOCOL.md section 3): topics and users are spread over both, each
/// keeping its own; while one is down only its topics and users are UNAVAILABLE, the other's
/// go on without a gap and the nodes stay ready; once it is back its topics start new epochs,
/// told to their subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_redis_instances_share_the_work_and_one_down_leaves_the_other() {
    use boundary_realtime::cluster::redis::{topic_instance, user_instance};
    let r0 = RedisProc::start();
    let mut r1 = RedisProc::start();
    let urls = vec![r0.url(), r1.url()];
    let config = |id: &str| {
        let mut c = node_config(&r0, id);
        c.broker.redis_urls = urls.clone();
        c
    };
    let a = start_with(config("a")).await;
    let b = start_with(config("b")).await;
    let mut via_a = a.client().await;
    eventually("both nodes to see each other", || {
        let mut c = via_a.clone();
        async move { stats(&mut c).await.nodes == 2 }
    })
    .await;
    let (t0, t1) = (
        placed(0, topic_instance, "t"),
        placed(1, topic_instance, "t"),
    );
    let (u0, u1) = (placed(0, user_instance, "u"), placed(1, user_instance, "u"));
    let mut w0 = a.connect(&u0, &[]).await;
    let mut w1 = b.connect(&u1, &[]).await;
    for ws in [&mut w0, &mut w1] {
        subscribe(ws, &t0, None).await;
        subscribe(ws, &t1, None).await;
    }
    for t in [&t0, &t1] {
        let p = publish(&mut via_a, t, "1", "").await;
        assert_eq!((p.offset, p.connections), (1, 2), "{t}");
        for ws in [&mut w0, &mut w1] {
            let f = ws.next_json().await;
            assert_eq!(
                (f["topic"].as_str(), f["offset"].as_u64()),
                (Some(t.as_str()), Some(1))
            );
        }
    }
    assert_eq!(send_user(&mut via_a, &u0, "dm", "1").await, 1);
    assert_eq!(w0.next_json().await["type"], "dm");
    assert_eq!(send_user(&mut via_a, &u1, "dm", "1").await, 1);
    assert_eq!(w1.next_json().await["type"], "dm");
    // Each instance keeps its own topics and users, and nothing of the other's.
    let (mut c0, mut c1) = (redis_conn(&r0).await, redis_conn(&r1).await);
    for (con, mine, theirs) in [
        (&mut c0, (&t0, &u0), (&t1, &u1)),
        (&mut c1, (&t1, &u1), (&t0, &u0)),
    ] {
        assert!(exists(con, &format!("rt:hm:{{{}}}", mine.0)).await);
        assert!(exists(con, &format!("rt:uc:{{{}}}", mine.1)).await);
        assert!(
            exists(con, &format!("rt:h:{{#{}}}", mine.1)).await,
            "its user's stream"
        );
        assert!(!exists(con, &format!("rt:hm:{{{}}}", theirs.0)).await);
        assert!(!exists(con, &format!("rt:uc:{{{}}}", theirs.1)).await);
    }

    r1.stop();
    eventually("instance 1's topics to answer UNAVAILABLE", || {
        let mut c = via_a.clone();
        let t1 = t1.clone();
        async move {
            let r = c
                .publish(authed(proto::PublishRequest {
                    topic: t1,
                    message: msg("lost", "1"),
                }))
                .await;
            matches!(r, Err(e) if e.code() == Code::Unavailable)
        }
    })
    .await;
    let e = via_a
        .send_to_user(authed(proto::SendToUserRequest {
            user_id: u1.clone(),
            message: msg("lost", "1"),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    // The other instance's topics and users go on, through either node, without a gap.
    for (i, via) in [a.client().await, b.client().await].iter_mut().enumerate() {
        let p = publish(via, &t0, "2", "").await;
        assert_eq!((p.offset, p.connections), (2 + i as u64, 2));
        for ws in [&mut w0, &mut w1] {
            let f = ws.next_json().await;
            assert_eq!(
                (f["topic"].as_str(), f["offset"].as_u64()),
                (Some(t0.as_str()), Some(2 + i as u64)),
                "{f}"
            );
        }
    }
    assert_eq!(send_user(&mut via_a, &u0, "dm", "2").await, 1);
    assert_eq!(w0.next_json().await["type"], "dm");
    for n in [&a, &b] {
        assert!(
            http_get(n.http, "/readyz")
                .await
                .starts_with("HTTP/1.1 200"),
            "ready while the first instance is up"
        );
    }

    r1.restart();
    let deadline = std::time::Instant::now() + WAIT;
    let p = loop {
        let r = via_a
            .publish(authed(proto::PublishRequest {
                topic: t1.clone(),
                message: msg("news", "3"),
            }))
            .await;
        match r {
            Ok(p) => break p.into_inner(),
            Err(e) if e.code() == Code::Unavailable && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    // A new epoch. A node not resubscribed to the instance yet is not counted (its count
    // there is written again once it is); its subscriber catches up from history.
    assert_eq!(p.offset, 1, "a new epoch");
    assert!((1..=2).contains(&p.connections), "{}", p.connections);
    // Each subscriber is told its topic on the restarted instance lost its state (and w1 its
    // user stream), then gets the publication: no silent gap, and nothing about t0.
    for (ws, user_on_1) in [(&mut w0, false), (&mut w1, true)] {
        // The notices and the publication, in whatever order the node caught them up.
        let mut told = Vec::new();
        let mut news = None;
        while news.is_none() || told.len() < 1 + usize::from(user_on_1) {
            let f = ws.next_json().await;
            if f["type"] == "news" {
                news = Some(f);
            } else {
                told.push(f);
            }
        }
        let f = news.unwrap();
        assert_eq!(
            (
                f["topic"].as_str(),
                f["offset"].as_u64(),
                f["epoch"].as_str()
            ),
            (Some(t1.as_str()), Some(1), Some(p.epoch.as_str()))
        );
        let mut ops: Vec<(String, String)> = told
            .iter()
            .map(|f| {
                (
                    f["op"].as_str().unwrap_or("?").to_owned(),
                    f["topic"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        ops.sort();
        let mut want = vec![("subscribed".to_owned(), t1.clone())];
        if user_on_1 {
            want.push(("user_stream".to_owned(), String::new()));
        }
        assert_eq!(ops, want, "{told:?}");
        assert!(told.iter().all(|f| f["recovered"] == false), "{told:?}");
    }
    // Nothing else came meanwhile (t0 never resynced).
    a.assert_nothing_pending(&mut via_a, &mut [&mut w0, &mut w1])
        .await;
}

/// Nodes that list different Redis instances would look for topics in different places:
/// each side says so in its log and answers `/readyz` 503 until they agree again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_listing_other_redis_instances_are_not_ready() {
    let r0 = RedisProc::start();
    let r1 = RedisProc::start();
    let mut two = node_config(&r0, "two");
    two.broker.redis_urls = vec![r0.url(), r1.url()];
    let a = start_with(two).await;
    let ready = |addr: std::net::SocketAddr| async move {
        http_get(addr, "/readyz").await.starts_with("HTTP/1.1 200")
    };
    assert!(ready(a.http).await);
    let mut one = start_with(node_config(&r0, "one")).await;
    eventually("both to be unready", || async {
        !ready(a.http).await && !ready(one.http).await
    })
    .await;
    assert!(one.shutdown().await);
    eventually("the remaining node to be ready again", || async {
        ready(a.http).await
    })
    .await;
}

/// A node starts while an instance other than the first is down: its topics answer
/// UNAVAILABLE, the rest works, and once the instance is up they work too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_without_a_second_instance_and_takes_it_when_it_comes() {
    use boundary_realtime::cluster::redis::topic_instance;
    let r0 = RedisProc::start();
    let mut r1 = RedisProc::start();
    r1.stop();
    let mut c = node_config(&r0, "a");
    c.broker.redis_urls = vec![r0.url(), r1.url()];
    let a = start_with(c).await;
    assert!(http_get(a.http, "/readyz")
        .await
        .starts_with("HTTP/1.1 200"));
    let mut via_a = a.client().await;
    let (t0, t1) = (
        placed(0, topic_instance, "t"),
        placed(1, topic_instance, "t"),
    );
    assert_eq!(publish(&mut via_a, &t0, "1", "").await.offset, 1);
    let e = via_a
        .publish(authed(proto::PublishRequest {
            topic: t1.clone(),
            message: msg("news", "1"),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    r1.restart();
    eventually("the second instance's topics to work", || {
        let mut c = via_a.clone();
        let t1 = t1.clone();
        async move {
            c.publish(authed(proto::PublishRequest {
                topic: t1,
                message: msg("news", "2"),
            }))
            .await
            .is_ok()
        }
    })
    .await;
    let mut ws = a.connect("late", &[]).await;
    subscribe(&mut ws, &t1, None).await;
    let p = publish(&mut via_a, &t1, "3", "").await;
    assert_eq!(p.connections, 1);
    assert_eq!(ws.next_json().await["offset"], p.offset);
}
