//! The gRPC door: API keys, validation (INVALID_ARGUMENT naming the field), inspection
//! (ListConnections pagination, GetConnection, GetStats), Disconnect, WatchEvents, health,
//! reflection, and the answers for what comes in a later version.

use std::collections::HashSet;

use boundary_realtime::proto::realtime_service_client::RealtimeServiceClient;
use boundary_realtime::proto::*;
use futures_util::StreamExt;
use tonic::{Code, Request};

use crate::common::*;

fn invalid_field(e: tonic::Status, field: &str) {
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().starts_with(&format!("{field}:")),
        "message {:?} should name {field}",
        e.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_requires_the_api_key() {
    let s = start().await;
    let mut client = s.client().await;
    let e = client
        .get_stats(Request::new(GetStatsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    for bad in [
        "Bearer wrong-key-0123456789",
        "test-api-key-0123456789",
        "Basic abc",
        "Bearer ",
    ] {
        let mut r = Request::new(GetStatsRequest {});
        r.metadata_mut()
            .insert("authorization", bad.parse().unwrap());
        assert_eq!(
            client.get_stats(r).await.unwrap_err().code(),
            Code::Unauthenticated,
            "{bad}"
        );
    }
    let e = client
        .send_to_user(Request::new(SendToUserRequest {
            user_id: "u".into(),
            message: msg("t", "1"),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = client
        .watch_events(Request::new(WatchEventsRequest { kinds: vec![] }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(client.get_stats(authed(GetStatsRequest {})).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_name_the_field() {
    let mut c = config();
    c.limits.max_payload_bytes = 100;
    let s = start_with(c).await;
    let mut client = s.client().await;
    let send = |user: &str, m: Option<Message>| {
        authed(SendToUserRequest {
            user_id: user.into(),
            message: m,
        })
    };
    let m = |t: &str, p: &str, id: &str| {
        Some(Message {
            r#type: t.into(),
            payload_json: p.into(),
            id: id.into(),
        })
    };

    invalid_field(
        client
            .send_to_user(send("", msg("t", "1")))
            .await
            .unwrap_err(),
        "user_id",
    );
    invalid_field(
        client.send_to_user(send("u", None)).await.unwrap_err(),
        "message",
    );
    invalid_field(
        client
            .send_to_user(send("u", m("", "1", "")))
            .await
            .unwrap_err(),
        "message.type",
    );
    invalid_field(
        client
            .send_to_user(send("u", m("has space", "1", "")))
            .await
            .unwrap_err(),
        "message.type",
    );
    invalid_field(
        client
            .send_to_user(send("u", m(&"x".repeat(129), "1", "")))
            .await
            .unwrap_err(),
        "message.type",
    );
    invalid_field(
        client
            .send_to_user(send("u", m("t", "{oops", "")))
            .await
            .unwrap_err(),
        "message.payload_json",
    );
    invalid_field(
        client
            .send_to_user(send("u", m("t", &format!("\"{}\"", "a".repeat(200)), "")))
            .await
            .unwrap_err(),
        "message.payload_json",
    );
    invalid_field(
        client
            .send_to_user(send("u", m("t", "1", &"i".repeat(65))))
            .await
            .unwrap_err(),
        "message.id",
    );
    invalid_field(
        client
            .send_to_role(authed(SendToRoleRequest {
                role: "".into(),
                message: msg("t", "1"),
            }))
            .await
            .unwrap_err(),
        "role",
    );
    invalid_field(
        client
            .send_to_connection(authed(SendToConnectionRequest {
                connection_id: "".into(),
                message: msg("t", "1"),
            }))
            .await
            .unwrap_err(),
        "connection_id",
    );
    invalid_field(
        client
            .broadcast(authed(BroadcastRequest { message: None }))
            .await
            .unwrap_err(),
        "message",
    );
    invalid_field(
        client
            .get_connection(authed(GetConnectionRequest {
                connection_id: "".into(),
            }))
            .await
            .unwrap_err(),
        "connection_id",
    );
    invalid_field(
        client
            .list_connections(authed(ListConnectionsRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err(),
        "page_token",
    );
    let disc = |target, code, reason: &str| {
        authed(DisconnectRequest {
            target,
            code,
            reason: reason.into(),
        })
    };
    use disconnect_request::Target;
    invalid_field(
        client.disconnect(disc(None, 0, "")).await.unwrap_err(),
        "target",
    );
    invalid_field(
        client
            .disconnect(disc(Some(Target::UserId("".into())), 0, ""))
            .await
            .unwrap_err(),
        "user_id",
    );
    invalid_field(
        client
            .disconnect(disc(Some(Target::ConnectionId("".into())), 0, ""))
            .await
            .unwrap_err(),
        "connection_id",
    );
    invalid_field(
        client
            .disconnect(disc(Some(Target::UserId("u".into())), 1000, ""))
            .await
            .unwrap_err(),
        "code",
    );
    invalid_field(
        client
            .disconnect(disc(Some(Target::UserId("u".into())), 5000, ""))
            .await
            .unwrap_err(),
        "code",
    );
    invalid_field(
        client
            .disconnect(disc(
                Some(Target::UserId("u".into())),
                4000,
                &"r".repeat(124),
            ))
            .await
            .unwrap_err(),
        "reason",
    );
    let e = client
        .watch_events(authed(WatchEventsRequest { kinds: vec![0] }))
        .await
        .unwrap_err();
    invalid_field(e, "kinds");
    let e = client
        .watch_events(authed(WatchEventsRequest { kinds: vec![99] }))
        .await
        .unwrap_err();
    invalid_field(e, "kinds");
    // a payload exactly at the limit passes
    let at_limit = format!("\"{}\"", "a".repeat(98));
    assert!(client
        .send_to_user(send("u", m("t", &at_limit, "")))
        .await
        .is_ok());
    // the server still serves
    assert!(client.get_stats(authed(GetStatsRequest {})).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_connections_pages_filters_and_survives_churn() {
    let s = start().await;
    let mut client = s.client().await;
    let mut conns = Vec::new();
    for i in 0..25 {
        let roles: &[&str] = if i % 5 == 0 { &["admin"] } else { &[] };
        conns.push(s.connect(&format!("user{}", i % 3), roles).await);
    }
    let list = |user: &str, role: &str, size: u32, token: String| {
        authed(ListConnectionsRequest {
            user_id: user.into(),
            role: role.into(),
            topic: String::new(),
            page_size: size,
            page_token: token,
        })
    };
    // filters and totals
    let r = client
        .list_connections(list("user1", "", 0, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.connections.len(), r.total, r.next_page_token.as_str()),
        (8, 8, "")
    );
    assert!(r.connections.iter().all(|c| c.user_id == "user1"));
    let r = client
        .list_connections(list("", "admin", 0, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.total, 5);
    let r = client
        .list_connections(list("user0", "admin", 0, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.total, 2, "user0 at i = 0 and 15");
    let r = client
        .list_connections(list("nobody", "", 0, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.connections.len(), r.total), (0, 0));
    let r = ListConnectionsRequest {
        topic: "orders:1".into(),
        ..Default::default()
    };
    let r = client
        .list_connections(authed(r))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.total, 0, "nobody is subscribed to a topic");

    // pages of 4 while connections come and go between pages
    let mut seen: Vec<String> = Vec::new();
    let mut token = String::new();
    let mut closed: HashSet<String> = HashSet::new();
    let mut pages = 0;
    loop {
        let r = client
            .list_connections(list("", "", 4, token))
            .await
            .unwrap()
            .into_inner();
        assert!(r.connections.len() <= 4);
        seen.extend(r.connections.iter().map(|c| c.connection_id.clone()));
        pages += 1;
        // churn: close one not yet listed, open a new one
        if let Some(pos) = conns.iter().rposition(|w| !seen.contains(&w.id)) {
            let w = conns.remove(pos);
            closed.insert(w.id.clone());
            drop(w);
        }
        conns.push(s.connect("late", &[]).await);
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
        assert!(pages < 50, "pagination must end");
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no connection is listed twice");
    for w in &conns {
        if !w.id.is_empty() && !closed.contains(&w.id) && w.id < seen[0] {
            panic!(
                "connection {} older than the first listed was skipped",
                w.id
            );
        }
    }
    // every connection open from start to end was listed
    let stayed: Vec<&Ws> = conns.iter().take(25 - closed.len().min(25)).collect();
    for w in stayed {
        if conns.iter().any(|c| c.id == w.id) && !w.id.contains("late") {
            assert!(
                seen.contains(&w.id) || closed.contains(&w.id),
                "{} stayed but was not listed",
                w.id
            );
        }
    }
    // page size is capped at 1000
    let r = client
        .list_connections(list("", "", 5000, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert!(r.connections.len() <= 1000);
    assert_eq!(r.total as usize, r.connections.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_stats_counts() {
    let s = start().await;
    let mut client = s.client().await;
    let mut a = s.connect("a", &[]).await;
    let _a2 = s.connect("a", &[]).await;
    let _b = s.connect("b", &[]).await;
    client
        .send_to_user(authed(SendToUserRequest {
            user_id: "a".into(),
            message: msg("t", "1"),
        }))
        .await
        .unwrap();
    a.next_json().await;
    let st = client
        .get_stats(authed(GetStatsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (st.connections, st.users, st.topics, st.nodes),
        (3, 2, 0, 1)
    );
    assert_eq!((st.messages_sent, st.messages_dropped), (2, 0));
    assert_eq!(st.node_id, "test");
    assert!(st.started_at.unwrap().seconds > 1_700_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_by_connection_and_by_user_with_codes() {
    use disconnect_request::Target;
    let s = start().await;
    let mut client = s.client().await;
    let mut one = s.connect("u1", &[]).await;
    let mut u2a = s.connect("u2", &[]).await;
    let mut u2b = s.connect("u2", &[]).await;
    let mut other = s.connect("u3", &[]).await;

    let r = client
        .disconnect(authed(DisconnectRequest {
            target: Some(Target::ConnectionId(one.id.clone())),
            code: 0,
            reason: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.disconnected, 1);
    assert_eq!(one.next_close().await.0, 4000, "default code");

    let r = client
        .disconnect(authed(DisconnectRequest {
            target: Some(Target::UserId("u2".into())),
            code: 4321,
            reason: "banned".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.disconnected, 2);
    for ws in [&mut u2a, &mut u2b] {
        let (code, reason, _) = ws.next_close().await;
        assert_eq!((code, reason.as_str()), (4321, "banned"));
    }
    // gone from every index at once
    let st = client
        .get_stats(authed(GetStatsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.connections, 1);
    let e = client
        .disconnect(authed(DisconnectRequest {
            target: Some(Target::ConnectionId(one.id.clone())),
            code: 0,
            reason: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let r = client
        .disconnect(authed(DisconnectRequest {
            target: Some(Target::UserId("offline".into())),
            code: 0,
            reason: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.disconnected, 0);
    s.assert_nothing_pending(&mut client, &mut [&mut other])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_streams_connects_and_disconnects_filtered_by_kind() {
    let s = start().await;
    let mut client = s.client().await;
    let mut all = client
        .watch_events(authed(WatchEventsRequest { kinds: vec![] }))
        .await
        .unwrap()
        .into_inner();
    let mut only_disc = client
        .watch_events(authed(WatchEventsRequest {
            kinds: vec![event::Kind::Disconnected as i32],
        }))
        .await
        .unwrap()
        .into_inner();
    // The streams are live once the server answered; connect now.
    let ws = s.connect("watched", &["r1"]).await;
    let id = ws.id.clone();
    let e = tokio::time::timeout(WAIT, all.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(e.kind, event::Kind::Connected as i32);
    let c = e.connection.unwrap();
    assert_eq!(
        (c.connection_id.as_str(), c.user_id.as_str()),
        (id.as_str(), "watched")
    );
    assert_eq!(c.roles, vec!["r1"]);
    assert_eq!(e.user_id, "watched");
    client
        .disconnect(authed(DisconnectRequest {
            target: Some(disconnect_request::Target::ConnectionId(id.clone())),
            code: 4100,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    for stream in [&mut all, &mut only_disc] {
        let e = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(e.kind, event::Kind::Disconnected as i32);
        assert_eq!((e.close_code, e.close_reason.as_str()), (4100, "bye"));
        assert_eq!(e.connection.unwrap().connection_id, id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_is_dropped_with_resource_exhausted_and_delivery_goes_on() {
    let mut c = config();
    c.grpc.watch_buffer = 64;
    let s = start_with(c).await;
    let mut client = s.client().await;
    // A watcher on a channel with small HTTP/2 windows, never read while many events happen.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut stalled = RealtimeServiceClient::new(channel)
        .watch_events(authed(WatchEventsRequest { kinds: vec![] }))
        .await
        .unwrap()
        .into_inner();
    let mut receiver = s.connect("receiver", &[]).await;
    let hub = s.hub().clone();
    let started = std::time::Instant::now();
    let mut churn = 0;
    // Connect and drop until far more events than fit in the windows and the buffer (64).
    while churn < 1500 {
        let ws = s.connect("churn", &[]).await;
        drop(ws);
        churn += 1;
    }
    eventually("churned connections to leave", || {
        let hub = hub.clone();
        async move { hub.local().registry.len() == 1 }
    })
    .await;
    // Delivery is not held up by the stalled watcher.
    let r = client
        .send_to_user(authed(SendToUserRequest {
            user_id: "receiver".into(),
            message: msg("still", "1"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.connections, 1);
    assert_eq!(receiver.next_json().await["type"], "still");
    // Now read the watcher: some events, then RESOURCE_EXHAUSTED.
    let mut got = 0;
    let status = loop {
        match tokio::time::timeout(WAIT, stalled.next())
            .await
            .expect("the stream moves")
        {
            Some(Ok(_)) => got += 1,
            Some(Err(status)) => break status,
            None => panic!("stream ended without a status after {got} events"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        got < 3000,
        "the watcher must not have received every event ({got})"
    );
    eprintln!(
        "slow watcher: {got} events then {:?} after {:?}",
        status.message(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served_without_a_key() {
    let s = start().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "boundary.realtime.v1.RealtimeService"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(futures_util::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("{resp:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    // The health service too, so `grpcurl ... grpc.health.v1.Health/Check` works.
    for service in [
        "boundary.realtime.v1.RealtimeService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&service.to_string()), "{service}: {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_requests_do_not_hurt_the_server() {
    let s = start().await;
    // Raw HTTP/2-less garbage on the gRPC port, then a bad protobuf body over real gRPC.
    use tokio::io::AsyncWriteExt;
    let mut raw = tokio::net::TcpStream::connect(s.grpc).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02garbage")
        .await
        .unwrap();
    drop(raw);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/boundary.realtime.v1.RealtimeService/GetStats",
    );
    let mut req = tonic::Request::new(Garbage);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {API_KEY}").parse().unwrap(),
    );
    let r: Result<tonic::Response<Garbage>, _> = grpc.unary(req, path, GarbageCodec).await;
    assert!(r.is_err(), "a body that is not protobuf is refused");
    let mut client = s.client().await;
    assert!(client.get_stats(authed(GetStatsRequest {})).await.is_ok());
}

/// A request body that is not protobuf at all.
#[derive(Clone, Copy, Debug, Default)]
struct Garbage;

#[derive(Clone, Copy, Debug, Default)]
struct GarbageCodec;

impl tonic::codec::Codec for GarbageCodec {
    type Encode = Garbage;
    type Decode = Garbage;
    type Encoder = GarbageCodec;
    type Decoder = GarbageCodec;
    fn encoder(&mut self) -> Self::Encoder {
        GarbageCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        GarbageCodec
    }
}

impl tonic::codec::Encoder for GarbageCodec {
    type Item = Garbage;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        _: Garbage,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]);
        Ok(())
    }
}

impl tonic::codec::Decoder for GarbageCodec {
    type Item = Garbage;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        _: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Garbage>, tonic::Status> {
        Ok(Some(Garbage))
    }
}
