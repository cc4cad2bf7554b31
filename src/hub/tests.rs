//! The hub over the memory engine and a real node, with connections that are only their
//! outboxes: what each call queues, refuses or closes, without a socket.

use super::*;
use crate::core::event::Event;

/// A hub over the memory engine, with a test secret and key (also for other modules' tests).
pub(crate) async fn hub() -> Arc<Hub> {
    hub_with(Config::default()).await
}

/// [`hub`] with `config`'s other settings.
pub(crate) async fn hub_with(mut config: Config) -> Arc<Hub> {
    config.jwt.secret = "unit-test-secret-0123456789abcdef-0123456789abcdef".into();
    config.grpc.api_keys = vec!["unit-test-key-0123456789".into()];
    let checked = config.validate().expect("a valid configuration");
    let auth = Arc::new(
        Authenticator::new(&config, checked.verifier)
            .await
            .expect("an authenticator"),
    );
    let local = Arc::new(LocalNode::new("n".into(), 0, 1, "m".into(), 16));
    let started = crate::cluster::build(&config, Arc::clone(&local))
        .await
        .expect("the memory engine");
    let hub = Hub::new(config, auth, local, started.engine.clone());
    let handler: std::sync::Weak<dyn CommandHandler> = Arc::downgrade(&hub) as _;
    started.register(handler);
    hub
}

fn conn(hub: &Hub, user: &str) -> Arc<WsConn> {
    crate::node::test_conn(hub.next_conn_id(), user, "staff", 8)
}

fn queued(c: &WsConn) -> Vec<Event> {
    let mut batch = Vec::new();
    c.outbox.try_recv_many(&mut batch, usize::MAX);
    batch.iter().map(|e| e.event().clone()).collect()
}

fn input<'a>(kind: &'a str, payload: &'a str) -> MessageInput<'a> {
    MessageInput {
        kind,
        payload_json: payload,
        id: "",
    }
}

#[tokio::test]
async fn a_message_is_validated_once_and_queued_to_whom_it_names() {
    let hub = hub().await;
    let (a, b) = (conn(&hub, "ann"), conn(&hub, "bob"));
    for c in [&a, &b] {
        hub.connect(c, 10, None).await.unwrap();
    }
    let sent = hub
        .send(Who::User("ann".into()), input("t", "[1]"))
        .await
        .unwrap();
    assert_eq!(sent.connections, 1);
    // User streams are on by default: the user's first message is its stream's offset 1.
    let position = sent.position.clone().expect("a user stream position");
    assert_eq!(position.offset, 1);
    let got = queued(&a);
    let [Event::Publication(p)] = got.as_slice() else {
        panic!("{got:?}")
    };
    assert_eq!(
        (&*p.topic, p.offset, &*p.epoch),
        ("#ann", 1, &*position.epoch)
    );
    let m = &p.message;
    assert_eq!(
        (&*m.kind, &m.payload[..], &*m.id),
        ("t", &b"[1]"[..], sent.message_id.as_str())
    );
    assert!(queued(&b).is_empty());
    assert_eq!(
        hub.send(Who::Role("staff".into()), input("t", "1"))
            .await
            .unwrap()
            .connections,
        2
    );
    assert_eq!(
        hub.send(Who::All, input("t", "1"))
            .await
            .unwrap()
            .connections,
        2
    );
    let e = hub
        .send(Who::User("ann".into()), input("bad type", "1"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, CoreError::InvalidArgument { ref field, .. } if field == "message.type"),
        "{e:?}"
    );
    let e = hub
        .send(Who::Topic("t".into()), input("t", "1"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, CoreError::InvalidArgument { ref field, .. } if field == "target"),
        "{e:?}"
    );
    let e = hub
        .send(Who::Connection("n.ffff".into()), input("t", "1"))
        .await
        .unwrap_err();
    assert!(matches!(e, CoreError::NotFound { .. }), "{e:?}");
}

#[tokio::test]
async fn a_subscriber_gets_its_reply_then_publications_in_order_and_recovers() {
    let hub = hub().await;
    let c = conn(&hub, "ann");
    hub.connect(&c, 10, None).await.unwrap();
    let reference = serde_json::json!("r1");
    hub.subscribe(&c, "news", None, Some(&reference), 0, false)
        .await
        .unwrap();
    let p1 = hub.publish("news", input("t", "1")).await.unwrap();
    let p2 = hub.publish("news", input("t", "2")).await.unwrap();
    assert_eq!((p1.offset, p2.offset, p2.connections), (1, 2, 1));
    let got = queued(&c);
    assert!(
        matches!(&got[0], Event::Subscribed { offset: 0, recovered: None, reference: Some(r), .. } if *r == reference),
        "{got:?}"
    );
    let offsets: Vec<u64> = got[1..]
        .iter()
        .map(|e| match e {
            Event::Publication(p) => p.offset,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(offsets, [1, 2]);
    // Leave, miss one, come back from offset 1: the missed ones first, then the reply.
    assert!(hub.unsubscribe(&c, "news", None));
    assert!(matches!(
        queued(&c).as_slice(),
        [Event::Unsubscribed { .. }]
    ));
    hub.publish("news", input("t", "3")).await.unwrap();
    let since = Since {
        offset: 1,
        epoch: p1.epoch.clone(),
    };
    hub.subscribe(&c, "news", Some(&since), None, 0, false)
        .await
        .unwrap();
    let got = queued(&c);
    let shape: Vec<String> = got
        .iter()
        .map(|e| match e {
            Event::Publication(p) => format!("pub {}", p.offset),
            Event::Subscribed {
                offset, recovered, ..
            } => format!("subscribed {offset} {recovered:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(shape, ["pub 2", "pub 3", "subscribed 3 Some(true)"]);
}

#[tokio::test]
async fn commands_reach_connections_and_refuse_what_is_not_a_target() {
    let hub = hub().await;
    let c = conn(&hub, "ann");
    hub.connect(&c, 10, None).await.unwrap();
    assert_eq!(
        hub.subscribe_selected("room", Who::User("ann".into()))
            .await
            .unwrap(),
        1
    );
    assert!(c.has_topic("room"));
    let e = hub
        .disconnect(Who::Role("staff".into()), 0, "")
        .await
        .unwrap_err();
    assert!(
        matches!(e, CoreError::InvalidArgument { ref field, .. } if field == "target"),
        "{e:?}"
    );
    let e = hub
        .disconnect(Who::User("ann".into()), 3999, "")
        .await
        .unwrap_err();
    assert!(
        matches!(e, CoreError::InvalidArgument { ref field, .. } if field == "code"),
        "{e:?}"
    );
    assert_eq!(
        hub.disconnect(Who::Connection(c.info.id.clone()), 4100, "bye")
            .await
            .unwrap(),
        1
    );
    let closed = c.outbox.close_request().expect("asked to close");
    assert_eq!((closed.code, closed.reason.as_str()), (4100, "bye"));
    assert_eq!(
        hub.disconnect(Who::Connection(c.info.id.clone()), 0, "")
            .await
            .unwrap_err(),
        CoreError::NotFound {
            what: format!("connection {:?}", c.info.id)
        }
    );
}

#[tokio::test]
async fn a_connection_registering_as_shutdown_begins_is_closed_with_1001() {
    let hub = hub().await;
    let early = conn(&hub, "ann");
    hub.connect(&early, 10, None).await.unwrap();
    hub.begin_shutdown();
    assert_eq!(
        early.outbox.close_request().map(|r| r.code),
        Some(close::GOING_AWAY)
    );
    // Registered after the shutdown's sweep: still told to go.
    let late = conn(&hub, "bob");
    hub.connect(&late, 10, None).await.unwrap();
    assert_eq!(
        late.outbox.close_request().map(|r| r.code),
        Some(close::GOING_AWAY)
    );
    let e = hub.send(Who::All, input("t", "1")).await.unwrap_err();
    assert_eq!(e, CoreError::ShuttingDown);
}

#[tokio::test]
async fn shutdown_waits_for_every_admitted_socket() {
    let hub = hub().await;
    let a = hub.admit().expect("room");
    let b = hub.admit().expect("room");
    assert_eq!(hub.open_sockets(), 2);
    let waiting = tokio::spawn({
        let hub = Arc::clone(&hub);
        async move { hub.sockets_ended().await }
    });
    drop(a);
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    drop(b);
    tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .expect("woken when the last socket ended")
        .unwrap();
}

#[tokio::test]
async fn with_user_streams_off_a_user_message_has_no_position() {
    let mut config = Config::default();
    config.users.history_size = 0;
    let hub = hub_with(config).await;
    let a = conn(&hub, "ann");
    assert_eq!(hub.connect(&a, 10, None).await.unwrap(), None);
    let sent = hub
        .send(Who::User("ann".into()), input("t", "1"))
        .await
        .unwrap();
    assert_eq!((sent.connections, sent.position), (1, None));
    let got = queued(&a);
    assert!(matches!(got.as_slice(), [Event::Message(_)]), "{got:?}");
}

#[tokio::test]
async fn a_user_resumes_its_stream_at_connect_and_a_retry_is_not_delivered_twice() {
    let hub = hub().await;
    let first = conn(&hub, "ann");
    let start = hub.connect(&first, 10, None).await.unwrap().unwrap();
    assert_eq!((start.offset, start.recovered), (0, None));
    let msg = |id| MessageInput {
        kind: "t",
        payload_json: "1",
        id,
    };
    let one = hub.send(Who::User("ann".into()), msg("a")).await.unwrap();
    assert_eq!(one.connections, 1);
    hub.disconnected(&first, 1000, "");
    // Sent while away, one of them retried: kept once.
    let two = hub.send(Who::User("ann".into()), msg("b")).await.unwrap();
    let again = hub.send(Who::User("ann".into()), msg("b")).await.unwrap();
    assert_eq!((two.connections, again.connections), (0, 0));
    assert_eq!(again.position, two.position);
    hub.send(Who::User("ann".into()), msg("c")).await.unwrap();
    let epoch = start.epoch.clone();
    let back = conn(&hub, "ann");
    let resumed = hub
        .connect(
            &back,
            10,
            Some(&Resume {
                offset: 1,
                epoch: epoch.clone(),
            }),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((resumed.offset, resumed.recovered), (3, Some(true)));
    let offsets: Vec<(u64, String)> = queued(&back)
        .iter()
        .map(|e| match e {
            Event::Publication(p) => (p.offset, p.message.id.to_string()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(offsets, vec![(2, "b".into()), (3, "c".into())]);
    // Another epoch: not recovered, nothing replayed.
    let other = conn(&hub, "ann");
    let lost = hub
        .connect(
            &other,
            10,
            Some(&Resume {
                offset: 1,
                epoch: "other".into(),
            }),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((lost.offset, lost.recovered), (3, Some(false)));
    assert!(queued(&other).is_empty());
    // Not a topic: not in the connection's topics.
    assert!(back.topics().is_empty());
}
