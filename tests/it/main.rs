//! Integration tests: one binary (one link) with a module per area.

mod common;

mod admin;
mod auth;
mod bench;
mod centrifuge;
mod cli;
mod cluster;
mod consumers;
mod delivery;
mod grpc_api;
mod http_api;
mod jwks;
mod lifecycle;
mod logs;
mod protection;
mod publish_many;
mod routing;
mod tls;
mod topics;
mod users;
