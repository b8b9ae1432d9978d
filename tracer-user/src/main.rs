//! `conntrace`: parse, run, map the outcome to an exit status (see `exit::Status`).
use std::process::ExitCode;

use clap::Parser as _;
use conntrace::{
    app,
    cli::{Cli, Command},
    exit::{self, Status},
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match &cli.command {
        Command::Trace(args) => app::trace(args),
        Command::Top(args) => app::top(args),
        Command::Diagnose(args) => app::diagnose(args),
    };
    match result {
        Ok(status) => status.into(),
        Err(err) => {
            let status = exit::status_of(&err);
            if status == Status::Internal {
                eprintln!("conntrace: {err:#}");
            } else {
                eprintln!("conntrace: {err}");
            }
            status.into()
        }
    }
}

/// Logs go to stderr; stdout carries data only.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "conntrace=info",
        1 => "conntrace=debug",
        _ => "conntrace=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
