//! Fuzzes token extraction from an upgrade request's query string and Authorization header.
#![no_main]

use boundary_realtime::core::token;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Split the input in two: query string | header bytes.
    let cut = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let query = String::from_utf8_lossy(&data[..cut]);
    let header = data.get(cut + 1..);
    let _ = token::extract(Some(&query), header);
    let _ = token::extract(None, header);
});
