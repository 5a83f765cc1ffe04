//! The offline verbs: validate, render, explain, validate-filter-config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check Switchyard filter configurations (the JSON a filter receives as
    /// its plugin configuration) with the same validation the filters run.
    /// Exit status 0 when every file is valid, 1 otherwise; one line per
    /// problem: `FILE: field.path: message`.
    ValidateFilterConfig {
        /// Which filter the files configure.
        #[arg(long, value_enum)]
        filter: Filter,
        /// JSON files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Filter {
    Routing,
    Fault,
    Mirror,
    Egress,
}

pub fn run(command: ConfigCommand) -> ExitCode {
    match command {
        ConfigCommand::ValidateFilterConfig { filter, files } => validate_filter_configs(filter, &files),
    }
}

fn validate_filter_configs(filter: Filter, files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for file in files {
        let result = std::fs::read(file).map_err(|e| e.to_string()).and_then(|bytes| {
            let checked = match filter {
                Filter::Routing => switchyard_policy::routing::CompiledRouting::from_json(&bytes).map(drop),
                Filter::Fault => switchyard_policy::fault::CompiledFault::from_json(&bytes).map(drop),
                Filter::Mirror => switchyard_policy::mirror::CompiledMirror::from_json(&bytes).map(drop),
                Filter::Egress => switchyard_policy::egress::CompiledEgress::from_json(&bytes).map(drop),
            };
            checked.map_err(|e| e.to_string())
        });
        match result {
            Ok(()) => println!("{}: valid", file.display()),
            Err(message) => {
                failed = true;
                println!("{}: {message}", file.display());
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
