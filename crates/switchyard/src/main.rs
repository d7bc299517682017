//! The `switchyard` binary: command-line parsing only; everything else lives in the library.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about = "An L4/L7 load balancer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fault-injecting test upstream.
    Backend(switchyard::backend::BackendArgs),
}

fn main() {
    let _cli = Cli::parse();
}
