//! Fuzzes the Centrifugo endpoint's Protobuf decoder (varint-length-delimited commands in a
//! binary frame): it must never panic, and what it accepts encodes back to the same commands.
#![no_main]

use boundary_realtime::centrifuge::codec::Codec;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(cmds) = Codec::Protobuf.decode(data, true) {
        let mut again = Vec::new();
        for c in &cmds {
            again.extend(c.encode_length_delimited_to_vec());
        }
        assert_eq!(Codec::Protobuf.decode(&again, true).unwrap(), cmds);
    }
});
