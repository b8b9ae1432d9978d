//! `conntrace`: parse, run, map the outcome to an exit status (see `exit::Status`).
use std::process::ExitCode;

use std::io::IsTerminal as _;

use clap::{Parser as _, error::ErrorKind};
use conntrace::{
    app,
    cli::{self, Cli, Command},
    exit::{self, Status},
    output::terminal::write_line,
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version, and the help shown for a bare `conntrace`.
        Err(e)
            if !e.use_stderr()
                || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            e.exit()
        }
        Err(e) => {
            let _ = write_line(
                &mut std::io::stderr(),
                format_args!("conntrace: {}", cli::usage_line(&e)),
            );
            return Status::Usage.into();
        }
    };
    init_logging(cli.verbose);
    let result = match &cli.command {
        Command::Trace(args) => app::trace(args),
        Command::Top(args) => app::top(args),
        Command::Diagnose(args) => app::diagnose(args),
        Command::Health(args) => Ok(app::health(args)),
    };
    match result {
        Ok(status) => status.into(),
        Err(err) => {
            let status = exit::status_of(&err);
            // One line, escaped: messages quote paths and names given to us. A failing
            // stderr leaves nothing else to tell.
            let line = if status == Status::Internal {
                format!("conntrace: {err:#}")
            } else {
                format!("conntrace: {err}")
            };
            let _ = write_line(&mut std::io::stderr(), format_args!("{line}"));
            status.into()
        }
    }
}

/// Logs go to stderr; stdout carries data only. Colours only on a terminal (and not with
/// NO_COLOR); a stderr that fails is ignored, never a panic.
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
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .log_internal_errors(false)
        .with_target(false)
        .init();
}
