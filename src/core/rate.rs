//! A token bucket for client frames: `rate` tokens per second, holding at most `burst`.
//! Time is passed in (milliseconds on any monotonic scale).

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
}
