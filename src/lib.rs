//! boundary-realtime: browsers hold WebSocket connections, backends push to them over gRPC.
//!
//! Two doors, one core. [`ws`] (axum) and [`grpc`] (tonic) are thin translators; both call the
//! [`hub`], which validates and encodes a message once and hands it to the [`cluster`] family
//! (one node in memory, or any number of nodes on Redis); every delivery ends in a node's
//! [`node::LocalNode`], whose [`core::registry`] finds the recipients and queues the shared
//! frame to each. [`core`] is pure (no I/O, no clock); everything else is the shell.

pub mod admin;
pub mod auth;
pub mod centrifuge;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod consumers;
pub mod core;
pub mod grpc;
pub mod heap_trim;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod node;
pub mod random;
pub mod server;
pub mod sweeper;
pub mod telemetry;
pub mod tls;
pub mod websocket;
pub mod ws;

/// The generated protobuf types and the gRPC service and client.
pub mod proto {
    #![allow(clippy::all)]
    tonic::include_proto!("boundary.realtime.v1");
}
