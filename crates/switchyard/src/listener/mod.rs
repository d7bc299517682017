//! Listeners: binding sockets and serving what arrives on them.
//!
//! `bind` owns how a socket is opened (so "address in use" is reported the same way for
//! every protocol), `relay` moves bytes between two streams with idle and drain handling,
//! and one module per protocol accepts and dispatches.

pub mod accept;
pub mod bind;
pub mod destination;
pub mod per_ip;
pub mod prelude;
pub mod proxy_protocol;
pub mod rejections;
pub mod relay;
pub mod sni;
pub mod splice;
pub mod tcp;
pub mod udp;
