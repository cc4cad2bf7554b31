//! Random values from the operating system: dev-mode secrets and id prefixes.

/// `bytes` random bytes as lowercase hex.
pub fn hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The OS random source is always available on the platforms we build for; if it is not,
    // the process cannot make secrets and must not start.
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
