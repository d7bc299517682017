//! The L7 tier: HTTP/1.1, h2c and HTTP/2 proxying.
//!
//! `server` accepts and speaks to clients, `pipeline` is the one place that orders a
//! request's phases (admit, route, attempt, respond, log), `upstream` keeps the pooled
//! connections to endpoints, and `error` maps every failure the proxy answers for itself
//! to its response.

pub mod added_fields;
pub mod attempt;
pub mod body;
pub mod error;
pub mod exchange_clock;
pub mod forwarding;
pub mod global_limit;
pub mod h1_client;
pub mod h1_codec;
pub mod h1_server;
pub mod h2_codec;
pub mod h2_server;
pub mod jwt;
pub mod listener;
pub mod pipeline;
pub mod rate_limit;
pub mod raw_fields;
pub mod read_buf;
pub mod retry;
pub mod rewind;
pub mod router;
pub mod server;
pub mod server_fields;
pub mod sticky;
pub mod upgrade;
pub mod upstream;

/// SPEC 3.1: a request head (or trailer section) with more fields than this is answered
/// 431, over HTTP/1.1 and HTTP/2 alike.
pub const MAX_HEADER_FIELDS: usize = 100;
