//! `xds-ext`: verbs in the spirit of istioctl. Each group of verbs lives with
//! the code it drives: `config::cli` (validate, render, explain, and
//! validate-filter-config) and `server::cli` (serve, status).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xds_ext::{config, server};

#[derive(Parser)]
#[command(name = "xds-ext", version, about = "Switchyard's extension config server (ECDS) and CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Config(config::cli::ConfigCommand),
    #[command(flatten)]
    Server(server::cli::ServerCommand),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Config(command) => config::cli::run(command),
        Command::Server(command) => server::cli::run(command),
    }
}
