//! The core's typed errors. Each door maps them once: the gRPC door to a `tonic::Status`, the
//! WebSocket door to an error frame or close code.

/// What went wrong in a request, in terms a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// An argument is missing or malformed; `field` names it as the caller spelled it.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The thing named does not exist (a connection that is not live).
    #[error("{what} not found")]
    NotFound { what: String },
    /// The service is going away and takes no new work.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// The cluster broker cannot be reached: nothing was done (never a false success).
    #[error("the cluster broker is unavailable: {0}")]
    Unavailable(String),
}

impl CoreError {
    /// Shorthand for [`CoreError::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CoreError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
