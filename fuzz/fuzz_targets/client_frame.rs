//! Fuzzes the WebSocket client frame parser: it must never panic, and every error it returns
//! must encode to a valid `bad_request` reply.
#![no_main]

use boundary_realtime::core::native;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match native::parse(&text) {
        Ok(native::ClientFrame::Ping { reference }) => {
            let reply = native::pong(reference.as_ref());
            assert!(serde_json::from_str::<serde_json::Value>(&reply).is_ok());
        }
        Ok(_) => {}
        Err(bad) => {
            let reply = native::error(
                native::ErrorCode::BadRequest,
                &bad.message,
                bad.reference.as_ref(),
            );
            assert!(serde_json::from_str::<serde_json::Value>(&reply).is_ok());
        }
    }
});
