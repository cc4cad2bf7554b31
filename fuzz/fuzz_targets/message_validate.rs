//! Fuzzes gRPC message validation and frame encoding: no panic, and an accepted message
//! encodes to valid JSON carrying the same type and id.
#![no_main]

use boundary_realtime::core::event::Event;
use boundary_realtime::core::native;
use boundary_realtime::core::message::{self, MessageInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\u{1f}');
    let kind = parts.next().unwrap_or("");
    let payload = parts.next().unwrap_or("");
    let id = parts.next().unwrap_or("");
    let input = MessageInput {
        kind,
        payload_json: payload,
        id,
    };
    if let Ok(m) = message::validate("message", input, 4096) {
        let event = Event::Message(m.to_message(id, 1));
        let frame = native::event(&event);
        let v: serde_json::Value = match serde_json::from_slice(&frame) {
            Ok(v) => v,
            // Where serde_json's Value is stricter than JSON itself, on purpose: it stops at depth
            // 128, and refuses numbers beyond f64 (JSON allows them; browsers read Infinity).
            Err(e)
                if e.to_string().contains("recursion limit")
                    || e.to_string().contains("number out of range") =>
            {
                return
            }
            Err(e) => panic!("encoded frame is not JSON: {e}"),
        };
        assert_eq!(v["type"].as_str(), Some(kind));
        assert_eq!(v["id"].as_str(), Some(id));
    }
});
