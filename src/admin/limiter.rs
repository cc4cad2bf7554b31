//! How many wrong keys the console's sign-in takes from one address: at most
//! [`MAX_WRONG`] a minute; past that, every attempt from the address is refused (429) without
//! looking at its key, until the oldest wrong one is a minute old. Per node, in memory, and
//! bounded. Pure: time is passed in.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// Wrong keys a minute one address may try.
pub const MAX_WRONG: usize = 5;
/// The window.
pub const WINDOW_MS: i64 = 60_000;
/// Addresses tracked at most; past this, expired ones are dropped, then any one.
const MAX_ADDRESSES: usize = 65_536;

/// Wrong sign-ins per address, over the last minute.
#[derive(Debug, Default)]
pub struct SignInLimiter {
    wrong: HashMap<IpAddr, VecDeque<i64>>,
}

impl SignInLimiter {
    /// When `addr` may try again, if it may not at `now_ms` (ms from now).
    pub fn blocked_for(&mut self, addr: IpAddr, now_ms: i64) -> Option<i64> {
        let times = self.wrong.get_mut(&addr)?;
        while times.front().is_some_and(|t| now_ms - t >= WINDOW_MS) {
            times.pop_front();
        }
        if times.is_empty() {
            self.wrong.remove(&addr);
            return None;
        }
        (times.len() >= MAX_WRONG).then(|| times[0] + WINDOW_MS - now_ms)
    }

    /// `addr` tried a wrong key at `now_ms`.
    pub fn wrong(&mut self, addr: IpAddr, now_ms: i64) {
        if self.wrong.len() >= MAX_ADDRESSES && !self.wrong.contains_key(&addr) {
            self.wrong
                .retain(|_, t| t.back().is_some_and(|last| now_ms - last < WINDOW_MS));
            if self.wrong.len() >= MAX_ADDRESSES {
                if let Some(any) = self.wrong.keys().next().copied() {
                    self.wrong.remove(&any);
                }
            }
        }
        let times = self.wrong.entry(addr).or_default();
        times.push_back(now_ms);
        // Only the last MAX_WRONG matter.
        while times.len() > MAX_WRONG {
            times.pop_front();
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.wrong.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_wrong_keys_a_minute_then_refused_until_the_first_is_a_minute_old() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut l = SignInLimiter::default();
        for t in 0..5 {
            assert_eq!(l.blocked_for(a, t * 1000), None);
            l.wrong(a, t * 1000);
        }
        assert_eq!(l.blocked_for(a, 5_000), Some(55_000));
        assert_eq!(
            l.blocked_for(b, 5_000),
            None,
            "another address is not affected"
        );
        assert_eq!(l.blocked_for(a, 59_999), Some(1));
        // The first wrong key is a minute old: four in the window, one more may try.
        assert_eq!(l.blocked_for(a, 60_000), None);
        l.wrong(a, 60_000);
        assert_eq!(l.blocked_for(a, 60_001), Some(1_000 - 1));
        assert_eq!(l.blocked_for(a, 200_000), None);
        assert_eq!(
            l.tracked(),
            0,
            "an address with nothing in the window is forgotten"
        );
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut l = SignInLimiter::default();
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            l.wrong(IpAddr::from(i.to_be_bytes()), 0);
        }
        assert!(l.tracked() <= MAX_ADDRESSES);
    }
}
