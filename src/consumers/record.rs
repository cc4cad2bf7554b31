//! What a consumer's record means (pure): its `method` names a unary RPC of the API, its
//! params are that RPC's request in the HTTP JSON API's mapping, and the RPC's answer decides
//! whether the record is done (applied, or set aside for good) or must be tried again.

use tonic::Code;

/// The methods a record may hold, with the RPC each one runs.
pub const METHODS: [(&str, &str); 8] = [
    ("publish", "Publish"),
    ("send_to_user", "SendToUser"),
    ("send_to_role", "SendToRole"),
    ("send_to_connection", "SendToConnection"),
    ("broadcast", "Broadcast"),
    ("disconnect", "Disconnect"),
    ("subscribe", "Subscribe"),
    ("unsubscribe", "Unsubscribe"),
];

/// The RPC a record's `method` runs.
pub fn rpc_of(method: &str) -> Result<&'static str, String> {
    METHODS
        .iter()
        .find(|(m, _)| *m == method)
        .map(|(_, rpc)| *rpc)
        .ok_or_else(|| {
            let names: Vec<&str> = METHODS.iter().map(|(m, _)| *m).collect();
            format!("unknown method {method:?}: one of {}", names.join(", "))
        })
}

/// How a record ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The service accepted its command (or there was nobody to apply it to: NOT_FOUND).
    Applied,
    /// It can never succeed (bad JSON, an unknown method, invalid params): set aside with why.
    Failed(String),
    /// The service cannot apply commands now (its broker unreachable, shutting down): try it
    /// again later, in order, before anything after it.
    Retry(String),
}

/// The outcome of a record whose RPC answered `code` (with `message`).
pub fn outcome(code: Code, message: &str) -> Outcome {
    match code {
        Code::Ok | Code::NotFound => Outcome::Applied,
        Code::InvalidArgument
        | Code::Unimplemented
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::ResourceExhausted => Outcome::Failed(format!("{code:?}: {message}")),
        Code::Unavailable
        | Code::Internal
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Cancelled
        | Code::DataLoss => Outcome::Retry(format!("{code:?}: {message}")),
    }
}

/// The wait before the `attempt`-th retry of the same record (from 1): 100 ms doubling up
/// to 5 s.
pub fn backoff_ms(attempt: u32) -> u64 {
    (100u64 << attempt.saturating_sub(1).min(6)).min(5000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_map_to_rpcs_and_unknown_ones_are_named() {
        assert_eq!(rpc_of("publish"), Ok("Publish"));
        assert_eq!(rpc_of("send_to_user"), Ok("SendToUser"));
        let e = rpc_of("Publish").unwrap_err();
        assert!(
            e.contains("\"Publish\"") && e.contains("send_to_connection"),
            "{e}"
        );
    }

    #[test]
    fn answers_decide_done_failed_or_again() {
        assert_eq!(outcome(Code::Ok, ""), Outcome::Applied);
        assert_eq!(outcome(Code::NotFound, "gone"), Outcome::Applied);
        assert!(
            matches!(outcome(Code::InvalidArgument, "topic"), Outcome::Failed(m) if m.contains("topic"))
        );
        assert!(matches!(
            outcome(Code::Unavailable, "redis"),
            Outcome::Retry(_)
        ));
        assert_eq!(
            [1, 2, 3, 6, 7, 20].map(backoff_ms),
            [100, 200, 400, 3200, 5000, 5000]
        );
    }
}
