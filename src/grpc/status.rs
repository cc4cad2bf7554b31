//! Maps the core's errors to gRPC status codes: the one place the gRPC door does it.

use tonic::Status;

use crate::core::CoreError;

pub fn to_status(e: CoreError) -> Status {
    match e {
        CoreError::InvalidArgument { .. } => Status::invalid_argument(e.to_string()),
        CoreError::NotFound { .. } => Status::not_found(e.to_string()),
        CoreError::ShuttingDown | CoreError::Unavailable(_) => Status::unavailable(e.to_string()),
    }
}

/// INVALID_ARGUMENT naming a required field that is empty or unset.
pub fn required(field: &str) -> Status {
    Status::invalid_argument(format!("{field}: is required"))
}
