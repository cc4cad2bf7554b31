//! The refusal log: why a client was refused or closed, at `info`, so that "why was I refused?"
//! can be answered from the log. A refused upgrade (401, 403, 429), a connection closed for an
//! expired token, its rate, bad frames or a missed heartbeat (4001, 4029, 4400, 4408, and
//! their Centrifugo counterparts), a refused API call (401): each with the reason, the
//! remote address and the user when known; never a token or a key. At most
//! [`LINES_PER_SECOND`] lines a second per node; the rest are counted in one summary line,
//! written with the next refusal or by the sweeper's next tick.

use parking_lot::Mutex;

use crate::core::rate::LogBudget;

/// The most refusal lines a node writes in a second.
pub const LINES_PER_SECOND: u32 = 10;

/// One refusal, as logged.
#[derive(Debug, Clone, Copy)]
pub struct Refusal<'a> {
    /// What was refused: `upgrade refused`, `connection closed` or `API call refused`.
    pub what: &'static str,
    /// The HTTP status, close code or gRPC code's HTTP-like number that was answered.
    pub code: u16,
    pub reason: &'a str,
    pub remote_addr: &'a str,
    /// The user, when the token was read far enough to know it.
    pub user_id: Option<&'a str>,
}

pub struct RefusalLog {
    budget: Mutex<LogBudget>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog {
            budget: Mutex::new(LogBudget::new(LINES_PER_SECOND)),
        }
    }
}

impl RefusalLog {
    /// Logs `r` at `now_ms`, or counts it when this second's lines are spent.
    pub fn record(&self, r: Refusal<'_>, now_ms: i64) {
        let (write, ended) = self.budget.lock().admit(now_ms);
        if let Some(n) = ended {
            summary(n);
        }
        if write {
            tracing::info!(
                code = r.code,
                reason = r.reason,
                remote_addr = r.remote_addr,
                user_id = r.user_id.unwrap_or(""),
                "{}",
                r.what
            );
        }
    }

    /// Writes the summary of a second that is over (called every sweeper tick).
    pub fn flush(&self, now_ms: i64) {
        let ended = self.budget.lock().summary(now_ms);
        if let Some(n) = ended {
            summary(n);
        }
    }
}

fn summary(n: u64) {
    tracing::info!(
        not_logged = n,
        "{n} more refusals in the last second were not logged (at most {LINES_PER_SECOND} a second)"
    );
}
