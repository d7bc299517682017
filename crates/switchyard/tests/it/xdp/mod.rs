//! The packet tier's tests. They need root (namespaces, XDP) and fail when not root unless
//! `SWITCHYARD_SKIP_ROOT_TESTS=1` says to skip them (then they print why and pass).

mod balance;
mod errors;
mod fleet;
mod lab;
mod testrun;
mod topo;
