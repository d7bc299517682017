//! Switchyard: an L4/L7 load balancer.
//!
//! The crate is a library so that integration tests can start a balancer, its admin API and
//! test backends in-process on `127.0.0.1:0`; `main.rs` is a thin command-line layer.

pub mod admin;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod drill;
pub mod grpc_wire;
pub mod health;
pub mod http;
pub mod listener;
pub mod loadgen;
pub mod runtime;
pub mod tls;
pub mod xdp;
