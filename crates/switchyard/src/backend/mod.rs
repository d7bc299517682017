//! `switchyard backend`: the fault-injecting test upstream.

/// Command-line arguments of `switchyard backend`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub listen: std::net::SocketAddr,
}
