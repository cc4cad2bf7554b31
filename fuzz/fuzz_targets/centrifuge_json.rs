//! Fuzzes the Centrifugo endpoint's JSON decoder (newline-separated commands in a text frame):
//! it must never panic, and a frame it accepts re-encodes: every reply built from what it read
//! is valid JSON.
#![no_main]

use boundary_realtime::centrifuge::codec::Codec;
use boundary_realtime::centrifuge::wire::{Error, Reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Codec::Json.decode(data, false) {
        Ok(cmds) => {
            assert!(!cmds.is_empty());
            for c in cmds {
                let channel = c
                    .subscribe
                    .map(|s| s.channel)
                    .or(c.unsubscribe.map(|u| u.channel))
                    .unwrap_or_default();
                let reply = Codec::Json.encode(&Reply {
                    id: c.id,
                    error: Some(Error {
                        code: 107,
                        message: channel,
                        temporary: false,
                    }),
                    ..Default::default()
                });
                assert!(serde_json::from_slice::<serde_json::Value>(&reply).is_ok());
            }
        }
        Err(e) => assert!(!e.0.is_empty()),
    }
});
