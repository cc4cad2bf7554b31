//! boundary-realtime: browsers hold WebSocket connections, backends push to them over gRPC.
pub mod core;
pub mod proto {
    tonic::include_proto!("boundary.realtime.v1");
}
