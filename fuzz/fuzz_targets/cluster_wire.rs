//! Fuzzes what a node reads from another over Redis and from a topic's history: the envelope,
//! a publication's position line and the compact message. It must never panic, and a message
//! that decodes encodes back to bytes that decode to the same message.
#![no_main]

use boundary_realtime::cluster::redis::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, body)) = wire::decode(data) {
        let _ = wire::split_position(body);
    }
    let _ = wire::split_position(data);
    if let Ok(m) = wire::decode_message(data) {
        let again = wire::decode_message(&wire::encode_message(&m)).expect("re-decodes");
        assert_eq!(again, m);
    }
});
