//! Fuzzes the WebSocket client frame parser: it must never panic, and every error it returns
//! must encode to a valid `bad_request` reply.
#![no_main]

use boundary_realtime::core::frames;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match frames::parse(&text) {
        Ok(frames::ClientFrame::Ping { reference }) => {
            let reply = frames::pong(reference.as_ref());
            assert!(serde_json::from_str::<serde_json::Value>(&reply).is_ok());
        }
        Ok(_) => {}
        Err(bad) => {
            let reply = frames::error(
                frames::ErrorCode::BadRequest,
                &bad.message,
                bad.reference.as_ref(),
            );
            assert!(serde_json::from_str::<serde_json::Value>(&reply).is_ok());
        }
    }
});
