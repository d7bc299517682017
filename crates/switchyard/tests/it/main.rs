//! Integration tests over real sockets on 127.0.0.1:0, one module per behaviour.

mod admin;
mod backend;
mod cli;
mod collapse;
mod config;
mod http;
mod jwt;
mod l4;
mod resilience;
mod support;
mod tcp;
mod tls;
mod udp;
mod xdp;
