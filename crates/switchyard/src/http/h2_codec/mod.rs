//! The wire codec of our own HTTP/2 server: the parts of RFC 9113 and RFC 7541 that turn
//! bytes into requests and responses into bytes, with no I/O, no clock and no connection
//! state beyond what the protocol itself requires (the HPACK tables), so every rule can be
//! tested with exact bytes. It replaces the h2 crate's server on the hot path, where a
//! proxy pays for every instruction spent per request.

pub mod frame;
pub mod hpack;
