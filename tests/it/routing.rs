//! Each routing mode reaches exactly its connections: the right ones get the frame, and a
//! marker sent afterwards is the very next frame every other connection sees.

use boundary_realtime::proto::*;
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_routing_mode_reaches_exactly_its_connections() {
    let s = start().await;
    let mut client = s.client().await;
    let mut alice1 = s.connect("alice", &["admin", "staff"]).await;
    let mut alice2 = s.connect("alice", &["staff"]).await;
    let mut bob = s.connect("bob", &["staff"]).await;
    let mut carol = s.connect("carol", &[]).await;

    // SendToUser: both of alice's connections, nobody else.
    let r = client
        .send_to_user(authed(SendToUserRequest {
            user_id: "alice".into(),
            message: Some(Message {
                r#type: "order.updated".into(),
                payload_json: r#"{"id":42,"status":"paid"}"#.into(),
                id: "m-1".into(),
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.message_id.as_str(), r.connections), ("m-1", 2));
    // User streams are on by default: the user's first message is offset 1 of its stream,
    // with the epoch SendResponse gives, and no topic.
    assert_eq!(r.offset, 1);
    for ws in [&mut alice1, &mut alice2] {
        let f = ws.next_json().await;
        let ts = f["ts"].as_i64().unwrap();
        assert!(ts > 1_700_000_000_000, "{f}");
        assert_eq!(
            f,
            json!({"type":"order.updated","payload":{"id":42,"status":"paid"},"id":"m-1","ts":ts,
                   "offset":1,"epoch":r.epoch})
        );
    }
    s.assert_nothing_pending(&mut client, &mut [&mut bob, &mut carol])
        .await;

    // SendToRole: every connection whose token has the role.
    let r = client
        .send_to_role(authed(SendToRoleRequest {
            role: "staff".into(),
            message: msg("role.msg", "1"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.connections, 3);
    assert!(!r.message_id.is_empty(), "the server makes an id");
    for ws in [&mut alice1, &mut alice2, &mut bob] {
        let f = ws.next_json().await;
        assert_eq!(
            (f["type"].as_str(), &f["payload"], f["id"].as_str()),
            (Some("role.msg"), &json!(1), Some(r.message_id.as_str()))
        );
    }
    s.assert_nothing_pending(&mut client, &mut [&mut carol])
        .await;

    let r = client
        .send_to_role(authed(SendToRoleRequest {
            role: "admin".into(),
            message: msg("admin.msg", ""),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.connections, 1);
    let f = alice1.next_json().await;
    assert_eq!(
        (f["type"].as_str(), &f["payload"]),
        (Some("admin.msg"), &json!(null))
    );
    s.assert_nothing_pending(&mut client, &mut [&mut alice2, &mut bob, &mut carol])
        .await;

    // SendToConnection: one connection.
    let r = client
        .send_to_connection(authed(SendToConnectionRequest {
            connection_id: bob.id.clone(),
            message: msg("direct", r#""hi""#),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.connections, 1);
    assert_eq!(bob.next_json().await["payload"], "hi");
    s.assert_nothing_pending(&mut client, &mut [&mut alice1, &mut alice2, &mut carol])
        .await;

    // Broadcast: everyone.
    let r = client
        .broadcast(authed(BroadcastRequest {
            message: msg("news", "[1,2]"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.connections, 4);
    for ws in [&mut alice1, &mut alice2, &mut bob, &mut carol] {
        assert_eq!(ws.next_json().await["payload"], json!([1, 2]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_matching_is_ok_with_zero_and_a_dead_connection_is_not_found() {
    let s = start().await;
    let mut client = s.client().await;
    assert_eq!(send_user(&mut client, "offline", "t", "1").await, 0);
    assert_eq!(send_role(&mut client, "nobody", "t", "1").await, 0);
    let r = client
        .broadcast(authed(BroadcastRequest {
            message: msg("t", "1"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.connections, 0);
    for id in [
        "test.0000000000000001",
        "other-node.0000000000000001",
        "garbage",
    ] {
        let e = client
            .send_to_connection(authed(SendToConnectionRequest {
                connection_id: id.into(),
                message: msg("t", "1"),
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{id}");
    }
    // A connection that closed is gone from every index at once.
    let ws = s.connect("gone", &["r"]).await;
    let id = ws.id.clone();
    drop(ws);
    eventually("the closed connection to leave", || {
        let mut client = client.clone();
        let id = id.clone();
        async move {
            client
                .get_connection(authed(GetConnectionRequest { connection_id: id }))
                .await
                .is_err_and(|e| e.code() == tonic::Code::NotFound)
        }
    })
    .await;
    assert_eq!(send_user(&mut client, "gone", "t", "1").await, 0);
    assert_eq!(send_role(&mut client, "r", "t", "1").await, 0);
}
