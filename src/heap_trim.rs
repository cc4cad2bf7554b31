//! Giving freed heap memory back to the operating system. glibc's malloc keeps memory freed in
//! the middle of its heaps (and in per-thread arenas) until asked; after a wave of connections
//! leaves, that is most of what they used. The sweeper calls [`trim`] when the connection count
//! has fallen a lot since the last trim, at most once per [`MIN_INTERVAL_MS`].

/// The least time between two trims.
pub const MIN_INTERVAL_MS: i64 = 10_000;

/// Whether a trim is worth it now: at least 256 connections and a quarter of the peak have
/// left since the last trim, which was at least [`MIN_INTERVAL_MS`] ago.
pub fn worth_trimming(peak_since_trim: usize, now_len: usize, ms_since_trim: i64) -> bool {
    let left = peak_since_trim.saturating_sub(now_len);
    ms_since_trim >= MIN_INTERVAL_MS && left >= 256 && left * 4 >= peak_since_trim
}

/// Returns free heap pages to the operating system (glibc only; elsewhere a no-op).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() {
    // SAFETY: glibc's malloc_trim takes a byte count, locks each arena itself and touches only
    // the allocator's own free memory; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_after_a_real_drop_and_not_too_often() {
        assert!(worth_trimming(10_000, 2_000, 10_000));
        assert!(!worth_trimming(10_000, 2_000, 9_999), "too soon");
        assert!(!worth_trimming(10_000, 9_000, 60_000), "only a tenth left");
        assert!(!worth_trimming(300, 100, 60_000), "fewer than 256 left");
        assert!(worth_trimming(1_000, 0, 60_000));
        trim(); // and it runs
    }
}
