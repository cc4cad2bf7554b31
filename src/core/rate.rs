//! Rates, purely: a token bucket for client frames (`rate` tokens per second, holding at most
//! `burst`), and a budget of log lines per second. Time is passed in (milliseconds on any
//! monotonic scale).

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_ms: f64,
    burst: f64,
    tokens: f64,
    last_ms: i64,
}

impl TokenBucket {
    /// A full bucket at time `now_ms`.
    pub fn new(rate_per_s: u32, burst: u32, now_ms: i64) -> Self {
        TokenBucket {
            rate_per_ms: f64::from(rate_per_s) / 1000.0,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last_ms: now_ms,
        }
    }

    /// Takes one token; false when the bucket is empty.
    pub fn take(&mut self, now_ms: i64) -> bool {
        let elapsed = (now_ms - self.last_ms).max(0) as f64;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * self.rate_per_ms).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A budget of log lines per one-second window: the first `per_window` are written, the rest
/// counted, and the count handed out once the window is over (for one summary line).
#[derive(Debug, Clone)]
pub struct LogBudget {
    per_window: u32,
    window_start_ms: i64,
    written: u32,
    suppressed: u64,
}

/// The length of a [`LogBudget`] window.
pub const LOG_WINDOW_MS: i64 = 1000;

impl LogBudget {
    pub fn new(per_window: u32) -> Self {
        LogBudget {
            per_window,
            window_start_ms: i64::MIN,
            written: 0,
            suppressed: 0,
        }
    }

    /// Whether one more line may be written at `now_ms`; when the window it falls in is a new
    /// one, also what the last window suppressed (to summarize first).
    pub fn admit(&mut self, now_ms: i64) -> (bool, Option<u64>) {
        let ended = self.roll(now_ms);
        if self.written < self.per_window {
            self.written += 1;
            (true, ended)
        } else {
            self.suppressed += 1;
            (false, ended)
        }
    }

    /// What a window that is over at `now_ms` suppressed, once (`None` when nothing was, or
    /// the window still runs).
    pub fn summary(&mut self, now_ms: i64) -> Option<u64> {
        self.roll(now_ms)
    }

    fn roll(&mut self, now_ms: i64) -> Option<u64> {
        if now_ms.saturating_sub(self.window_start_ms) < LOG_WINDOW_MS {
            return None;
        }
        self.window_start_ms = now_ms;
        self.written = 0;
        Some(std::mem::take(&mut self.suppressed)).filter(|n| *n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let mut b = TokenBucket::new(50, 100, 0);
        assert!((0..100).all(|_| b.take(0)), "the burst");
        assert!(!b.take(0), "empty");
        assert!(!b.take(19), "0.95 of a token after 19 ms");
        assert!(b.take(20), "one token per 20 ms at 50/s");
        assert!(!b.take(20));
        // over ten seconds at exactly the rate: every frame passes
        let mut b = TokenBucket::new(50, 100, 0);
        assert!((1..=500).all(|i| b.take(i * 20)));
        // it never holds more than the burst
        let mut b = TokenBucket::new(50, 100, 0);
        assert_eq!((0..1000).filter(|_| b.take(1_000_000)).count(), 100);
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let mut b = TokenBucket::new(1, 1, 1000);
        assert!(b.take(1000));
        assert!(!b.take(0));
        assert!(!b.take(1500));
        assert!(b.take(2000));
    }

    #[test]
    fn a_log_budget_writes_the_first_lines_of_a_second_and_counts_the_rest() {
        let mut b = LogBudget::new(2);
        assert_eq!(b.admit(0), (true, None));
        assert_eq!(b.admit(10), (true, None));
        assert_eq!(b.admit(20), (false, None));
        assert_eq!(b.admit(999), (false, None));
        assert_eq!(b.summary(500), None, "the window still runs");
        // A new window: the last one's count comes with the first line.
        assert_eq!(b.admit(1000), (true, Some(2)));
        assert_eq!(b.admit(1001), (true, None));
        assert_eq!(b.admit(1002), (false, None));
        // Nothing more: the summary comes when asked after the window.
        assert_eq!(b.summary(2500), Some(1));
        assert_eq!(b.summary(4000), None, "told once");
    }
}
