//! Property tests of the parsers and validators that face untrusted input: the client frame
//! parser, token extraction from the upgrade request, and gRPC message validation. They check
//! the same properties as the `fuzz/` targets (no panic; accepted input means what it says),
//! in `cargo test`, on stable Rust.

use boundary_realtime::core::message::{self, MessageInput};
use boundary_realtime::core::native::{self, ClientFrame};
use boundary_realtime::core::token;
use proptest::prelude::*;
use serde_json::Value;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        ..ProptestConfig::default()
    }
}

/// Strings that look a bit like client frames, to get past the JSON parser often.
fn frameish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\{\"op\":\"(ping|auth|refresh|subscribe|unsubscribe|x)\"(,\"(ref|token|topic|since)\":(\"[a-z0-9]{0,8}\"|[0-9]{1,3}|null|\\{\\}|\\[\\]))*\\}",
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_frame_parser_never_panics_and_errors_are_well_formed(text in frameish()) {
        match native::parse(&text) {
            Ok(ClientFrame::Ping { reference }) => {
                let reply: Value = serde_json::from_str(&native::pong(reference.as_ref())).unwrap();
                prop_assert_eq!(reply.get("ref"), reference.as_ref());
            }
            Ok(_) => {}
            Err(bad) => {
                prop_assert!(!bad.message.is_empty());
                let reply: Value = serde_json::from_str(&native::error(native::ErrorCode::BadRequest, &bad.message, bad.reference.as_ref())).unwrap();
                prop_assert_eq!(&reply["code"], "bad_request");
            }
        }
    }

    #[test]
    fn ping_refs_are_echoed_exactly(r in prop_oneof![any::<i64>().prop_map(Value::from), any::<String>().prop_map(Value::from)]) {
        let text = serde_json::json!({"op": "ping", "ref": r}).to_string();
        let parsed = native::parse(&text).unwrap();
        prop_assert_eq!(parsed, ClientFrame::Ping { reference: Some(r) });
    }

    #[test]
    fn token_extraction_never_panics_and_the_query_wins(
        query in prop::option::of(any::<String>()),
        header in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
        t in "[A-Za-z0-9._~+/=-]{0,40}",
    ) {
        let _ = token::extract(query.as_deref(), header.as_deref());
        let q = serde_urlencoded::to_string([("token", t.as_str())]).unwrap();
        prop_assert_eq!(token::extract(Some(&q), header.as_deref()), Ok(Some(t.clone())));
        let h = format!("Bearer {t}");
        prop_assert_eq!(token::extract(None, Some(h.as_bytes())), Ok(Some(t.trim().to_owned())));
    }

    #[test]
    fn message_validation_accepts_exactly_the_documented_messages(
        kind in prop_oneof!["[A-Za-z0-9._:-]{1,128}", any::<String>()],
        payload in prop_oneof![Just(String::new()), any::<String>(), "\\{\"[a-z]{1,5}\":[0-9]{1,4}\\}", "\\[[0-9,]{0,20}\\]"],
        id in prop_oneof![Just(String::new()), any::<String>()],
        limit in 1usize..200,
    ) {
        let input = MessageInput { kind: &kind, payload_json: &payload, id: &id };
        let valid_kind = !kind.is_empty() && kind.len() <= 128
            && kind.chars().all(|c| c.is_ascii_alphanumeric() || ".:_-".contains(c));
        let parsed = serde_json::from_str::<Value>(&payload);
        // serde_json's Value refuses numbers beyond f64, which JSON itself allows.
        let huge_number = matches!(&parsed, Err(e) if e.to_string().contains("number out of range"));
        prop_assume!(!huge_number);
        let valid_payload = payload.len() <= limit && (payload.trim().is_empty() || parsed.is_ok());
        let valid_id = id.chars().count() <= 64;
        match message::validate("message", input, limit) {
            Ok(m) => {
                prop_assert!(valid_kind && valid_payload && valid_id, "accepted {kind:?} {payload:?} {id:?}");
                let event = boundary_realtime::core::event::Event::Message(m.to_message(&id, 7));
                let frame: Value = serde_json::from_slice(&native::event(&event)).unwrap();
                prop_assert_eq!(frame["type"].as_str(), Some(kind.as_str()));
                prop_assert_eq!(frame["id"].as_str(), Some(id.as_str()));
                prop_assert_eq!(&frame["ts"], 7);
                let want: Value = if payload.trim().is_empty() { Value::Null } else { serde_json::from_str(&payload).unwrap() };
                prop_assert_eq!(&frame["payload"], &want);
            }
            Err(_) => prop_assert!(!(valid_kind && valid_payload && valid_id), "refused {kind:?} {payload:?} {id:?}"),
        }
    }
}

mod topics {
    use boundary_realtime::core::history::{History, HistoryEntry, Recovery};
    use boundary_realtime::core::topic;
    use proptest::prelude::*;

    /// The reference matcher: segment lists, `*` one segment, trailing `**` one or more.
    fn reference(p: &[&str], t: &[&str]) -> bool {
        match (p.split_first(), t.split_first()) {
            (Some((&"**", [])), _) => !t.is_empty(),
            (Some((ps, prest)), Some((ts, trest))) => {
                (*ps == "*" || ps == ts) && reference(prest, trest)
            }
            (None, None) => true,
            _ => false,
        }
    }

    fn segs() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(
            prop_oneof![Just("a"), Just("b"), Just("c"), Just("*"), Just("**")]
                .prop_map(String::from),
            1..5,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn the_pattern_matcher_agrees_with_the_reference(p in segs(), t in prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(String::from), 1..6)) {
            let (pattern, topic_name) = (p.join(":"), t.join(":"));
            let ps: Vec<&str> = p.iter().map(String::as_str).collect();
            let ts: Vec<&str> = t.iter().map(String::as_str).collect();
            prop_assert_eq!(topic::matches(&pattern, &topic_name), reference(&ps, &ts), "{} vs {}", pattern, topic_name);
            // a topic always matches itself
            prop_assert!(topic::matches(&topic_name, &topic_name));
        }

        #[test]
        fn history_keeps_the_newest_within_size_and_age_with_gapless_offsets(
            size in 0usize..8,
            ttl in 1u64..50,
            steps in prop::collection::vec((0i64..10, prop::option::of(0u8..6)), 1..60),
        ) {
            let mut h: History<u64> = History::new("e".into(), size, ttl);
            let mut now = 0i64;
            // the model: every publication ever made, (offset, id, at)
            let mut all: Vec<(u64, String, i64)> = Vec::new();
            for (dt, id) in steps {
                now += dt;
                let offset = h.next_offset();
                prop_assert_eq!(offset, all.len() as u64 + 1, "offsets are 1, 2, 3, ...");
                let id = id.map(|i| format!("m{i}")).unwrap_or_default();
                h.push(HistoryEntry { offset, message_id: id.as_str().into(), published_at_ms: now, event: offset }, now);
                all.push((offset, id, now));
                h.evict(now);
                let kept: Vec<&(u64, String, i64)> = all
                    .iter()
                    .rev()
                    .take(size)
                    .filter(|(_, _, at)| now - at < ttl as i64)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                let got: Vec<u64> = h.after(0, usize::MAX).map(|p| p.offset).collect();
                let want: Vec<u64> = kept.iter().map(|k| k.0).collect();
                prop_assert_eq!(&got, &want);
                prop_assert_eq!(h.latest(), all.len() as u64);
                // an id is found iff a kept publication carries it, at the newest such offset
                for i in 0..6u8 {
                    let id = format!("m{i}");
                    let newest = kept.iter().rev().find(|k| k.1 == id).map(|k| k.0);
                    prop_assert_eq!(h.find_id(&id), newest, "{}", id);
                }
                // recovery from any position either replays exactly the rest or says lost
                for from in 0..=all.len() as u64 {
                    match h.recover(from, "e") {
                        Recovery::Replay { after, latest } => {
                            let replay: Vec<u64> = h.after(after, usize::MAX).map(|p| p.offset).collect();
                            prop_assert_eq!(replay, (after + 1..=latest).collect::<Vec<_>>());
                            prop_assert_eq!((after, latest), (from, all.len() as u64));
                        }
                        Recovery::Lost => prop_assert!(from < all.len() as u64 && !want.contains(&(from + 1))),
                    }
                }
            }
        }
    }
}
