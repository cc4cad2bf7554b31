//! Heartbeat and expiry decisions for one connection, at a given time. The shell's sweeper
//! calls [`check`] for every connection on each tick and carries out the answer; there is no
//! timer per connection.

/// The timing rules, from configuration.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub ping_interval_ms: i64,
    pub pong_timeout_ms: i64,
    pub leeway_ms: i64,
}

/// What is known about one connection.
#[derive(Debug, Clone, Copy)]
pub struct State {
    pub connected_at_ms: i64,
    /// When a frame (any frame, pongs included) last arrived.
    pub last_seen_ms: i64,
    /// When the server last sent a Ping; `None` before the first.
    pub ping_sent_ms: Option<i64>,
    /// The token's `exp`.
    pub expires_at_ms: Option<i64>,
}

/// What the sweeper should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    SendPing,
    /// No pong or frame within `pong_timeout` of the last ping: close 4408.
    HeartbeatLost,
    /// The token's `exp` (plus leeway) has passed: close 4001.
    TokenExpired,
}

pub fn check(now_ms: i64, s: State, r: Rules) -> Action {
    if let Some(exp) = s.expires_at_ms {
        if now_ms >= exp.saturating_add(r.leeway_ms) {
            return Action::TokenExpired;
        }
    }
    match s.ping_sent_ms {
        Some(sent) if s.last_seen_ms < sent => {
            if now_ms - sent >= r.pong_timeout_ms {
                Action::HeartbeatLost
            } else {
                Action::Nothing
            }
        }
        Some(sent) => {
            if now_ms - sent >= r.ping_interval_ms {
                Action::SendPing
            } else {
                Action::Nothing
            }
        }
        None => {
            if now_ms - s.connected_at_ms >= r.ping_interval_ms {
                Action::SendPing
            } else {
                Action::Nothing
            }
        }
    }
}

/// How often the sweeper should look: often enough to act within a fraction of the shortest
/// interval, at most once a second, at least every 10 ms.
pub fn tick_ms(r: Rules) -> u64 {
    (r.ping_interval_ms.min(r.pong_timeout_ms) / 4).clamp(10, 1000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rules = Rules {
        ping_interval_ms: 25_000,
        pong_timeout_ms: 10_000,
        leeway_ms: 0,
    };

    fn st(last_seen: i64, ping: Option<i64>, exp: Option<i64>) -> State {
        State {
            connected_at_ms: 0,
            last_seen_ms: last_seen,
            ping_sent_ms: ping,
            expires_at_ms: exp,
        }
    }

    #[test]
    fn pings_every_interval_from_connect() {
        assert_eq!(check(24_999, st(0, None, None), R), Action::Nothing);
        assert_eq!(check(25_000, st(0, None, None), R), Action::SendPing);
        // answered ping: next one an interval after it
        assert_eq!(
            check(40_000, st(25_100, Some(25_000), None), R),
            Action::Nothing
        );
        assert_eq!(
            check(50_000, st(25_100, Some(25_000), None), R),
            Action::SendPing
        );
    }

    #[test]
    fn an_unanswered_ping_is_lost_after_the_timeout() {
        assert_eq!(check(34_999, st(0, Some(25_000), None), R), Action::Nothing);
        assert_eq!(
            check(35_000, st(0, Some(25_000), None), R),
            Action::HeartbeatLost
        );
        // any frame after the ping counts as an answer
        assert_eq!(
            check(35_000, st(25_000, Some(25_000), None), R),
            Action::Nothing
        );
    }

    #[test]
    fn expiry_wins_and_honours_leeway() {
        assert_eq!(
            check(1_000, st(0, None, Some(1_000)), R),
            Action::TokenExpired
        );
        assert_eq!(check(999, st(0, None, Some(1_000)), R), Action::Nothing);
        let lenient = Rules {
            leeway_ms: 500,
            ..R
        };
        assert_eq!(
            check(1_499, st(0, None, Some(1_000)), lenient),
            Action::Nothing
        );
        assert_eq!(
            check(1_500, st(0, None, Some(1_000)), lenient),
            Action::TokenExpired
        );
    }

    #[test]
    fn ticks_are_bounded() {
        assert_eq!(tick_ms(R), 1000);
        assert_eq!(
            tick_ms(Rules {
                ping_interval_ms: 100,
                pong_timeout_ms: 100,
                leeway_ms: 0
            }),
            25
        );
        assert_eq!(
            tick_ms(Rules {
                ping_interval_ms: 1,
                pong_timeout_ms: 1,
                leeway_ms: 0
            }),
            10
        );
    }
}
