//! The commands that look at or end existing sessions: `list`, `status`, `stop`, `logs`, and
//! `pull` for images.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cli::{ListArgs, PullArgs, SessionIdArg, StatusArgs};
use crate::error::{Error, Result};
use crate::paths::{self, User};
use crate::session::{self, Mode, ServerState, SessionDir, SessionRecord};
use crate::{image, runtime, slurm};

/// A session's state in one word, from the supervisor's record and, for a batch session that
/// has not finished, the scheduler.
fn state_of(
    dir: &SessionDir,
    record: &SessionRecord,
    ask_scheduler: bool,
) -> (String, Option<slurm::JobState>) {
    let server = dir.read_server().ok().flatten();
    let job_query = match (&record.job_id, ask_scheduler, &server) {
        (Some(job), true, server) if server.as_ref().is_none_or(|s| !s.state.is_final()) => {
            Some(slurm::job_state(job))
        }
        _ => None,
    };
    // Neither squeue nor sacct knows the job; a failed query says nothing either way.
    let job_forgotten = matches!(job_query, Some(Ok(None)));
    let job_state = job_query.and_then(|query| query.ok().flatten());
    let word = match (&server, &job_state) {
        (_, Some(job)) if job.is_pending() => "pending".to_owned(),
        // The job ended while the record still says the server runs: the node went away or
        // the job was killed without warning.
        (Some(server), Some(job)) if job.is_finished() && !server.state.is_final() => {
            job.state.to_lowercase()
        }
        (None, Some(job)) if job.is_finished() => job.state.to_lowercase(),
        (Some(server), None) if job_forgotten && !server.state.is_final() => "lost".to_owned(),
        // A local session whose supervisor is gone without recording its end was killed.
        (Some(server), None)
            if record.mode == Mode::Local
                && !server.state.is_final()
                && server.node == paths::short_hostname()
                && !crate::procs::alive(server.supervisor_pid as i32) =>
        {
            "killed".to_owned()
        }
        (Some(server), _) => server.state.as_str().to_owned(),
        (None, Some(job)) => job.state.to_lowercase(),
        (None, None) if record.mode == Mode::Batch => "submitted".to_owned(),
        (None, None) => "unknown".to_owned(),
    };
    (word, job_state)
}

/// Whether a session may still be running, from its state word: anything but a final state.
pub fn is_active(dir: &SessionDir) -> bool {
    let Ok(record) = dir.read_session() else {
        return false;
    };
    let (word, _) = state_of(dir, &record, true);
    matches!(
        word.as_str(),
        "pending" | "submitted" | "starting" | "ready" | "stopping" | "running"
    )
}

/// `hpc-rstudio list`.
pub fn list(args: &ListArgs) -> Result<()> {
    let user = User::current()?;
    let state_dir = paths::state_dir(&user);
    let ids = session::list_ids(&state_dir)?;
    let mut rows = Vec::new();
    for id in ids {
        let dir = SessionDir {
            id: id.clone(),
            path: session::sessions_root(&state_dir).join(&id),
        };
        let record = match dir.read_session() {
            Ok(record) => record,
            Err(err) => {
                eprintln!("warning: skipping session {id}: {err}");
                continue;
            }
        };
        // One squeue call per unfinished batch session; finished ones are read from files.
        let (state, _) = state_of(&dir, &record, true);
        let node = dir
            .read_server()
            .ok()
            .flatten()
            .map(|s| s.node)
            .unwrap_or_else(|| "-".to_owned());
        rows.push((
            id,
            state,
            record.job_id.clone().unwrap_or_else(|| "-".to_owned()),
            node,
            record.image.path.display().to_string(),
        ));
    }
    if args.json {
        let value: Vec<_> = rows
            .iter()
            .map(|(id, state, job, node, image)| serde_json::json!({"id": id, "state": state, "job": job, "node": node, "image": image}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("JSON serializes")
        );
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!("No sessions. Start one with `hpc-rstudio submit` or `hpc-rstudio run`.");
        return Ok(());
    }
    println!(
        "{:<21} {:<10} {:<8} {:<12} IMAGE",
        "SESSION", "STATE", "JOB", "NODE"
    );
    for (id, state, job, node, image) in rows {
        println!("{id:<21} {state:<10} {job:<8} {node:<12} {image}");
    }
    Ok(())
}

/// `hpc-rstudio status ID`.
pub fn status(args: &StatusArgs) -> Result<()> {
    let user = User::current()?;
    let dir = SessionDir::open(&paths::state_dir(&user), &args.id)?;
    let record = dir.read_session()?;
    let server = dir.read_server()?;
    let (state, job_state) = state_of(&dir, &record, true);
    // A final server record does not say how the job ended (cancelled, timed out), so one
    // scheduler query fills that in for this session.
    let job_state = job_state.or_else(|| {
        let job = record.job_id.as_deref()?;
        slurm::job_state(job).ok().flatten()
    });
    let connection = if state == "ready" {
        dir.read_connection()?
    } else {
        None
    };
    let login = record.login_host.clone().unwrap_or_else(paths::hostname);

    if args.json {
        let value = serde_json::json!({
            "id": record.id, "state": state, "mode": record.mode, "job": record.job_id,
            "job_state": job_state.as_ref().map(|j| &j.state),
            "reason": job_state.as_ref().and_then(|j| j.reason.clone()),
            "image": record.image.path, "image_identity": record.image.identity(),
            "rstudio_version": record.probe.rstudio_version, "r_version": record.probe.r_version,
            "runtime": record.runtime.program, "runtime_version": record.runtime.version,
            "server": server, "connection": connection,
            "tunnel": connection.as_ref().map(|c| crate::launch::tunnel_command(c, &record.user, &login)),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("JSON serializes")
        );
        return Ok(());
    }
    println!("Session:  {}", record.id);
    println!("State:    {state}");
    // A job that ended while the supervisor's record says it runs was killed from outside;
    // the job's output (slurmstepd writes there) may say why.
    if server.as_ref().is_some_and(|s| !s.state.is_final())
        && job_state.as_ref().is_some_and(|j| j.is_finished())
    {
        let lines = crate::private_fs::tail_lines(&dir.file("job.out"), 10);
        if let Some(finding) = crate::diagnose::find(&lines) {
            println!("Problem:  {}", finding.line.trim());
            println!("Hint:     {}; {}", finding.known.cause, finding.known.fix);
        }
    }
    if let Some(job) = &record.job_id {
        let detail = job_state.as_ref().map(|j| match &j.reason {
            Some(reason) if j.is_pending() => format!(" ({}, {reason})", j.state),
            _ => format!(" ({})", j.state),
        });
        println!("Job:      {job}{}", detail.unwrap_or_default());
    }
    println!(
        "Image:    {} ({})",
        record.image.path.display(),
        record.probe.describe()
    );
    println!(
        "Runtime:  {} {}",
        record.runtime.program.display(),
        record.runtime.version
    );
    if let Some(server) = &server {
        println!("Node:     {}", server.node);
        if let Some(message) = &server.message {
            println!("Message:  {message}");
        }
        for line in &server.log_lines {
            println!("  | {line}");
        }
        if let Some(hint) = &server.hint {
            println!("Hint:     {hint}");
        }
        if server.state == ServerState::Stopped {
            println!(
                "Saved:    {} of {} R session(s) saved their state",
                server.sessions_saved, server.sessions_suspended
            );
        }
        if server.sessions_lost > 0 {
            println!(
                "Lost:     {} R session(s) ended before they could save (the job was cancelled with scancel?)",
                server.sessions_lost
            );
        }
        for limit in &server.limits {
            println!("Limit:    {limit}");
        }
        for problem in &server.problems {
            println!("Problem:  {}", problem.line);
            println!("          {}", problem.hint);
        }
    }
    if let Some(connection) = connection {
        println!("URL:      {}", connection.url);
        if record.mode == Mode::Batch {
            println!(
                "Tunnel:   {}",
                crate::launch::tunnel_command(&connection, &record.user, &login)
            );
            println!("Then:     http://localhost:8787/");
        }
        println!("User:     {}", connection.user);
        println!("Password: {}", connection.password);
    }
    Ok(())
}

/// How long `stop` waits for R sessions to save and the server to stop.
const STOP_WAIT: Duration = Duration::from_secs(90);

/// `hpc-rstudio stop ID`: R sessions save their state, then the server and job end.
pub fn stop(args: &SessionIdArg) -> Result<()> {
    let user = User::current()?;
    let dir = SessionDir::open(&paths::state_dir(&user), &args.id)?;
    let record = dir.read_session()?;
    if let Some(server) = dir.read_server()? {
        if server.state.is_final() {
            eprintln!(
                "Session {} has already {}.",
                record.id,
                server.state.as_str()
            );
            return Ok(());
        }
    }
    match (&record.mode, &record.job_id) {
        (Mode::Batch, Some(job)) => stop_job(&dir, job),
        _ => stop_local(&dir),
    }
}

fn stop_job(dir: &SessionDir, job: &str) -> Result<()> {
    let state = slurm::job_state(job)?;
    if state.as_ref().is_none_or(|s| s.is_finished()) {
        eprintln!("Job {job} has already ended.");
        return Ok(());
    }
    if state.as_ref().is_some_and(|s| s.is_pending()) {
        slurm::cancel(job)?;
        eprintln!("Cancelled pending job {job}.");
        return Ok(());
    }
    // USR2 to the batch script reaches the supervisor, which lets R sessions save first.
    crate::private_fs::write_private(&dir.file(session::STOP_MARKER), session::now().as_bytes())?;
    slurm::signal_batch(job, "USR2")?;
    eprintln!("Asked session {} to save and stop...", dir.id);
    let deadline = Instant::now() + STOP_WAIT;
    while Instant::now() < deadline {
        if dir.read_server()?.is_some_and(|s| s.state.is_final()) {
            eprintln!("Stopped session {} (job {job}).", dir.id);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    tracing::warn!(
        "the session did not stop in {} s; cancelling job {job}",
        STOP_WAIT.as_secs()
    );
    slurm::cancel(job)?;
    eprintln!("Cancelled job {job}.");
    Ok(())
}

fn stop_local(dir: &SessionDir) -> Result<()> {
    let server = dir
        .read_server()?
        .ok_or_else(|| Error::failed(format!("session {} has not started", dir.id)))?;
    if server.node != paths::short_hostname() {
        return Err(Error::usage(format!(
            "session {} runs on {}, not on this host",
            dir.id, server.node
        ))
        .with_hint(format!(
            "run `hpc-rstudio stop {}` on {}",
            dir.id, server.node
        )));
    }
    let pid = Pid::from_raw(server.supervisor_pid as i32);
    crate::private_fs::write_private(&dir.file(session::STOP_MARKER), session::now().as_bytes())?;
    kill(pid, Signal::SIGTERM).map_err(|err| {
        Error::failed(format!(
            "cannot signal the session's supervisor (pid {pid}): {err}"
        ))
        .with_hint(
            "the session may have ended without recording it; check with `hpc-rstudio status`",
        )
    })?;
    let deadline = Instant::now() + STOP_WAIT;
    while Instant::now() < deadline {
        if dir.read_server()?.is_some_and(|s| s.state.is_final()) {
            eprintln!("Stopped session {}.", dir.id);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(Error::failed(format!(
        "session {} did not stop within {} s",
        dir.id,
        STOP_WAIT.as_secs()
    )))
}

/// `hpc-rstudio clean`: removes the records of ended sessions, keeping running ones.
pub fn clean(args: &crate::cli::CleanArgs) -> Result<()> {
    let user = User::current()?;
    let state_dir = paths::state_dir(&user);
    let mut removed = 0;
    for id in session::list_ids(&state_dir)? {
        let dir = SessionDir {
            id: id.clone(),
            path: session::sessions_root(&state_dir).join(&id),
        };
        // A damaged record names no job or node to check, so it is kept for the user to look at.
        if dir.read_session().is_err() || is_active(&dir) {
            continue;
        }
        if args.dry_run {
            println!("would remove {id}");
        } else {
            std::fs::remove_dir_all(&dir.path)
                .map_err(|err| Error::io("remove", &dir.path, err))?;
            println!("removed {id}");
        }
        removed += 1;
    }
    if removed == 0 {
        eprintln!("No ended sessions to remove.");
    }
    Ok(())
}

/// `hpc-rstudio logs ID`.
pub fn logs(args: &SessionIdArg) -> Result<()> {
    let user = User::current()?;
    let dir = SessionDir::open(&paths::state_dir(&user), &args.id)?;
    let mut printed = false;
    for (name, title) in [
        ("job.out", "batch job output"),
        ("rserver.log", "rserver log"),
    ] {
        let path = dir.file(name);
        if let Ok(text) = std::fs::read_to_string(&path) {
            println!("==> {title}: {} <==", path.display());
            print!("{text}");
            if !text.ends_with('\n') && !text.is_empty() {
                println!();
            }
            printed = true;
        }
    }
    if !printed {
        eprintln!("Session {} has no logs yet.", dir.id);
    }
    Ok(())
}

/// `hpc-rstudio pull IMAGE`.
pub fn pull(args: &PullArgs) -> Result<()> {
    let user = User::current()?;
    let files = crate::settings::Files::load(&user)?;
    let requested = std::env::var("HPC_RSTUDIO_RUNTIME")
        .ok()
        .or(files.user.runtime.clone())
        .or(files.site.runtime.clone());
    let runtime = runtime::Runtime::detect(requested.as_deref())?;
    let cache = files.image_cache(&user);
    match image::pull(&args.image, &cache, &runtime, args.force)? {
        image::Pulled::Fetched(path) => {
            eprintln!("Pulled {} into the image cache.", args.image);
            println!("{}", path.display());
        }
        image::Pulled::AlreadyPresent(path) => {
            eprintln!(
                "{} is already in the image cache; use --force to fetch it again.",
                args.image
            );
            println!("{}", path.display());
        }
    }
    Ok(())
}
