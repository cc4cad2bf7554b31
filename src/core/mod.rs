//! The pure core: what a connection is, who a message goes to, what a valid message and frame
//! look like. Nothing here does I/O, spawns a task, awaits, or reads the clock: time is passed
//! in as unix milliseconds. The shell (`crate::node`, `crate::ws`, `crate::grpc`) owns sockets,
//! timers and tasks and calls into this module.

pub mod claims;
pub mod close;
pub mod error;
pub mod event;
pub mod heartbeat;
pub mod history;
pub mod ids;
pub mod message;
pub mod model;
pub mod native;
pub mod origin;
pub mod page;
pub mod rate;
pub mod registry;
pub mod stream;
pub mod token;
pub mod topic;
pub mod topic_table;
pub mod users;

pub use error::CoreError;
