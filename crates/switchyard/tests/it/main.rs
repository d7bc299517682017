//! Integration tests over real sockets on 127.0.0.1:0, one module per behaviour.

mod admin;
mod backend;
mod cli;
mod config;
mod http;
mod l4;
mod support;
mod tcp;
mod tls;
mod udp;
