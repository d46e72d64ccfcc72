//! `hpc-rstudio connect`: from the user's own machine, submit a session on a cluster through one
//! shared SSH connection, open the tunnel to it, and keep the tunnel alive.
//!
//! The parts: [`control`] is the shared connection, [`remote`] runs hpc-rstudio on the host,
//! [`tunnel`] is the local port and the forward, [`keepalive`] watches and reconnects,
//! [`signin`] signs the browser in, and [`state`] keeps the local records.

mod control;
mod keepalive;
mod remote;
mod signin;
mod state;
mod tunnel;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;

use crate::cli::{LaunchArgs, ResourceArgs};
use crate::error::{Error, Result};
use crate::paths::User;
use crate::settings::Files;

use control::Control;
use keepalive::{Attached, End};
use remote::{Remote, Waited};
use tunnel::{Target, Tunnel};

/// Options of `connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The host as you write it for `ssh HOST`; your ~/.ssh/config applies.
    pub host: String,

    #[command(flatten)]
    pub launch: LaunchArgs,

    #[command(flatten)]
    pub resources: ResourceArgs,

    /// Re-attach to a session on HOST instead of starting one: its id, or the most recent
    /// running session when left out.
    #[arg(long, value_name = "ID", num_args = 0..=1, default_missing_value = "")]
    pub attach: Option<String>,

    /// List your sessions on HOST.
    #[arg(long, conflicts_with_all = ["attach", "stop", "stop_on_exit"])]
    pub list: bool,

    /// Stop session ID on HOST, letting RStudio save its state first.
    #[arg(long, value_name = "ID", conflicts_with_all = ["attach", "stop_on_exit"])]
    pub stop: Option<String>,

    /// Stop the session when connect ends (Ctrl-C) instead of leaving it running.
    #[arg(long)]
    pub stop_on_exit: bool,

    /// The local port of the tunnel [default: a free one, from 8787 up].
    #[arg(long, value_name = "PORT")]
    pub local_port: Option<u16>,

    /// Print the address and the password but do not open a browser.
    #[arg(long)]
    pub no_browser: bool,

    /// hpc-rstudio's path on HOST, when it is neither on the PATH there nor in ~/.local/bin
    /// [default: remote_command from the config file].
    #[arg(long, value_name = "PATH", env = "HPC_RSTUDIO_REMOTE_COMMAND")]
    pub remote_command: Option<String>,

    /// Copy this program to ~/.local/bin on HOST when HOST lacks hpc-rstudio (same system and
    /// architecture only).
    #[arg(long)]
    pub install: bool,

    /// An ssh configuration file to use instead of ~/.ssh/config (ssh -F).
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,

    /// An option for ssh, as for ssh -o, for example --ssh-option IdentityFile=~/.ssh/hpc.
    /// Repeatable.
    #[arg(long = "ssh-option", value_name = "OPTION")]
    pub ssh_options: Vec<String>,
}

/// Set by Ctrl-C, SIGTERM or SIGHUP: every wait of `connect` looks at it and ends cleanly. A
/// second signal ends the program at once.
#[derive(Clone)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    fn install() -> Result<Stop> {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
        ] {
            // The shutdown is registered first, so it reads the flag before this signal sets it.
            signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag))
                .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&flag)))
                .map_err(|err| Error::failed(format!("cannot handle signal {signal}: {err}")))?;
        }
        Ok(Stop(flag))
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sleeps for `duration` or until the flag is set; returns whether it is set.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        while !self.is_set() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
        }
        true
    }
}

pub fn run(args: &ConnectArgs) -> Result<()> {
    if args.local_port == Some(0) {
        return Err(Error::usage("invalid --local-port 0").with_hint(
            "give a port from 1 to 65535, or leave it out so that a free one is chosen",
        ));
    }
    // A pinned port that is busy now is reported before anything is submitted.
    if let Some(port) = args.local_port.filter(|port| !tunnel::port_free(*port)) {
        return Err(tunnel::busy_error(port));
    }
    let user = User::current()?;
    let files = Files::load(&user)?;
    let requested = args
        .remote_command
        .clone()
        .or_else(|| files.user.remote_command.clone())
        .or_else(|| files.site.remote_command.clone());
    let stop = Stop::install()?;
    let control = Control::new(
        &user,
        &args.host,
        args.ssh_config.as_deref(),
        &args.ssh_options,
    )?;
    eprintln!("Connecting to {}...", args.host);
    control.start(&stop)?;
    let remote = remote::check(&control, requested.as_deref(), args.install)?;
    if args.list {
        return remote.list();
    }
    if let Some(id) = &args.stop {
        return remote.stop(id);
    }

    let waited = match args.attach.as_deref() {
        Some(id) => {
            let id = match id {
                "" => remote.latest_running()?,
                id => id.to_owned(),
            };
            eprintln!("Attaching to session {id} on {}", args.host);
            remote.wait_attach(&id, &stop)?
        }
        None => remote.submit(&remote::submit_args(&args.launch, &args.resources), &stop)?,
    };
    let ready = match waited {
        Waited::Ready(ready) => ready,
        Waited::Interrupted { session } => {
            return interrupted(&remote, session.as_deref(), false, args);
        }
    };

    let opened = Target::of(&ready, &args.host, &remote.hostname).and_then(|target| {
        let tunnel = Tunnel::open(&control, &target, args.local_port, None)?;
        Ok((target, tunnel))
    });
    let (target, tunnel) = match opened {
        Ok(opened) => opened,
        Err(err) => {
            if args.stop_on_exit {
                let _ = remote.stop(&ready.session);
            }
            return Err(err);
        }
    };
    let master = control.master_pid().unwrap_or_default();
    let mut attached = Attached {
        remote: &remote,
        user: &user,
        ready,
        target,
        tunnel,
        master,
        pinned: args.local_port,
    };
    attached.record()?;
    announce(&attached, args);

    let end = attached.keep(&stop);
    attached.tunnel.close(&control);
    state::remove(&user, &attached.ready.session);
    match end? {
        End::Interrupted => interrupted(&remote, Some(&attached.ready.session), true, args),
        End::Ended(status) => {
            if status["state"] == "failed" {
                return Err(remote::ended_error(&args.host, &status));
            }
            eprintln!(
                "Session {} on {} has ended: {}. The tunnel is closed.",
                attached.ready.session,
                args.host,
                remote::ended_reason(&status)
            );
            Ok(())
        }
    }
}

/// Prints how to reach the server, and opens the browser on the sign-in page.
fn announce(attached: &Attached, args: &ConnectArgs) {
    let ready = &attached.ready;
    let url = attached.tunnel.url();
    let job = ready
        .job
        .as_deref()
        .map(|job| format!(", job {job}"))
        .unwrap_or_default();
    println!(
        "RStudio Server is ready: session {}{job} on {}, through {}.",
        ready.session, ready.node, args.host
    );
    println!("  URL:       {url}");
    println!("  User name: {}", ready.user);
    println!("  Password:  {}", ready.password);
    let page = signin::serve(attached.tunnel.port, &ready.user, &ready.password);
    match (&page, args.no_browser) {
        (Ok(page), true) => println!(
            "  Sign-in link (one use, {} s): {}",
            signin::LIFETIME.as_secs(),
            page.url
        ),
        (Ok(page), false) => {
            if !signin::open_browser(&page.url) {
                println!("Open {} in your browser to sign in.", page.url);
            }
        }
        (Err(err), _) => {
            tracing::debug!("no sign-in page: {}", err.message);
            if !args.no_browser && !signin::open_browser(&url) {
                println!("Open {url} in your browser.");
            }
        }
    }
    if args.stop_on_exit {
        println!("Press Ctrl-C to close the tunnel and stop the session.");
    } else {
        println!("Press Ctrl-C to close the tunnel; the session keeps running.");
    }
}

/// Handles Ctrl-C: stops the session with --stop-on-exit, else prints how to re-attach.
fn interrupted(
    remote: &Remote,
    session: Option<&str>,
    had_tunnel: bool,
    args: &ConnectArgs,
) -> Result<()> {
    let host = &args.host;
    let Some(id) = session else {
        eprintln!(
            "Interrupted before a session was submitted; `hpc-rstudio connect {host} --list` shows your sessions."
        );
        return Ok(());
    };
    if args.stop_on_exit {
        return remote.stop(id);
    }
    if had_tunnel {
        eprintln!("Closed the tunnel; session {id} keeps running on {host}.");
    } else {
        eprintln!("Stopped waiting; session {id} stays queued or starting on {host}.");
    }
    eprintln!("Re-attach with: hpc-rstudio connect {host} --attach {id}");
    eprintln!("Stop it with:   hpc-rstudio connect {host} --stop {id}");
    Ok(())
}
