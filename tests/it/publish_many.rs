//! PublishBatch and PublishStream (PROTOCOL.md section 6): every item follows the rules of a
//! unary Publish, answers in order with its own code, keeps topic order, retries by id, stops a
//! topic after UNAVAILABLE; the stream answers everything and ends OK when the client is done.

use boundary_realtime::proto::*;
use futures_util::StreamExt;
use tonic::Code;

use crate::common::*;

fn item(topic: &str, payload: &str, id: &str) -> PublishRequest {
    PublishRequest {
        topic: topic.into(),
        message: Some(Message {
            r#type: "t".into(),
            payload_json: payload.into(),
            id: id.into(),
        }),
    }
}

/// Sends `items` over one PublishStream and collects every answer; the stream must end OK.
async fn stream(client: &mut Client, items: Vec<PublishRequest>) -> Vec<PublishResult> {
    client
        .publish_stream(authed(futures_util::stream::iter(items)))
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.expect("every item answered in the stream, which ends OK"))
        .collect()
        .await
}

/// What each result says: (index, code, offset or error).
fn summary(results: &[PublishResult]) -> Vec<(u32, u32, String)> {
    results
        .iter()
        .map(|r| {
            let what = match &r.response {
                Some(p) => format!("{}@{}", p.offset, p.connections),
                None => r.error.clone(),
            };
            (r.index, r.code, what)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_item_in_order_and_one_failure_fails_only_itself() {
    let mut c = config();
    c.topics.public = vec!["**".into()];
    let s = start_with(c).await;
    let mut client = s.client().await;
    let mut ws = s.connect("reader", &[]).await;
    ws.send_text(r#"{"op":"subscribe","topic":"a","ref":1}"#)
        .await;
    assert_eq!(ws.next_json().await["op"], "subscribed");
    let no_message = PublishRequest {
        topic: "b".into(),
        message: None,
    };
    let r = client
        .publish_batch(authed(PublishBatchRequest {
            items: vec![
                item("a", "1", "x-1"),
                item("bad topic", "1", ""),
                item("b", "{", ""),
                item("a", "2", ""),
                no_message,
                item("a", "1", "x-1"), // a retry of the first, in the same call
                item("b", "3", ""),
            ],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        summary(&r.results),
        [
            (0, 0, "1@1".into()),
            (
                1,
                Code::InvalidArgument as u32,
                "topic: contains ' '; allowed are A-Z a-z 0-9 . _ : @ / -".into()
            ),
            (2, Code::InvalidArgument as u32, r.results[2].error.clone()),
            (3, 0, "2@1".into()),
            (
                4,
                Code::InvalidArgument as u32,
                "message: is required".into()
            ),
            (5, 0, "1@0".into()),
            (6, 0, "1@0".into()),
        ]
    );
    assert!(
        r.results[2]
            .error
            .starts_with("message.payload_json: is not valid JSON"),
        "{:?}",
        r.results[2]
    );
    let first = r.results[0].response.as_ref().unwrap();
    let retry = r.results[5].response.as_ref().unwrap();
    assert_eq!(
        (retry.message_id.as_str(), retry.epoch.as_str()),
        ("x-1", first.epoch.as_str())
    );
    // The subscriber got topic a's two publications once each, in order.
    let (p1, p2) = (ws.next_json().await, ws.next_json().await);
    assert_eq!(
        (p1["offset"].clone(), p2["offset"].clone()),
        (1.into(), 2.into())
    );
    s.assert_nothing_pending(&mut client, &mut [&mut ws]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_none_too_many_or_too_large_is_refused_whole() {
    let mut c = config();
    c.limits.max_batch_bytes = 2_000;
    let s = start_with(c).await;
    let mut client = s.client().await;
    let call = |items: Vec<PublishRequest>| {
        let mut client = client.clone();
        async move {
            client
                .publish_batch(authed(PublishBatchRequest { items }))
                .await
                .unwrap_err()
        }
    };
    let e = call(vec![]).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("items: 0 items"), "{e:?}");
    let e = call(vec![item("a", "1", ""); 1001]).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = call(vec![item("a", &"1".repeat(500), ""); 5]).await;
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("limits.max_batch_bytes"), "{e:?}");
    // Nothing of them was published.
    let h = client
        .history(authed(HistoryRequest {
            topic: "a".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.latest_offset, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_answers_every_publication_in_order_and_ends_when_the_client_does() {
    let s = start().await;
    let mut client = s.client().await;
    let topics = ["s1", "s2", "s3"];
    let mut items: Vec<PublishRequest> = (0..300)
        .map(|i| item(topics[i % 3], &i.to_string(), ""))
        .collect();
    items[150] = item("bad topic", "1", "");
    let results: Vec<PublishResult> = stream(&mut client, items).await;
    assert_eq!(results.len(), 300);
    let mut next = [1u64; 3];
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.index, i as u32);
        if i == 150 {
            assert_eq!(r.code, Code::InvalidArgument as u32, "{r:?}");
            continue;
        }
        let t = i % 3;
        let p = r.response.as_ref().expect("published");
        assert_eq!(p.offset, next[t], "topic {} keeps stream order", topics[t]);
        next[t] += 1;
    }
    // Item 150 (of s1's turn) failed: s1 has one publication fewer.
    assert_eq!(next, [100, 101, 101]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_unavailable_the_rest_of_the_topic_is_not_published() {
    let mut redis = RedisProc::start();
    let mut c = config();
    c.broker.kind = boundary_realtime::config::BrokerKind::Redis;
    c.broker.redis_url = redis.url();
    let s = start_with(c).await;
    let mut client = s.client().await;
    redis.stop();
    let r = client
        .publish_batch(authed(PublishBatchRequest {
            items: vec![item("u", "1", ""), item("u", "2", "")],
        }))
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<u32> = r.results.iter().map(|r| r.code).collect();
    assert_eq!(codes, [Code::Unavailable as u32; 2]);
    assert!(
        r.results[1]
            .error
            .contains("earlier publication to this topic"),
        "{:?}",
        r.results[1]
    );
    // The same over a stream, whose items run as they come.
    let items = vec![item("u", "1", ""), item("u", "2", ""), item("v", "3", "")];
    let streamed: Vec<PublishResult> = stream(&mut client, items).await;
    let codes: Vec<u32> = streamed.iter().map(|r| r.code).collect();
    assert_eq!(codes, [Code::Unavailable as u32; 3]);
    assert!(
        streamed[1]
            .error
            .contains("earlier publication to this topic"),
        "{:?}",
        streamed[1]
    );
    assert!(
        !streamed[2].error.contains("earlier publication"),
        "another topic is tried: {:?}",
        streamed[2]
    );
}

/// Across two nodes on Redis: a batch through one node and its retry through the other publish
/// each id once; a stream through the other continues the same order; the subscribers on both
/// nodes get every publication once, in order, and each call counts them without asking the
/// other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_streams_through_two_nodes_make_one_order_and_retry_by_id() {
    let redis = RedisProc::start();
    let node = |id: &str| {
        let mut c = config();
        c.node.id = id.into();
        c.broker.kind = boundary_realtime::config::BrokerKind::Redis;
        c.broker.redis_url = redis.url();
        c.topics.public = vec!["**".into()];
        c
    };
    let a = start_with(node("a")).await;
    let b = start_with(node("b")).await;
    let (mut via_a, mut via_b) = (a.client().await, b.client().await);
    eventually("the nodes to see each other", || {
        let mut c = via_a.clone();
        async move {
            c.get_stats(authed(GetStatsRequest {}))
                .await
                .is_ok_and(|r| r.into_inner().nodes == 2)
        }
    })
    .await;
    let mut on_a = a.connect("ra", &[]).await;
    let mut on_b = b.connect("rb", &[]).await;
    for ws in [&mut on_a, &mut on_b] {
        ws.send_text(r#"{"op":"subscribe","topic":"m","ref":1}"#)
            .await;
        assert_eq!(ws.next_json().await["op"], "subscribed");
    }
    let batch = vec![
        item("m", "1", "id-1"),
        item("bad topic", "1", ""),
        item("m", "2", "id-2"),
        item("n", "3", "id-3"),
    ];
    let r = via_a
        .publish_batch(authed(PublishBatchRequest {
            items: batch.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let bad = Code::InvalidArgument as u32;
    let topic_error = "topic: contains ' '; allowed are A-Z a-z 0-9 . _ : @ / -".to_owned();
    assert_eq!(
        summary(&r.results),
        [
            (0, 0, "1@2".into()),
            (1, bad, topic_error.clone()),
            (2, 0, "2@2".into()),
            (3, 0, "1@0".into()),
        ]
    );
    // The whole batch again through the other node: the same answers, nothing delivered.
    let again = via_b
        .publish_batch(authed(PublishBatchRequest { items: batch }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        summary(&again.results),
        [
            (0, 0, "1@0".into()),
            (1, bad, topic_error),
            (2, 0, "2@0".into()),
            (3, 0, "1@0".into()),
        ]
    );
    let items: Vec<PublishRequest> = (3..8).map(|i| item("m", &i.to_string(), "")).collect();
    let streamed: Vec<PublishResult> = stream(&mut via_b, items).await;
    let offsets: Vec<String> = summary(&streamed).into_iter().map(|s| s.2).collect();
    assert_eq!(offsets, ["3@2", "4@2", "5@2", "6@2", "7@2"]);
    for ws in [&mut on_a, &mut on_b] {
        for offset in 1..=7u64 {
            let f = ws.next_json().await;
            assert_eq!(
                (f["topic"].as_str(), f["offset"].as_u64()),
                (Some("m"), Some(offset)),
                "{f}"
            );
        }
    }
    a.assert_nothing_pending(&mut via_a, &mut [&mut on_a, &mut on_b])
        .await;
}
