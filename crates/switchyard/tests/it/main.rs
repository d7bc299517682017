//! Integration tests over real sockets on 127.0.0.1:0, one module per behaviour.

mod admin;
mod backend;
mod browser;
mod cli;
mod collapse;
mod config;
mod dashboard;
mod discovery;
mod drill;
mod exchange_bounds;
mod h1_server;
mod h1_upstream;
mod h2_server;
mod h2_wire;
mod http;
mod jwt;
mod l4;
mod reload;
mod resilience;
mod shutdown;
mod support;
mod tcp;
mod tls;
mod udp;
mod upgrade;
mod xdp;
