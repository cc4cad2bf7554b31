//! Users you can count on (PROTOCOL.md section 7): user streams and resume at connect, on one
//! node and across nodes sharing a real `redis-server`, with a node killed and Redis restarted.

use std::net::SocketAddr;
use std::time::Duration;

use boundary_realtime::config::{BrokerKind, Config};
use boundary_realtime::proto::{self, event::Kind, SendToUserRequest};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::common::*;

/// Opens `/ws` for `user` with the token (and `since`/`epoch` when resuming) in the query;
/// returns the socket and its `connected` frame.
async fn open(http: SocketAddr, user: &str, since: Option<(u64, &str)>) -> (Ws, Value) {
    let resume = since.map_or(String::new(), |(o, e)| format!("&since={o}&epoch={e}"));
    connect_url(format!("ws://{http}/ws?token={}{resume}", token(user, &[]))).await
}

/// SendToUser of `{"n": i}` as type `n`, with a caller id when given.
async fn send_n(client: &mut Client, user: &str, i: u64, id: &str) -> proto::SendResponse {
    client
        .send_to_user(authed(SendToUserRequest {
            user_id: user.into(),
            message: Some(proto::Message {
                r#type: "n".into(),
                payload_json: i.to_string(),
                id: id.into(),
            }),
        }))
        .await
        .expect("SendToUser")
        .into_inner()
}

/// Sends 0..n to `user`, in turn through each client, one after the other (so the broker's
/// order is the send order), a millisecond apart so that reconnects happen mid-stream.
fn keep_sending(
    mut clients: Vec<Client>,
    user: &'static str,
    n: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0..n {
            let k = (i as usize) % clients.len();
            let r = send_n(&mut clients[k], user, i, "").await;
            assert_eq!(r.offset, i + 1, "the stream's order is the send order");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
}

/// Reads the user's messages: `(offset, n)` for `count` of them, or until `n == until`.
async fn read(ws: &mut Ws, count: usize, until: Option<u64>) -> Vec<(u64, u64)> {
    let mut got = Vec::new();
    while got.len() < count {
        let f = ws.next_json().await;
        assert_eq!(f["type"], "n", "{f}");
        assert!(
            f.get("topic").is_none(),
            "a user stream's frame has no topic: {f}"
        );
        let item = (
            f["offset"].as_u64().unwrap(),
            f["payload"].as_u64().unwrap(),
        );
        got.push(item);
        if until == Some(item.1) {
            break;
        }
    }
    got
}

fn clustered(redis: &RedisProc, id: &str) -> Config {
    let mut c = config();
    c.node.id = id.into();
    c.broker.kind = BrokerKind::Redis;
    c.broker.redis_url = redis.url();
    c.broker.node_ttl_ms = 1500;
    c.users.history_size = 1000;
    c
}

/// A reconnect in the middle of a stream of messages: the first connection's messages, then
/// the resumed one's, are every message exactly once, in order.
async fn resume_mid_stream(first: SocketAddr, second: SocketAddr, clients: Vec<Client>) {
    const N: u64 = 300;
    let sender = keep_sending(clients, "mover", N);
    let (mut ws, c) = open(first, "mover", None).await;
    assert!(c.get("recovered").is_none(), "not asked: {c}");
    let epoch = c["epoch"].as_str().unwrap().to_owned();
    let mut got = read(&mut ws, 20, None).await;
    let (last, _) = *got.last().unwrap();
    drop(ws);
    let (mut ws, c) = open(second, "mover", Some((last, &epoch))).await;
    assert_eq!(
        (&c["recovered"], &c["epoch"]),
        (&json!(true), &json!(epoch)),
        "{c}"
    );
    assert!(c["offset"].as_u64().unwrap() >= last, "{c}");
    got.extend(read(&mut ws, usize::MAX, Some(N - 1)).await);
    sender.await.unwrap();
    let start = got[0].1;
    let expected: Vec<(u64, u64)> = (start..N).map(|i| (i + 1, i)).collect();
    assert_eq!(got, expected, "no gap, no duplicate, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_one_node_is_gapless_while_messages_keep_coming() {
    let mut c = config();
    c.users.history_size = 1000;
    let s = start_with(c).await;
    let client = s.client().await;
    resume_mid_stream(s.http, s.http, vec![client]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_another_node_is_gapless_while_both_nodes_send() {
    let redis = RedisProc::start();
    let a = start_with(clustered(&redis, "a")).await;
    let b = start_with(clustered(&redis, "b")).await;
    let clients = vec![a.client().await, b.client().await];
    resume_mid_stream(a.http, b.http, clients).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_frame_resumes_too_and_an_idle_user_recovers_from_zero() {
    let s = start().await;
    let mut client = s.client().await;
    // Never sent anything: offset 0 and an epoch, which a resume from 0 recovers.
    let (ws, c) = open(s.http, "quiet", None).await;
    assert_eq!(c["offset"], 0, "{c}");
    let epoch = c["epoch"].as_str().unwrap().to_owned();
    drop(ws);
    let (_ws, c) = open(s.http, "quiet", Some((0, &epoch))).await;
    assert_eq!((&c["recovered"], &c["offset"]), (&json!(true), &json!(0)));

    let r = send_n(&mut client, "quiet", 7, "").await;
    assert_eq!(
        (r.offset, r.epoch.as_str(), r.connections),
        (1, epoch.as_str(), 1)
    );
    send_n(&mut client, "quiet", 8, "").await;
    let mut ws = s.connect_bare().await;
    let auth = json!({"op":"auth","token":token("quiet", &[]),"since":{"offset":1,"epoch":epoch}});
    ws.send_text(&auth.to_string()).await;
    let c = ws.next_json().await;
    assert_eq!(
        (&c["op"], &c["offset"], &c["recovered"]),
        (&json!("connected"), &json!(2), &json!(true)),
        "{c}"
    );
    assert_eq!(read(&mut ws, 1, None).await, vec![(2, 8)]);

    // A first message sent while the user is away keeps the epoch the user was shown: the
    // resume from 0 recovers it.
    let (ws, c) = open(s.http, "away", None).await;
    let epoch = c["epoch"].as_str().unwrap().to_owned();
    drop(ws);
    let r = send_n(&mut client, "away", 9, "").await;
    assert_eq!((r.offset, r.epoch.as_str()), (1, epoch.as_str()));
    let (mut ws, c) = open(s.http, "away", Some((0, &epoch))).await;
    assert_eq!(
        (&c["recovered"], &c["offset"]),
        (&json!(true), &json!(1)),
        "{c}"
    );
    assert_eq!(read(&mut ws, 1, None).await, vec![(1, 9)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_the_history_cannot_cover_says_so_and_replays_nothing() {
    let mut c = config();
    c.users.history_size = 2;
    let s = start_with(c).await;
    let mut client = s.client().await;
    let (ws, c) = open(s.http, "away", None).await;
    let epoch = c["epoch"].as_str().unwrap().to_owned();
    drop(ws);
    for i in 0..5 {
        send_n(&mut client, "away", i, "").await;
    }
    // Offsets 4 and 5 are kept; 1..3 are gone.
    let (mut ws, c) = open(s.http, "away", Some((0, &epoch))).await;
    assert_eq!((&c["recovered"], &c["offset"]), (&json!(false), &json!(5)));
    send_n(&mut client, "away", 5, "").await;
    assert_eq!(
        read(&mut ws, 1, None).await,
        vec![(6, 5)],
        "live, nothing replayed"
    );
    // Another epoch: not recovered either.
    let (_ws, c) = open(s.http, "away", Some((5, "other"))).await;
    assert_eq!((&c["recovered"], &c["offset"]), (&json!(false), &json!(6)));
    // Within reach: recovered with exactly the missed ones.
    let (mut ws, c) = open(s.http, "away", Some((4, &epoch))).await;
    assert_eq!(c["recovered"], true);
    assert_eq!(read(&mut ws, 2, None).await, vec![(5, 4), (6, 5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_since_and_epoch_get_the_errors_of_section_7() {
    let s = start().await;
    let t = token("u", &[]);
    for (query, why) in [
        (format!("?token={t}&since=3"), "epoch"),
        (format!("?token={t}&epoch=e"), "since"),
        (format!("?token={t}&since=-1&epoch=e"), "since"),
        (format!("?token={t}&since=x&epoch=e"), "since"),
        (
            format!("?token={t}&since=1&epoch={}", "e".repeat(65)),
            "epoch",
        ),
    ] {
        assert_eq!(s.upgrade_status(&query, None).await, 400, "{why}: {query}");
    }
    let ok = format!("?token={t}&since=1&epoch={}", "e".repeat(64));
    assert_eq!(s.upgrade_status(&ok, None).await, 101);
    for since in [
        json!({"offset": 1}),
        json!({"offset": -1, "epoch": "e"}),
        json!({"offset": 1, "epoch": "e".repeat(65)}),
    ] {
        let mut ws = s.connect_bare().await;
        ws.send_text(&json!({"op":"auth","token":t,"since":since}).to_string())
            .await;
        let (code, _, frames) = ws.next_close().await;
        assert_eq!(code, 4001, "{since}");
        assert_eq!(frames[0]["code"], "unauthorized", "{frames:?}");
        assert!(
            frames[0]["message"].as_str().unwrap().contains("since"),
            "{frames:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_user_streams_off_nothing_of_them_shows() {
    let mut c = config();
    c.users.history_size = 0;
    let s = start_with(c).await;
    let mut client = s.client().await;
    // since/epoch ignored, even malformed.
    let (mut ws, c) = open(s.http, "plain", Some((3, "e"))).await;
    for key in ["offset", "epoch", "recovered"] {
        assert!(c.get(key).is_none(), "{c}");
    }
    let r = send_n(&mut client, "plain", 1, "").await;
    assert_eq!((r.connections, r.offset, r.epoch.as_str()), (1, 0, ""));
    let f = ws.next_json().await;
    assert!(f.get("offset").is_none() && f.get("epoch").is_none(), "{f}");
    let q = format!("?token={}&since=x", token("plain", &[]));
    assert_eq!(s.upgrade_status(&q, None).await, 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_send_through_another_node_is_delivered_once() {
    let redis = RedisProc::start();
    let a = start_with(clustered(&redis, "a")).await;
    let b = start_with(clustered(&redis, "b")).await;
    let (mut ws, _) = open(a.http, "once", None).await;
    let (mut via_a, mut via_b) = (a.client().await, b.client().await);
    let first = send_n(&mut via_a, "once", 1, "order-1").await;
    assert_eq!((first.offset, first.connections), (1, 1));
    let retry = send_n(&mut via_b, "once", 1, "order-1").await;
    assert_eq!(
        (
            retry.message_id.as_str(),
            retry.offset,
            retry.epoch.as_str(),
            retry.connections
        ),
        ("order-1", 1, first.epoch.as_str(), 0)
    );
    send_n(&mut via_b, "once", 2, "order-2").await;
    assert_eq!(read(&mut ws, 2, None).await, vec![(1, 1), (2, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_whose_node_was_killed_resumes_on_another() {
    let redis = RedisProc::start();
    let a = start_with(clustered(&redis, "a")).await;
    let url = redis.url();
    let (mut child, http, _grpc, _logs) = spawn_serve(&[
        ("REALTIME_BROKER__KIND", "redis"),
        ("REALTIME_BROKER__REDIS_URL", url.as_str()),
        ("REALTIME_BROKER__NODE_TTL_MS", "1500"),
        ("REALTIME_NODE__ID", "doomed"),
    ]);
    let mut via_a = a.client().await;
    let (mut ws, c) = open(http.parse().unwrap(), "survivor", None).await;
    let epoch = c["epoch"].as_str().unwrap().to_owned();
    for i in 0..3 {
        assert_eq!(send_n(&mut via_a, "survivor", i, "").await.connections, 1);
    }
    assert_eq!(read(&mut ws, 3, None).await, vec![(1, 0), (2, 1), (3, 2)]);
    child.0.kill().unwrap();
    let _ = child.0.wait();
    for i in 3..6 {
        send_n(&mut via_a, "survivor", i, "").await;
    }
    let (mut ws, c) = open(a.http, "survivor", Some((3, &epoch))).await;
    assert_eq!((&c["recovered"], &c["offset"]), (&json!(true), &json!(6)));
    assert_eq!(read(&mut ws, 3, None).await, vec![(4, 3), (5, 4), (6, 5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_lost_its_data_gives_recovered_false_never_a_silent_gap() {
    let mut redis = RedisProc::start();
    let a = start_with(clustered(&redis, "a")).await;
    let mut via_a = a.client().await;
    let (ws, c) = open(a.http, "amnesia", None).await;
    let epoch = c["epoch"].as_str().unwrap().to_owned();
    for i in 0..3 {
        send_n(&mut via_a, "amnesia", i, "").await;
    }
    drop(ws);
    redis.stop();
    redis.restart();
    eventually("a send to work again", || {
        let mut c = via_a.clone();
        async move {
            c.send_to_user(authed(SendToUserRequest {
                user_id: "amnesia".into(),
                message: msg("n", "9"),
            }))
            .await
            .is_ok()
        }
    })
    .await;
    let (_ws, c) = open(a.http, "amnesia", Some((3, &epoch))).await;
    assert_eq!(c["recovered"], false, "{c}");
    assert_ne!(c["epoch"], json!(epoch));
}

type Events = tonic::Streaming<proto::Event>;

async fn watch(client: &mut Client, kinds: &[Kind]) -> Events {
    client
        .watch_events(authed(proto::WatchEventsRequest {
            kinds: kinds.iter().map(|k| *k as i32).collect(),
        }))
        .await
        .expect("WatchEvents")
        .into_inner()
}

async fn next_event(events: &mut Events) -> proto::Event {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("an event within the wait")
        .expect("the stream goes on")
        .expect("an event")
}

/// The next event's kind and user (for user events, no connection is set).
async fn next_kind(events: &mut Events) -> (Kind, String) {
    let e = next_event(events).await;
    let kind = Kind::try_from(e.kind).unwrap();
    if matches!(kind, Kind::UserOnline | Kind::UserOffline) {
        assert!(e.connection.is_none(), "{e:?}");
    }
    (kind, e.user_id)
}

/// Nothing more arrives for `window` (a transition is reported once).
async fn quiet(events: &mut Events, window: Duration) {
    if let Ok(e) = tokio::time::timeout(window, events.next()).await {
        panic!("expected nothing for {window:?}, got {e:?}");
    }
}

async fn get_users(client: &mut Client, ids: &[&str]) -> Vec<proto::get_users_response::User> {
    client
        .get_users(authed(proto::GetUsersRequest {
            user_ids: ids.iter().map(|s| s.to_string()).collect(),
        }))
        .await
        .expect("GetUsers")
        .into_inner()
        .users
}

fn ms(t: &Option<prost_types::Timestamp>) -> Option<i64> {
    t.as_ref()
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

const GRACE_MS: u64 = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_and_offline_on_one_node_with_a_reload_inside_the_grace() {
    let mut c = config();
    c.users.offline_grace_ms = GRACE_MS;
    let s = start_with(c).await;
    let mut client = s.client().await;
    let mut w = watch(
        &mut client,
        &[
            Kind::UserOnline,
            Kind::UserOffline,
            Kind::Connected,
            Kind::Disconnected,
        ],
    )
    .await;
    let mut v1 = watch(&mut client, &[]).await;
    let (ws, _) = open(s.http, "pat", None).await;
    assert_eq!(next_kind(&mut w).await, (Kind::UserOnline, "pat".into()));
    assert_eq!(next_kind(&mut w).await, (Kind::Connected, "pat".into()));
    assert_eq!(
        next_kind(&mut v1).await,
        (Kind::Connected, "pat".into()),
        "v1 kinds only"
    );
    let u = get_users(&mut client, &["pat", "nobody", "pat"]).await;
    assert_eq!(u.len(), 3);
    assert_eq!(
        (u[0].user_id.as_str(), u[0].online, u[0].connections),
        ("pat", true, 1)
    );
    let since = ms(&u[0].online_since).expect("online_since");
    assert_eq!(
        (u[1].online, u[1].connections, &u[1].last_seen),
        (false, 0, &None)
    );
    assert_eq!(u[2], u[0], "a repeated id is answered each time");

    // A reload: closed and back within the grace: neither offline nor online.
    drop(ws);
    assert_eq!(next_kind(&mut w).await, (Kind::Disconnected, "pat".into()));
    let (ws, _) = open(s.http, "pat", None).await;
    assert_eq!(next_kind(&mut w).await, (Kind::Connected, "pat".into()));
    quiet(&mut w, Duration::from_millis(GRACE_MS * 2)).await;
    let u = get_users(&mut client, &["pat"]).await;
    assert_eq!(
        ms(&u[0].online_since),
        Some(since),
        "the online period goes on"
    );

    drop(ws);
    let closed = next_event(&mut w).await;
    assert_eq!(Kind::try_from(closed.kind).unwrap(), Kind::Disconnected);
    let u = get_users(&mut client, &["pat"]).await;
    assert_eq!(
        (u[0].online, u[0].connections),
        (true, 0),
        "online through the grace"
    );
    let off = next_event(&mut w).await;
    assert_eq!(
        (Kind::try_from(off.kind).unwrap(), off.user_id.as_str()),
        (Kind::UserOffline, "pat")
    );
    let at = ms(&off.at).unwrap();
    assert!(
        at.abs_diff(ms(&closed.at).unwrap()) < 100,
        "at is when it closed"
    );
    let u = get_users(&mut client, &["pat"]).await;
    assert_eq!(
        (
            u[0].online,
            u[0].connections,
            ms(&u[0].last_seen),
            &u[0].online_since
        ),
        (false, 0, Some(at), &None)
    );
    quiet(&mut w, Duration::from_millis(GRACE_MS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_users_refuses_what_section_7_refuses() {
    let s = start().await;
    let mut client = s.client().await;
    let ids = |n: usize| (0..n).map(|i| format!("u{i}")).collect::<Vec<_>>();
    for bad in [vec![], ids(1001), vec!["a".to_owned(), String::new()]] {
        let e = client
            .get_users(authed(proto::GetUsersRequest { user_ids: bad }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().starts_with("user_ids"), "{e:?}");
    }
    assert_eq!(
        get_users(
            &mut client,
            &ids(1000).iter().map(String::as_str).collect::<Vec<_>>()
        )
        .await
        .len(),
        1000
    );
}

fn clustered_graced(redis: &RedisProc, id: &str) -> Config {
    let mut c = clustered(redis, id);
    c.users.offline_grace_ms = GRACE_MS;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_transition_reaches_every_watcher_once_across_nodes_and_a_killed_node_takes_its_users_offline(
) {
    each_transition_across_nodes(1).await
}

/// The same with users spread over two Redis instances (each keeps its users' counts and
/// graces, and sweeps them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_transition_reaches_every_watcher_once_with_users_on_two_redis_instances() {
    use boundary_realtime::cluster::redis::user_instance;
    let spread: Vec<usize> = ["probe", "kim", "lee", "ghost"]
        .iter()
        .map(|u| user_instance(u, 2))
        .collect();
    assert!(spread.contains(&0) && spread.contains(&1), "{spread:?}");
    each_transition_across_nodes(2).await
}

async fn each_transition_across_nodes(instances: usize) {
    let redis = RedisProc::start();
    let second = (instances > 1).then(RedisProc::start);
    let urls: Vec<String> = match &second {
        Some(r) => vec![redis.url(), r.url()],
        None => Vec::new(),
    };
    let config = |id: &str| {
        let mut c = clustered_graced(&redis, id);
        c.broker.redis_urls = urls.clone();
        c
    };
    let a = start_with(config("a")).await;
    let b = start_with(config("b")).await;
    let (mut via_a, mut via_b) = (a.client().await, b.client().await);
    let kinds = [Kind::UserOnline, Kind::UserOffline];
    let mut wa = watch(&mut via_a, &kinds).await;
    let mut wb = watch(&mut via_b, &kinds).await;
    // The watchers are registered cluster-wide once a node's connection shows on the other.
    let mut attempts = 0;
    let probe = loop {
        let (ws, _) = open(a.http, "probe", None).await;
        if tokio::time::timeout(Duration::from_millis(500), wb.next())
            .await
            .is_ok()
        {
            break ws;
        }
        drop(ws);
        attempts += 1;
        assert!(
            attempts < 20,
            "node b's watcher never heard node a's events"
        );
    };
    drop(probe);
    // Drain the probe's own transitions on both.
    let drain = Duration::from_millis(GRACE_MS * 3);
    let _ = tokio::time::timeout(drain, async {
        loop {
            let (k, _) = next_kind(&mut wa).await;
            if k == Kind::UserOffline {
                break;
            }
        }
    })
    .await;
    let _ = tokio::time::timeout(drain, async {
        loop {
            let (k, _) = next_kind(&mut wb).await;
            if k == Kind::UserOffline {
                break;
            }
        }
    })
    .await;

    let (on_a, _) = open(a.http, "kim", None).await;
    let (on_b, _) = open(b.http, "kim", None).await;
    for w in [&mut wa, &mut wb] {
        assert_eq!(next_kind(w).await, (Kind::UserOnline, "kim".into()));
    }
    let u = get_users(&mut via_b, &["kim"]).await;
    assert_eq!((u[0].online, u[0].connections), (true, 2));
    drop(on_a);
    eventually("kim's count to fall to 1", || {
        let mut c = via_a.clone();
        async move { get_users(&mut c, &["kim"]).await[0].connections == 1 }
    })
    .await;
    drop(on_b);
    for w in [&mut wa, &mut wb] {
        assert_eq!(next_kind(w).await, (Kind::UserOffline, "kim".into()));
    }
    for w in [&mut wa, &mut wb] {
        quiet(w, Duration::from_millis(GRACE_MS)).await;
    }
    // A reload that lands on the other node, inside the grace: no transition anywhere.
    let (on_a, _) = open(a.http, "lee", None).await;
    for w in [&mut wa, &mut wb] {
        assert_eq!(next_kind(w).await, (Kind::UserOnline, "lee".into()));
    }
    let since = ms(&get_users(&mut via_a, &["lee"]).await[0].online_since);
    drop(on_a);
    let (on_b, _) = open(b.http, "lee", None).await;
    for w in [&mut wa, &mut wb] {
        quiet(w, Duration::from_millis(GRACE_MS * 2)).await;
    }
    let u = get_users(&mut via_a, &["lee"]).await;
    assert_eq!((u[0].online, u[0].connections), (true, 1));
    assert_eq!(ms(&u[0].online_since), since, "the online period goes on");
    drop(on_b);
    for w in [&mut wa, &mut wb] {
        assert_eq!(next_kind(w).await, (Kind::UserOffline, "lee".into()));
    }
    let (ua, ub) = (
        get_users(&mut via_a, &["kim"]).await,
        get_users(&mut via_b, &["kim"]).await,
    );
    assert_eq!(ua, ub, "both nodes answer the same");
    assert!(!ua[0].online && ua[0].last_seen.is_some(), "{ua:?}");

    // A node killed with its users on it: they go offline within node_ttl_ms + the grace.
    let url = redis.url();
    let grace = GRACE_MS.to_string();
    let list = urls.join(",");
    let mut env = vec![
        ("REALTIME_BROKER__KIND", "redis"),
        ("REALTIME_BROKER__REDIS_URL", url.as_str()),
        ("REALTIME_BROKER__NODE_TTL_MS", "1500"),
        ("REALTIME_USERS__OFFLINE_GRACE_MS", grace.as_str()),
        ("REALTIME_NODE__ID", "doomed"),
    ];
    if !list.is_empty() {
        env.push(("REALTIME_BROKER__REDIS_URLS", list.as_str()));
    }
    let (mut child, http, _grpc, _logs) = spawn_serve(&env);
    let (_ghost, _) = open(http.parse().unwrap(), "ghost", None).await;
    for w in [&mut wa, &mut wb] {
        assert_eq!(next_kind(w).await, (Kind::UserOnline, "ghost".into()));
    }
    child.0.kill().unwrap();
    let _ = child.0.wait();
    let killed = std::time::Instant::now();
    for w in [&mut wa, &mut wb] {
        assert_eq!(next_kind(w).await, (Kind::UserOffline, "ghost".into()));
    }
    assert!(
        killed.elapsed() < Duration::from_millis(1500 + GRACE_MS + 1500),
        "within node_ttl_ms + offline_grace_ms (and a sweep): {:?}",
        killed.elapsed()
    );
    let u = get_users(&mut via_a, &["ghost"]).await;
    assert_eq!((u[0].online, u[0].connections), (false, 0));
    for w in [&mut wa, &mut wb] {
        quiet(w, Duration::from_millis(GRACE_MS)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_broker_lost_its_data_connected_users_are_online_again() {
    let mut redis = RedisProc::start();
    let a = start_with(clustered_graced(&redis, "a")).await;
    let mut via_a = a.client().await;
    let mut w = watch(&mut via_a, &[Kind::UserOnline, Kind::UserOffline]).await;
    let (_ws, _) = open(a.http, "stayer", None).await;
    assert_eq!(next_kind(&mut w).await, (Kind::UserOnline, "stayer".into()));
    redis.stop();
    redis.restart();
    assert_eq!(
        next_kind(&mut w).await,
        (Kind::UserOnline, "stayer".into()),
        "reported online again"
    );
    let u = get_users(&mut via_a, &["stayer"]).await;
    assert_eq!((u[0].online, u[0].connections), (true, 1));
}
