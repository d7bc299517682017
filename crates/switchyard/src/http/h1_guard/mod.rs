//! The request-head guard for HTTP/1.1 clients.
//!
//! hyper's HTTP/1 server drops `Content-Length` when `Transfer-Encoding` is also present
//! (SPEC 4 wants 400), answers its own parse errors with bare responses that carry no
//! `Proxy-Status`, and cannot answer 501 for an unknown transfer coding. So every HTTP/1.1
//! client connection runs through this guard, below hyper: [`head`] checks each request
//! head, [`framing`] follows the byte stream across keep-alive requests so every head is
//! found, and [`io`] is the stream hyper reads, which holds a head back until it passed.

pub mod framing;
pub mod head;
pub mod io;

pub use head::HeadLimits;
pub use io::{GuardConfig, H1Guard, Rejection, RejectionHandle};
