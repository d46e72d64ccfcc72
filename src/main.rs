//! hpc-rstudio: RStudio Server from a Rocker image under Apptainer or SingularityCE, on this node
//! or as a SLURM batch job, with a password, private state and an SSH tunnel command.

mod batch;
mod cli;
mod connect;
mod diagnose;
mod doctor;
mod error;
mod fsinfo;
mod http;
mod image;
mod launch;
mod manage;
mod paths;
mod private_fs;
mod probe;
mod process;
mod procs;
mod resources;
mod rserver;
mod rstudio_state;
mod runtime;
mod session;
mod settings;
mod shell;
mod slurm;
mod supervisor;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    // Files we create are private, whatever umask the user or the batch job has.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    if !matches!(cli.command, Command::Run(_) | Command::Job(_)) {
        // SAFETY: restoring the default action of SIGPIPE at start, before any thread exists.
        // Output piped into `head` then ends the program quietly, as for other Unix tools,
        // instead of a panic. The supervisors keep Rust's default, so a closed terminal
        // cannot kill them halfway through stopping a server.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }

    let result = match &cli.command {
        Command::Run(args) => launch::run(args),
        Command::Submit(args) => launch::submit(args),
        Command::Script(args) => launch::script(args),
        Command::Job(args) => launch::job(args),
        Command::List(args) => manage::list(args),
        Command::Status(args) => manage::status(args),
        Command::Stop(args) => manage::stop(args),
        Command::Logs(args) => manage::logs(args),
        Command::Clean(args) => manage::clean(args),
        Command::Pull(args) => manage::pull(args),
        Command::Doctor(args) => doctor::doctor(args),
        Command::Connect(args) => connect::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error::report(&err);
            if let Command::Submit(args) = &cli.command {
                if args.json {
                    let value = serde_json::json!({
                        "event": "error", "message": err.message, "hint": err.hint,
                        "details": err.details,
                    });
                    println!("{value}");
                }
            }
            err.kind.exit_code()
        }
    }
}

/// Logs go to stderr: warnings by default, lifecycle events inside a batch job (where they
/// are the job's output), everything with --verbose. HPC_RSTUDIO_LOG takes a tracing filter.
fn init_logging(cli: &Cli) {
    let default = if cli.verbose {
        "debug"
    } else if matches!(cli.command, Command::Job(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HPC_RSTUDIO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("hpc_rstudio={default}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
