//! The commands that start a session: `run`, `submit`, `script`, and `job` (the batch job's side).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cli::{JobArgs, LaunchArgs, ResourceArgs, RunArgs, ScriptArgs, SubmitArgs};
use crate::error::{Error, Result};
use crate::paths::{self, User};
use crate::private_fs;
use crate::session::{Connection, Mode, ServerState, SessionDir, SessionRecord};
use crate::settings::{self, Files};
use crate::supervisor::{self, Report};
use crate::{image, probe, rserver, runtime, slurm};

/// Everything checked and prepared before a session starts or a job is submitted.
struct Prepared {
    user: User,
    record: SessionRecord,
}

/// Resolves settings, finds the runtime, resolves and probes the image, and checks that the
/// image's rserver accepts the arguments this session will use, all before anything starts.
fn prepare(
    mode: Mode,
    launch: &LaunchArgs,
    resources: Option<&ResourceArgs>,
    login_host: Option<&str>,
) -> Result<Prepared> {
    let user = User::current()?;
    let files = Files::load(&user)?;
    let mut settings = settings::resolve(&user, &files, launch, resources)?;
    settings.login_host = login_host
        .map(str::to_owned)
        .or_else(|| files.user.login_host.clone())
        .or_else(|| files.site.login_host.clone());
    let runtime = runtime::Runtime::detect(settings.runtime.as_deref())?;
    crate::doctor::preflight(&runtime, &user)?;
    if settings.shared_tmp {
        let check = crate::doctor::check_foreign_tmp(user.uid);
        if check.status != crate::doctor::Status::Ok {
            return Err(Error::usage(format!("--shared-tmp: {}", check.detail)).with_hint(
                "leave --shared-tmp out, so the session gets a private /tmp, or ask the owner to remove it",
            ));
        }
    }
    prepare_rstudio_state(&user, &settings, launch.fresh_session)?;
    let image = image::resolve(&settings.image, &settings.image_cache, &runtime)?;
    let probe = probe::probe_cached(&image, &runtime, &paths::cache_dir(&user))?;

    // Build the arguments once now, with a placeholder port, so that an option the image does
    // not support is reported before a job is queued.
    let listen = if settings.socket {
        rserver::Listen::Socket
    } else {
        rserver::Listen::Tcp {
            address: settings.www_address.clone(),
            port: settings.port.unwrap_or(8787),
        }
    };
    rserver::arguments(&probe, &settings, &user.name, user.uid, &listen)?;

    let record = SessionRecord {
        id: crate::session::new_id(),
        created: crate::session::now(),
        mode,
        user: user.name.clone(),
        submit_host: paths::short_hostname(),
        login_host: settings.login_host.clone(),
        settings,
        runtime,
        image,
        probe,
        job_id: None,
    };
    Ok(Prepared { user, record })
}

/// Reports the size and stale locks of RStudio's saved state and, with `--fresh-session`,
/// moves it aside so that RStudio starts clean.
fn prepare_rstudio_state(user: &User, settings: &settings::Settings, fresh: bool) -> Result<()> {
    let root = crate::rstudio_state::state_root(user, &settings.env);
    if !root.exists() {
        return Ok(());
    }
    if fresh {
        let running: Vec<String> = crate::session::list_ids(&paths::state_dir(user))?
            .into_iter()
            .filter(|id| {
                SessionDir::open(&paths::state_dir(user), id)
                    .is_ok_and(|dir| crate::manage::is_active(&dir))
            })
            .collect();
        if let Some(id) = running.first() {
            return Err(Error::usage(format!(
                "--fresh-session: session {id} may still be using {}",
                root.display()
            ))
            .with_hint(format!("stop it first with `hpc-rstudio stop {id}`")));
        }
        if let Some(moved) = crate::rstudio_state::move_aside(&root)? {
            eprintln!("Moved RStudio's saved state aside to {}", moved.display());
        }
        return Ok(());
    }
    let stale = crate::rstudio_state::stale_locks(&root);
    if !stale.is_empty() {
        let size = crate::fsinfo::human(crate::fsinfo::dir_size(&root));
        eprintln!(
            "warning: RStudio's saved state in {} ({size}) has {} stale lock file(s), for example {}",
            root.display(),
            stale.len(),
            stale[0].display()
        );
        eprintln!("  fix: if RStudio hangs or shows an old session, start with --fresh-session");
    }
    Ok(())
}

/// `hpc-rstudio run`: a session in the foreground of this process.
pub fn run(args: &RunArgs) -> Result<()> {
    let mut prepared = prepare(Mode::Local, &args.launch, None, None)?;
    let settings = &mut prepared.record.settings;
    settings.cpus = args.cpus.or(settings.cpus);
    if let Some(cpus) = args.cpus {
        crate::resources::check_cpus(cpus)?;
    }
    // Inside an allocation the server must be reachable from the login node for the tunnel;
    // elsewhere only this host needs it.
    settings.www_address = match (&args.address, std::env::var_os("SLURM_JOB_ID")) {
        (Some(address), _) => address.clone(),
        (None, Some(_)) => "0.0.0.0".to_owned(),
        (None, None) => "127.0.0.1".to_owned(),
    };
    check_address(&prepared.record.settings.www_address)?;
    let state_dir = paths::state_dir(&prepared.user);
    let dir = SessionDir::create(&state_dir, &prepared.record.id)?;
    dir.write_session(&prepared.record)?;
    eprintln!(
        "Session {} with {} from {}",
        dir.id,
        prepared.record.probe.describe(),
        prepared.record.image.path.display()
    );
    let record = prepared.record.clone();
    let in_allocation =
        std::env::var_os("SLURM_JOB_ID").is_some() && record.settings.www_address != "127.0.0.1";
    supervisor::supervise(&prepared.user, &dir, &record, &|report| match report {
        Report::Starting { port, .. } => match port {
            Some(port) => eprintln!("Starting RStudio Server on port {port}..."),
            None => eprintln!("Starting RStudio Server on a Unix socket..."),
        },
        Report::Ready(connection) => {
            println!("RStudio Server is ready.");
            println!("  URL:       {}", connection.url);
            if in_allocation {
                let login = record.login_host.clone().unwrap_or_else(paths::hostname);
                println!(
                    "  Tunnel:    {}",
                    tunnel_command(connection, &record.user, &login)
                );
            }
            println!("  User name: {}", connection.user);
            println!("  Password:  {}", connection.password);
            println!("Press Ctrl-C to stop it; R sessions save their state first.");
        }
        Report::Stopping(reason) => eprintln!("Stopping RStudio Server ({reason})..."),
        Report::Stopped {
            reason,
            suspended,
            saved,
        } => {
            eprintln!("Stopped ({reason}). {saved} of {suspended} R session(s) saved their state.")
        }
        Report::Note(text) => eprintln!("note: {text}"),
    })
}

/// Checks that `address` is an IPv4 address of this host (or 0.0.0.0), so that rserver can
/// listen on it.
fn check_address(address: &str) -> Result<()> {
    let invalid = |why: &str| {
        Error::usage(format!("invalid --address '{address}': {why}"))
            .with_hint("use 127.0.0.1 (this host only), 0.0.0.0 (all interfaces) or an IPv4 address of this host")
    };
    let ip: std::net::Ipv4Addr = address
        .parse()
        .map_err(|_| invalid("not an IPv4 address"))?;
    std::net::TcpListener::bind((ip, 0)).map_err(|err| invalid(&err.to_string()))?;
    Ok(())
}

/// The ssh command that forwards local port 8787 to the server through the login host.
pub fn tunnel_command(connection: &Connection, user: &str, login_host: &str) -> String {
    match (&connection.socket, connection.port) {
        // A socket lives on the compute node, so the tunnel goes there, through the login host.
        (Some(socket), _) => format!(
            "ssh -N -L 8787:{} -J {user}@{login_host} {user}@{}",
            socket.display(),
            connection.node
        ),
        (None, Some(port)) => format!(
            "ssh -N -L 8787:{}:{port} {user}@{login_host}",
            connection.node
        ),
        (None, None) => String::new(),
    }
}

fn binary_path() -> Result<PathBuf> {
    let path = std::env::current_exe()
        .map_err(|err| Error::failed(format!("cannot find this program's path: {err}")))?;
    Ok(std::fs::canonicalize(&path).unwrap_or(path))
}

/// `hpc-rstudio script`: the batch script `submit` would send.
pub fn script(args: &ScriptArgs) -> Result<()> {
    let prepared = prepare(Mode::Batch, &args.launch, Some(&args.resources), None)?;
    let dir = paths::state_dir(&prepared.user)
        .join("sessions")
        .join(&prepared.record.id);
    let text = crate::batch::script(
        &binary_path()?,
        &prepared.record.id,
        &dir,
        &prepared.record.settings.resources,
    )?;
    print!("{text}");
    Ok(())
}

/// `hpc-rstudio submit`: submit the batch job and, without --no-wait, wait for the server.
pub fn submit(args: &SubmitArgs) -> Result<()> {
    let mut prepared = prepare(
        Mode::Batch,
        &args.launch,
        Some(&args.resources),
        args.login_host.as_deref(),
    )?;
    if prepared.record.login_host.is_none() {
        prepared.record.login_host = Some(paths::hostname());
    }
    let state_dir = paths::state_dir(&prepared.user);
    let dir = SessionDir::create(&state_dir, &prepared.record.id)?;
    let text = crate::batch::script(
        &binary_path()?,
        &dir.id,
        &dir.path,
        &prepared.record.settings.resources,
    )?;
    let script_path = dir.file("batch.sh");
    private_fs::write_atomic(&script_path, text.as_bytes(), 0o700)?;
    crate::shell::check_syntax(&script_path)?;
    dir.write_session(&prepared.record)?;

    let job = match slurm::submit(&script_path) {
        Ok(job) => job,
        Err(err) => {
            // Nothing runs for this session, so its record would only clutter `list`.
            let _ = std::fs::remove_dir_all(&dir.path);
            return Err(err);
        }
    };
    prepared.record.job_id = Some(job.clone());
    dir.write_session(&prepared.record)?;
    let progress = Progress::new(args.json);
    if args.json {
        progress.event(
            "",
            serde_json::json!({"event": "submitted", "session": dir.id, "job": job}),
        );
    } else {
        // A plain line, so the ids stay on the screen when the wait is interrupted.
        eprintln!("Submitted job {job} for session {}", dir.id);
    }
    if args.no_wait {
        if !args.json {
            println!("{}", dir.id);
            eprintln!("Check it with: hpc-rstudio status {}", dir.id);
        }
        return Ok(());
    }
    if !args.json {
        eprintln!("Waiting for the job to start; Ctrl-C stops waiting, the job keeps running.");
    }
    let connection = wait_ready(&dir, &job, &progress)?;
    progress.finish();
    print_connection(&prepared.record, &job, &connection, args.json);
    Ok(())
}

fn print_connection(record: &SessionRecord, job: &str, connection: &Connection, json: bool) {
    let login = record.login_host.clone().unwrap_or_else(paths::hostname);
    let tunnel = tunnel_command(connection, &record.user, &login);
    if json {
        let value = serde_json::json!({
            "event": "ready", "session": record.id, "job": job, "node": connection.node,
            "port": connection.port, "socket": connection.socket, "user": connection.user,
            "password": connection.password, "tunnel": tunnel, "url": "http://localhost:8787/",
        });
        println!("{value}");
        return;
    }
    println!(
        "RStudio Server is ready: session {}, job {job} on {}.",
        record.id, connection.node
    );
    println!();
    println!("On your computer, open the tunnel:");
    println!("    {tunnel}");
    println!("then browse to http://localhost:8787/ and sign in with");
    println!("    User name: {}", connection.user);
    println!("    Password:  {}", connection.password);
    println!();
    println!("Stop it with: hpc-rstudio stop {}", record.id);
}

/// Shows progress: a spinner on a terminal, plain lines otherwise, JSON lines with --json.
pub struct Progress {
    json: bool,
    spinner: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub fn new(json: bool) -> Progress {
        // A terminal without TERM (or a dumb one) does not draw a spinner at all, so those get
        // plain lines.
        let term_ok = std::env::var("TERM").is_ok_and(|t| !t.is_empty() && t != "dumb");
        let spinner = (!json && term_ok && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress { json, spinner }
    }

    pub fn event(&self, text: &str, value: serde_json::Value) {
        if self.json {
            println!("{value}");
        } else if let Some(spinner) = &self.spinner {
            spinner.set_message(text.to_owned());
        } else {
            eprintln!("{text}");
        }
    }

    pub fn finish(&self) {
        if let Some(spinner) = &self.spinner {
            spinner.finish_and_clear();
        }
    }
}

/// How often the scheduler is asked at first, and at most, while waiting. The job reports its
/// own readiness through the session's files, which are read far more often at no cost to the
/// scheduler.
const POLL_FIRST: Duration = Duration::from_secs(10);
const POLL_MAX: Duration = Duration::from_secs(60);
const FILE_POLL: Duration = Duration::from_millis(500);

/// The fix for a pending reason that means the job will never start as submitted, or `None`.
fn hopeless_reason(state: &slurm::JobState) -> Option<&'static str> {
    match state.reason.as_deref()? {
        "PartitionConfig" | "PartitionNodeLimit" => Some(
            "ask for fewer CPUs, less memory or fewer GPUs than the partition's nodes have (`sinfo -o '%P %c %m %G'`)",
        ),
        "PartitionTimeLimit" => {
            Some("ask for a shorter --time than the partition's limit (`sinfo -o '%P %l'`)")
        }
        "AccountNotAllowed" | "InvalidAccount" => {
            Some("use an account you belong to (`sacctmgr show assoc user=$USER`)")
        }
        "InvalidQOS" | "QOSNotAllowed" => Some("use a QOS your account may use"),
        "BadConstraints" => Some("remove or fix the constraint in --sbatch-arg"),
        _ => None,
    }
}

/// Returns the wait before the next scheduler query: half as long again, at most `POLL_MAX`.
fn next_interval(interval: Duration) -> Duration {
    interval.mul_f32(1.5).min(POLL_MAX)
}

/// Waits until the job's supervisor reports the server ready, or the job ends.
pub fn wait_ready(dir: &SessionDir, job: &str, progress: &Progress) -> Result<Connection> {
    let started = Instant::now();
    let mut interval = POLL_FIRST;
    let mut next_poll = Instant::now();
    let mut last_shown = String::new();
    let mut unknown = 0;
    loop {
        if let Some(server) = dir.read_server()? {
            match server.state {
                ServerState::Ready => {
                    if let Some(connection) = dir.read_connection()? {
                        return Ok(connection);
                    }
                }
                ServerState::Failed | ServerState::Stopped => {
                    progress.finish();
                    let state = final_job_state(job);
                    return Err(server_failure(dir, job, &server, state.as_ref()));
                }
                ServerState::Starting | ServerState::Stopping => {}
            }
            let text = format!(
                "Job {job} running on {}: starting RStudio Server",
                server.node
            );
            if text != last_shown {
                progress.event(
                    &text,
                    serde_json::json!({"event": "starting", "job": job, "node": server.node}),
                );
                last_shown = text;
            }
        }

        if Instant::now() >= next_poll {
            match slurm::job_state(job) {
                Ok(Some(state)) if state.is_finished() => {
                    // The supervisor may have written its failure just before the job ended.
                    std::thread::sleep(Duration::from_millis(500));
                    progress.finish();
                    return Err(match dir.read_server()? {
                        Some(server) if server.state != ServerState::Ready => {
                            server_failure(dir, job, &server, Some(&state))
                        }
                        _ => job_failure(dir, job, &state),
                    });
                }
                Ok(Some(state)) if state.is_pending() && hopeless_reason(&state).is_some() => {
                    progress.finish();
                    let reason = state.reason.clone().unwrap_or_default();
                    let _ = slurm::cancel(job);
                    return Err(Error::usage(format!(
                        "job {job} can never start ({reason}) and was cancelled"
                    ))
                    .with_hint(hopeless_reason(&state).unwrap_or_default().to_owned()));
                }
                Ok(Some(state)) => {
                    let text = if state.is_pending() {
                        format!(
                            "Job {job} {} ({}), waited {} s",
                            state.state,
                            state.reason.as_deref().unwrap_or("no reason given"),
                            started.elapsed().as_secs()
                        )
                    } else {
                        format!(
                            "Job {job} {} on {}",
                            state.state,
                            state.node.as_deref().unwrap_or("?")
                        )
                    };
                    if text != last_shown {
                        progress.event(&text, serde_json::json!({
                            "event": if state.is_pending() { "pending" } else { "running" },
                            "job": job, "state": state.state, "reason": state.reason, "node": state.node,
                            "waited_seconds": started.elapsed().as_secs(),
                        }));
                        last_shown = text;
                    }
                }
                Ok(None) => {
                    unknown += 1;
                    if unknown >= 3 {
                        progress.finish();
                        return Err(Error::failed(format!(
                            "the scheduler has no record of job {job}"
                        ))
                        .with_details(private_fs::tail_lines(&dir.file("job.out"), 10))
                        .with_hint(format!(
                            "the job may have been purged; see `hpc-rstudio logs {}`",
                            dir.id
                        )));
                    }
                }
                Err(err) => tracing::warn!("cannot read the job's state, will retry: {err}"),
            }
            next_poll = Instant::now() + interval;
            interval = next_interval(interval);
        }
        std::thread::sleep(FILE_POLL);
    }
}

/// The job's state once it has ended, waiting a little for the supervisor's exit to reach the
/// scheduler; `None` when it has not ended within the wait.
fn final_job_state(job: &str) -> Option<slurm::JobState> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        match slurm::job_state(job) {
            Ok(Some(state)) if state.is_finished() => return Some(state),
            Ok(_) => {}
            Err(err) => tracing::debug!("cannot read the job's final state: {err}"),
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    None
}

/// Builds the error for a session whose supervisor reported failure.
fn server_failure(
    dir: &SessionDir,
    job: &str,
    server: &crate::session::ServerRecord,
    state: Option<&slurm::JobState>,
) -> Error {
    let mut message = format!(
        "RStudio Server did not start: {}",
        server
            .message
            .as_deref()
            .unwrap_or("the supervisor stopped")
    );
    if let Some(state) = state {
        message.push_str(&format!(
            " (job {job} {}, exit code {})",
            state.state,
            state.exit_code.as_deref().unwrap_or("?")
        ));
    }
    let hint = server
        .hint
        .clone()
        .unwrap_or_else(|| format!("see `hpc-rstudio logs {}`", dir.id));
    Error::failed(message)
        .with_details(server.log_lines.clone())
        .with_hint(hint)
}

/// Builds the error for a job that ended without its supervisor reporting anything. Usually the
/// binary could not be started on the node.
fn job_failure(dir: &SessionDir, job: &str, state: &slurm::JobState) -> Error {
    let lines = private_fs::tail_lines(&dir.file("job.out"), 10);
    let mut known = vec![state.state.clone()];
    known.extend(lines.iter().cloned());
    let oom = crate::diagnose::hint_for(&known);
    let hint = if let Some(oom) = oom {
        oom
    } else if dir.read_server().ok().flatten().is_none() {
        format!(
            "hpc-rstudio never started on the node. It runs itself there by the path {}, which must be visible on compute nodes (a shared file system); install it there, for example in ~/.local/bin on a shared home",
            binary_path()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        )
    } else {
        format!("see `hpc-rstudio logs {}`", dir.id)
    };
    Error::failed(format!(
        "job {job} ended ({}, exit code {}) before RStudio Server was ready",
        state.state,
        state.exit_code.as_deref().unwrap_or("?")
    ))
    .with_details(lines)
    .with_hint(hint)
}

/// `hpc-rstudio job ID`: the supervisor inside the batch job.
pub fn job(args: &JobArgs) -> Result<()> {
    let user = User::current()?;
    let dir = SessionDir::open(&paths::state_dir(&user), &args.id)?;
    let mut record = dir.read_session()?;
    if !record.runtime.program.exists() {
        record.runtime = runtime::Runtime::detect(Some(match record.runtime.flavor {
            runtime::Flavor::Apptainer => "apptainer",
            runtime::Flavor::SingularityCe => "singularity",
        }))?;
    }
    if !record.image.path.exists() {
        let err = Error::failed(format!(
            "image {} is not visible on this node",
            record.image.path.display()
        ))
        .with_hint(
            "keep images on a file system that compute nodes share, such as home or project space",
        );
        fail_before_start(&dir, &err);
        return Err(err);
    }
    let node = paths::short_hostname();
    println!(
        "hpc-rstudio {}: session {} on {node}",
        env!("CARGO_PKG_VERSION"),
        dir.id
    );
    println!(
        "runtime: {} {}",
        record.runtime.program.display(),
        record.runtime.version
    );
    println!(
        "image: {} ({})",
        record.image.path.display(),
        record.probe.describe()
    );
    supervisor::supervise(&user, &dir, &record, &|report| match report {
        Report::Starting { node, port } => {
            println!(
                "starting RStudio Server on {node} port {}",
                port.map_or("(socket)".to_owned(), |p| p.to_string())
            )
        }
        // The password stays in the session's private files, never in the job's output.
        Report::Ready(connection) => println!(
            "ready on {}; `hpc-rstudio status {}` shows how to connect",
            connection.url, dir.id
        ),
        Report::Stopping(reason) => println!("stopping: {reason}"),
        Report::Stopped {
            reason,
            suspended,
            saved,
        } => {
            println!("stopped ({reason}); {saved} of {suspended} R session(s) saved their state")
        }
        Report::Note(text) => println!("note: {text}"),
    })
}

fn fail_before_start(dir: &SessionDir, err: &Error) {
    let record = crate::session::ServerRecord {
        state: ServerState::Failed,
        updated: crate::session::now(),
        node: paths::short_hostname(),
        supervisor_pid: std::process::id(),
        port: None,
        socket: None,
        message: Some(err.message.clone()),
        log_lines: err.details.clone(),
        hint: err.hint.clone(),
        sessions_suspended: 0,
        sessions_saved: 0,
        sessions_lost: 0,
        problems: Vec::new(),
        limits: Vec::new(),
    };
    let _ = dir.write_server(&record);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_polling_backs_off() {
        let mut interval = POLL_FIRST;
        let mut waits = vec![interval];
        for _ in 0..8 {
            interval = next_interval(interval);
            waits.push(interval);
        }
        assert!(
            waits.iter().all(|w| *w >= Duration::from_secs(10)),
            "{waits:?}"
        );
        assert!(waits.windows(2).all(|pair| pair[1] >= pair[0]), "{waits:?}");
        assert_eq!(*waits.last().unwrap(), POLL_MAX);
    }

    #[test]
    fn tunnel_commands() {
        let mut connection = Connection {
            url: "http://node7:8800/".into(),
            node: "node7".into(),
            port: Some(8800),
            socket: None,
            user: "alice".into(),
            password: "secret".into(),
        };
        assert_eq!(
            tunnel_command(&connection, "alice", "login1"),
            "ssh -N -L 8787:node7:8800 alice@login1"
        );
        connection.port = None;
        connection.socket = Some("/tmp/hpc-rstudio-1000/s/run/hpc-rstudio/rserver.sock".into());
        let command = tunnel_command(&connection, "alice", "login1");
        assert!(command.contains("-J alice@login1 alice@node7"), "{command}");
        assert!(!command.contains("secret"));
    }
}
