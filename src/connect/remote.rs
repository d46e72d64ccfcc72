//! hpc-rstudio on the remote host: finding it and checking its version (or copying this program
//! there), and running its commands through the shared connection: `submit --json` with its
//! progress shown here, `status --json`, `list` and `stop`.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::cli::{LaunchArgs, ResourceArgs};
use crate::error::{Error, Kind, Result};
use crate::launch::Progress;
use crate::process;
use crate::shell::quote;

use super::Stop;
use super::control::{self, Control};

/// Limits for remote commands that return at once, for `stop` (which waits up to 90 s for R to
/// save), and for copying this program over.
const QUICK: Duration = Duration::from_secs(60);
const STOP: Duration = Duration::from_secs(180);
const INSTALL: Duration = Duration::from_secs(300);
/// `submit --json` reports the queue at least once a minute and the server start within its
/// start timeout; this much silence means the remote side hangs.
const SILENCE_LIMIT: Duration = Duration::from_secs(15 * 60);

/// hpc-rstudio on the remote host, found and checked.
pub struct Remote<'a> {
    pub control: &'a Control,
    /// Its path on the host.
    pub program: String,
    /// The host's name as it reports it, to tell whether a compute node is the host itself.
    pub hostname: String,
}

/// Connection details of a ready server, from `submit --json` or `status --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Ready {
    pub session: String,
    pub job: Option<String>,
    pub node: String,
    pub port: Option<u16>,
    pub socket: Option<PathBuf>,
    pub user: String,
    pub password: String,
}

/// Outcome of waiting for a session.
pub enum Waited {
    Ready(Ready),
    /// Ctrl-C: the session, if one was submitted, goes on without us.
    Interrupted {
        session: Option<String>,
    },
}

/// Values the probe printed on the host.
#[derive(Debug, Default, PartialEq)]
struct Probe {
    os: String,
    arch: String,
    host: String,
    program: String,
    status: Option<i32>,
    version: String,
}

/// Builds the probe: one POSIX shell line, run under `sh -c` whatever the login shell is.
fn probe_script(requested: Option<&str>) -> String {
    let program = match requested {
        // `~` in a configuration file means the remote home, which only the far side can expand.
        Some(path) if path.starts_with("~/") => format!("\"$HOME\"/{}", quote(&path[2..])),
        Some(path) => quote(path),
        None => "''".to_owned(),
    };
    let search = if requested.is_some() {
        String::new()
    } else {
        "if [ -z \"$p\" ]; then p=$(command -v hpc-rstudio 2>/dev/null); fi; \
         if [ -z \"$p\" ] && [ -x \"$HOME/.local/bin/hpc-rstudio\" ]; then p=\"$HOME/.local/bin/hpc-rstudio\"; fi; "
            .to_owned()
    };
    format!(
        "p={program}; {search}echo \"os=$(uname -s)\"; echo \"arch=$(uname -m)\"; \
         echo \"host=$(hostname)\"; echo \"program=$p\"; \
         if [ -n \"$p\" ]; then v=$(\"$p\" --version 2>&1); echo \"status=$?\"; echo \"version=$v\"; fi"
    )
}

fn parse_probe(stdout: &str) -> Probe {
    let mut probe = Probe::default();
    let mut lines = stdout.lines();
    while let Some(line) = lines.next() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "os" => probe.os = value.to_owned(),
            "arch" => probe.arch = value.to_owned(),
            "host" => probe.host = value.to_owned(),
            "program" => probe.program = value.to_owned(),
            "status" => probe.status = value.parse().ok(),
            // The last item: everything after it is the program's own output.
            "version" => {
                let mut text = vec![value.to_owned()];
                text.extend(lines.by_ref().map(str::to_owned));
                probe.version = text.join("\n").trim().to_owned();
            }
            _ => {}
        }
    }
    probe
}

/// `X.Y` of a version such as `hpc-rstudio 0.1.0`.
fn major_minor(text: &str) -> Option<(u64, u64)> {
    let version = text.split_whitespace().last()?;
    let mut parts = version.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Both sides must have the same major and minor version: the JSON they exchange may change
/// between minor versions, and patch releases keep it.
fn compatible(local: &str, remote: &str) -> bool {
    major_minor(local).is_some() && major_minor(local) == major_minor(remote)
}

/// uname's machine names for the same architecture differ between systems.
fn same_arch(remote: &str) -> bool {
    let remote = match remote {
        "arm64" => "aarch64",
        "amd64" => "x86_64",
        other => other,
    };
    remote == std::env::consts::ARCH
}

fn local_version() -> String {
    format!("hpc-rstudio {}", env!("CARGO_PKG_VERSION"))
}

/// Runs the probe, and returns the checked remote program. With `install`, a missing program
/// is copied from this one where the host can run it.
pub fn check<'a>(
    control: &'a Control,
    requested: Option<&str>,
    install: bool,
) -> Result<Remote<'a>> {
    let host = &control.host;
    let mut probe = run_probe(control, requested)?;
    if probe.program.is_empty() {
        let runs_here = probe.os == "Linux" && cfg!(target_os = "linux") && same_arch(&probe.arch);
        if install && runs_here {
            copy_self(control)?;
            probe = run_probe(control, None)?;
        } else {
            let how = if runs_here {
                "rerun with --install to copy this program to ~/.local/bin on the host".to_owned()
            } else {
                format!(
                    "build hpc-rstudio for {} {} (see the README) and put it in ~/.local/bin on the host",
                    probe.os, probe.arch
                )
            };
            return Err(Error::failed(format!(
                "hpc-rstudio is not installed on {host}: it is neither on the PATH of a non-interactive shell there nor in ~/.local/bin"
            ))
            .with_hint(format!(
                "{how}; if it is installed elsewhere there, pass its path with --remote-command PATH (or set remote_command in the config file)"
            )));
        }
    }
    if probe.status != Some(0) {
        let mut err = Error::failed(format!(
            "hpc-rstudio on {host} ({}) does not run (exit status {})",
            probe.program,
            probe.status.map_or("?".to_owned(), |s| s.to_string())
        ))
        .with_details(probe.version.lines().map(str::to_owned).collect());
        err = if probe.status == Some(127) {
            err.with_hint("the path does not exist there; fix --remote-command or remote_command")
        } else {
            err.with_hint(format!(
                "run `ssh {host} {} --version` to see why",
                probe.program
            ))
        };
        return Err(err);
    }
    let local = local_version();
    if !compatible(&local, &probe.version) {
        return Err(Error::failed(format!(
            "hpc-rstudio on {host} is {}, this one is {local}; connect needs the same major and minor version on both sides",
            probe.version.lines().next().unwrap_or_default()
        ))
        .with_hint(format!(
            "install {local} on {host} (the program at {}), or use the matching version here",
            probe.program
        )));
    }
    tracing::debug!(program = %probe.program, version = %probe.version, host = %probe.host, "remote hpc-rstudio");
    Ok(Remote {
        control,
        program: probe.program,
        hostname: probe.host,
    })
}

fn run_probe(control: &Control, requested: Option<&str>) -> Result<Probe> {
    let script = probe_script(requested);
    let mut cmd = control.remote(&format!("sh -c {}", quote(&script)));
    let output = process::run(&mut cmd, None, QUICK)?;
    if !output.success() {
        return Err(command_failure(&control.host, "sh", &output));
    }
    Ok(parse_probe(&output.stdout))
}

/// Copies this program to `~/.local/bin/hpc-rstudio` on the host, through the connection.
fn copy_self(control: &Control) -> Result<()> {
    let exe = std::env::current_exe()
        .map_err(|err| Error::failed(format!("cannot find this program's path: {err}")))?;
    let bytes = std::fs::read(&exe).map_err(|err| Error::io("read", &exe, err))?;
    eprintln!(
        "Copying {} ({} MB) to {}:~/.local/bin/hpc-rstudio...",
        exe.display(),
        bytes.len() / 1_000_000,
        control.host
    );
    // Written under a temporary name and renamed, so that a broken copy is never run.
    let script = "umask 077; d=\"$HOME/.local/bin\"; mkdir -p \"$d\" && \
                  cat > \"$d/.hpc-rstudio.part\" && chmod 0755 \"$d/.hpc-rstudio.part\" && \
                  mv -f \"$d/.hpc-rstudio.part\" \"$d/hpc-rstudio\"";
    let mut cmd = control.remote(&format!("sh -c {}", quote(script)));
    let output = process::run(&mut cmd, Some(&bytes), INSTALL)?;
    if !output.success() {
        return Err(
            command_failure(&control.host, "copying hpc-rstudio", &output)
                .with_hint("check the free space and permissions of ~/.local/bin on the host"),
        );
    }
    eprintln!(
        "Installed {} as ~/.local/bin/hpc-rstudio on {}. Batch jobs run it by that path, so the home directory must be visible on compute nodes (it usually is).",
        local_version(),
        control.host
    );
    Ok(())
}

/// Builds the error for a failed remote command from hpc-rstudio's own `error:`, `hint:` and
/// `  | ` lines, else from ssh's message.
fn command_failure(host: &str, what: &str, output: &process::Output) -> Error {
    let mut message = None;
    let mut hint = None;
    let mut details = Vec::new();
    for line in output.stderr.lines() {
        if let Some(text) = line.strip_prefix("error: ") {
            message.get_or_insert_with(|| text.to_owned());
        } else if let Some(text) = line.strip_prefix("hint: ") {
            hint.get_or_insert_with(|| text.to_owned());
        } else if let Some(text) = line.strip_prefix("  | ") {
            details.push(text.to_owned());
        }
    }
    let lines: Vec<String> = output
        .stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect();
    match message {
        Some(message) => {
            let mut err = Error::failed(format!("on {host}: {message}")).with_details(details);
            if output.status.code() == Some(2) {
                err.kind = Kind::Usage;
            }
            match hint {
                Some(hint) => err.with_hint(hint),
                None => err,
            }
        }
        // ssh exits with 255 for its own failures.
        None if output.status.code() == Some(255) => control::ssh_failure(host, &lines),
        None => Error::failed(format!("{what} on {host} failed ({})", output.status))
            .with_details(lines.into_iter().take(20).collect()),
    }
}

impl Remote<'_> {
    /// Builds the remote command line for hpc-rstudio with `args`, every word quoted.
    fn command_line(&self, args: &[&str]) -> String {
        let mut words = vec![quote(&self.program)];
        words.extend(args.iter().map(|arg| quote(arg)));
        words.join(" ")
    }

    /// Runs hpc-rstudio with `args` on the host and returns its output, or its error.
    fn run(&self, args: &[&str], limit: Duration) -> Result<process::Output> {
        let mut cmd = self.control.remote(&self.command_line(args));
        let output = process::run(&mut cmd, None, limit)?;
        if !output.success() {
            return Err(command_failure(
                &self.control.host,
                &format!("`hpc-rstudio {}`", args.join(" ")),
                &output,
            ));
        }
        Ok(output)
    }

    /// `hpc-rstudio list` on the host, printed here as it is.
    pub fn list(&self) -> Result<()> {
        let output = self.run(&["list"], QUICK)?;
        print!("{}", output.stdout);
        eprint!("{}", output.stderr);
        Ok(())
    }

    /// `hpc-rstudio stop ID` on the host: R sessions save their state, then the job ends.
    pub fn stop(&self, id: &str) -> Result<()> {
        eprintln!("Stopping session {id} on {}...", self.control.host);
        let output = self.run(&["stop", id], STOP)?;
        eprint!("{}", output.stderr);
        Ok(())
    }

    /// `hpc-rstudio status --json ID` on the host.
    pub fn status(&self, id: &str) -> Result<serde_json::Value> {
        let output = self.run(&["status", "--json", id], QUICK)?;
        serde_json::from_str(&output.stdout).map_err(|err| {
            Error::failed(format!(
                "cannot read the status of session {id} from {}: {err}",
                self.control.host
            ))
        })
    }

    /// Finds the most recent session on the host that has not ended.
    pub fn latest_running(&self) -> Result<String> {
        let output = self.run(&["list", "--json"], QUICK)?;
        let sessions: Vec<serde_json::Value> =
            serde_json::from_str(&output.stdout).map_err(|err| {
                Error::failed(format!(
                    "cannot read the session list from {}: {err}",
                    self.control.host
                ))
            })?;
        latest_alive(&sessions).ok_or_else(|| {
            Error::usage(format!("no running session on {}", self.control.host)).with_hint(
                format!(
                    "start one with `hpc-rstudio connect {0}`; `hpc-rstudio connect {0} --list` shows every session",
                    self.control.host
                ),
            )
        })
    }

    /// Waits until session `id` is ready and returns how to reach it. A session that has ended
    /// is an error that gives the reason.
    pub fn wait_attach(&self, id: &str, stop: &Stop) -> Result<Waited> {
        let progress = Progress::new(false);
        let mut last = String::new();
        let deadline = Instant::now() + Duration::from_secs(3600);
        loop {
            let status = self.status(id)?;
            let state = status["state"].as_str().unwrap_or("unknown").to_owned();
            if state == "ready" {
                progress.finish();
                let ready = ready_from_status(&status).ok_or_else(|| {
                    Error::failed(format!(
                        "session {id} on {} is ready but has no connection details",
                        self.control.host
                    ))
                })?;
                return Ok(Waited::Ready(ready));
            }
            if !is_alive(&state) {
                progress.finish();
                return Err(ended_error(&self.control.host, &status));
            }
            let text = match status["reason"].as_str() {
                Some(reason) => format!("Session {id} is {state} ({reason})"),
                None => format!("Session {id} is {state}"),
            };
            if text != last {
                progress.event(&text, serde_json::Value::Null);
                last = text;
            }
            if Instant::now() >= deadline {
                progress.finish();
                return Err(
                    Error::failed(format!("session {id} was not ready within an hour")).with_hint(
                        format!(
                            "attach again later with `hpc-rstudio connect {} --attach {id}`",
                            self.control.host
                        ),
                    ),
                );
            }
            if stop.sleep(Duration::from_secs(5)) {
                progress.finish();
                return Ok(Waited::Interrupted {
                    session: Some(id.to_owned()),
                });
            }
        }
    }

    /// Runs `submit --json` with `args` on the host, shows its progress, and returns the ready
    /// server. A failed start is the remote error: the job's state, exit code and log lines.
    pub fn submit(&self, args: &[String], stop: &Stop) -> Result<Waited> {
        let mut words = vec!["submit", "--json"];
        words.extend(args.iter().map(String::as_str));
        let mut cmd = self.control.remote(&self.command_line(&words));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tracing::debug!(command = %process::display_argv(&cmd), "running");
        let mut child = cmd
            .spawn()
            .map_err(|err| Error::failed(format!("cannot start ssh: {err}")))?;
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stderr_thread = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            text
        });

        let host = &self.control.host;
        let progress = Progress::new(false);
        let mut session = None;
        let mut heard = Instant::now();
        let result = loop {
            if stop.is_set() {
                break Ok(Waited::Interrupted {
                    session: session.clone(),
                });
            }
            match lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    heard = Instant::now();
                    let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                        tracing::debug!(%line, "not a progress line");
                        continue;
                    };
                    if event["event"] == "ready" {
                        match serde_json::from_value::<Ready>(event) {
                            Ok(ready) => break Ok(Waited::Ready(ready)),
                            Err(err) => {
                                break Err(Error::failed(format!(
                                    "cannot read the ready message from {host}: {err}"
                                )));
                            }
                        }
                    }
                    if event["event"] == "submitted" {
                        session = event["session"].as_str().map(str::to_owned);
                    }
                    if let Some(text) = describe_event(&event, host) {
                        progress.event(&text, serde_json::Value::Null);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if heard.elapsed() >= SILENCE_LIMIT {
                        break Err(Error::failed(format!(
                            "`hpc-rstudio submit` on {host} printed nothing for {} minutes",
                            SILENCE_LIMIT.as_secs() / 60
                        ))
                        .with_hint(format!(
                            "check the session with `hpc-rstudio connect {host} --list`"
                        )));
                    }
                }
                // The program ended without a ready message: its error is on stderr.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = wait_limited(&mut child, Duration::from_secs(10));
                    let stderr = stderr_thread.join().unwrap_or_default();
                    let output = process::Output {
                        status,
                        stdout: String::new(),
                        stderr,
                    };
                    progress.finish();
                    // Its error names the job's final state, exit code and log lines.
                    return Err(command_failure(host, "`hpc-rstudio submit`", &output));
                }
            }
        };
        progress.finish();
        // Ready, interrupted, or given up: the remote waiter is no longer needed.
        let _ = child.kill();
        let _ = child.wait();
        result
    }
}

/// Waits for a child that should be ending, killing it after `limit`.
fn wait_limited(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    match wait_timeout::ChildExt::wait_timeout(child, limit) {
        Ok(Some(status)) => status,
        _ => {
            let _ = child.kill();
            child.wait().expect("a killed child can be waited for")
        }
    }
}

/// Describes a progress event of `submit --json` in one line.
fn describe_event(event: &serde_json::Value, host: &str) -> Option<String> {
    let text = |key: &str| event[key].as_str().unwrap_or("?").to_owned();
    Some(match event["event"].as_str()? {
        "submitted" => format!(
            "Submitted job {} on {host} for session {}",
            text("job"),
            text("session")
        ),
        "pending" => format!(
            "Job {} {} ({}), waited {} s",
            text("job"),
            text("state"),
            event["reason"].as_str().unwrap_or("no reason given"),
            event["waited_seconds"].as_u64().unwrap_or(0)
        ),
        "running" => format!("Job {} {} on {}", text("job"), text("state"), text("node")),
        "starting" => format!(
            "Job {} running on {}: starting RStudio Server",
            text("job"),
            text("node")
        ),
        _ => return None,
    })
}

/// Session states in which a session may still become ready.
pub fn is_alive(state: &str) -> bool {
    matches!(
        state,
        "ready" | "starting" | "running" | "pending" | "submitted" | "configuring"
    )
}

fn latest_alive(sessions: &[serde_json::Value]) -> Option<String> {
    // `list` prints the oldest first, as session ids begin with their creation time.
    sessions
        .iter()
        .rev()
        .find(|s| is_alive(s["state"].as_str().unwrap_or_default()))
        .and_then(|s| s["id"].as_str().map(str::to_owned))
}

/// Reads the connection details from `status --json` when the session is ready.
pub fn ready_from_status(status: &serde_json::Value) -> Option<Ready> {
    let connection = &status["connection"];
    Some(Ready {
        session: status["id"].as_str()?.to_owned(),
        job: status["job"].as_str().map(str::to_owned),
        node: connection["node"].as_str()?.to_owned(),
        port: connection["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok()),
        socket: connection["socket"].as_str().map(PathBuf::from),
        user: connection["user"].as_str()?.to_owned(),
        password: connection["password"].as_str()?.to_owned(),
    })
}

/// Describes why a session ended, from `status --json`: the scheduler's verdict where it tells
/// more than "completed", else the server's own message.
pub fn ended_reason(status: &serde_json::Value) -> String {
    let state = status["state"].as_str().unwrap_or("unknown");
    let job_state = status["job_state"].as_str().unwrap_or_default();
    let message = status["server"]["message"].as_str();
    let verdict = match job_state {
        "TIMEOUT" => Some("the job reached its time limit"),
        "CANCELLED" => Some("the job was cancelled"),
        "FAILED" => Some("the job failed"),
        "OUT_OF_MEMORY" => Some("the job ran out of memory"),
        "NODE_FAIL" => Some("the job's node failed"),
        "PREEMPTED" => Some("the job was preempted"),
        _ => None,
    };
    match (verdict, message) {
        (Some(verdict), Some(message)) => format!("{verdict} ({message})"),
        (Some(verdict), None) => verdict.to_owned(),
        (None, Some(message)) => format!("RStudio Server {state}: {message}"),
        (None, None) => format!("it is {state}"),
    }
}

/// Whether a job state from `status --json` may still change to the job's final one.
pub fn job_still_ending(status: &serde_json::Value) -> bool {
    matches!(
        status["job_state"].as_str(),
        None | Some("RUNNING" | "COMPLETING" | "SIGNALING" | "STAGE_OUT")
    ) && status["job"].is_string()
}

/// Builds the error for a session that has ended, with the server's log lines and hint.
pub fn ended_error(host: &str, status: &serde_json::Value) -> Error {
    let id = status["id"].as_str().unwrap_or("?");
    let lines = status["server"]["log_lines"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Error::failed(format!(
        "session {id} on {host} has ended: {}",
        ended_reason(status)
    ))
    .with_details(lines)
    .with_hint(
        status["server"]["hint"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("start a new one with `hpc-rstudio connect {host}`")),
    )
}

/// Converts `connect`'s launch and resource flags back into `submit` options for the host.
pub fn submit_args(launch: &LaunchArgs, resources: &ResourceArgs) -> Vec<String> {
    // Destructured without `..`, so that a new option of `submit` does not compile until it is
    // forwarded here too.
    let LaunchArgs {
        image,
        runtime,
        binds,
        env,
        port,
        socket,
        rserver_options,
        start_timeout,
        fresh_session,
        shared_tmp,
    } = launch;
    let ResourceArgs {
        time,
        cpus,
        mem,
        partition,
        account,
        gpus,
        sbatch_args,
        save_lead,
    } = resources;

    let mut args = Vec::new();
    let mut one = |flag: &str, value: Option<String>| {
        if let Some(value) = value {
            // `--flag=value` keeps a value that starts with a dash one argument.
            args.push(format!("--{flag}={value}"));
        }
    };
    one("image", image.clone());
    one("runtime", runtime.clone());
    one("port", port.map(|p| p.to_string()));
    one("start-timeout", start_timeout.map(|s| s.to_string()));
    one("time", time.clone());
    one("cpus", cpus.map(|c| c.to_string()));
    one("mem", mem.clone());
    one("partition", partition.clone());
    one("account", account.clone());
    one("gpus", gpus.clone());
    one("save-lead", save_lead.map(|s| s.to_string()));
    for (flag, values) in [
        ("bind", binds),
        ("env", env),
        ("rserver-option", rserver_options),
        ("sbatch-arg", sbatch_args),
    ] {
        for value in values {
            one(flag, Some(value.clone()));
        }
    }
    for (flag, set) in [
        ("--socket", socket),
        ("--fresh-session", fresh_session),
        ("--shared-tmp", shared_tmp),
    ] {
        if *set {
            args.push(flag.to_owned());
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn submit_options_survive_the_trip() {
        let cli = crate::cli::Cli::try_parse_from([
            "hpc-rstudio",
            "connect",
            "h",
            "--image",
            "/x y.sif",
            "--bind",
            "/a",
            "--bind",
            "/b:/c:ro",
            "--env",
            "A=-1",
            "--time",
            "1:00:00",
            "--cpus",
            "2",
            "--mem",
            "4G",
            "-p",
            "debug",
            "--sbatch-arg=--qos=x",
            "--rserver-option",
            "www-frame-origin=same",
            "--socket",
            "--save-lead",
            "60",
            "--start-timeout",
            "90",
            "--fresh-session",
            "--shared-tmp",
        ])
        .unwrap();
        let crate::cli::Command::Connect(args) = cli.command else {
            panic!("not connect");
        };
        let forwarded = submit_args(&args.launch, &args.resources);
        let mut argv = vec!["hpc-rstudio".to_owned(), "submit".to_owned()];
        argv.extend(forwarded);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        let crate::cli::Command::Submit(submit) = cli.command else {
            panic!("not submit");
        };
        assert_eq!(submit.launch.image.as_deref(), Some("/x y.sif"));
        assert_eq!(submit.launch.binds, ["/a", "/b:/c:ro"]);
        assert_eq!(submit.launch.env, ["A=-1"]);
        assert!(submit.launch.socket);
        assert!(submit.launch.fresh_session);
        assert!(submit.launch.shared_tmp);
        assert_eq!(submit.launch.start_timeout, Some(90));
        assert_eq!(submit.launch.rserver_options, ["www-frame-origin=same"]);
        assert_eq!(submit.resources.time.as_deref(), Some("1:00:00"));
        assert_eq!(submit.resources.cpus, Some(2));
        assert_eq!(submit.resources.partition.as_deref(), Some("debug"));
        assert_eq!(submit.resources.sbatch_args, ["--qos=x"]);
        assert_eq!(submit.resources.save_lead, Some(60));
    }

    #[test]
    fn probe_output_is_read() {
        let probe = parse_probe(
            "os=Linux\narch=x86_64\nhost=login1\nprogram=/home/u/.local/bin/hpc-rstudio\nstatus=0\nversion=hpc-rstudio 0.1.0\n",
        );
        assert_eq!(probe.program, "/home/u/.local/bin/hpc-rstudio");
        assert_eq!(probe.status, Some(0));
        assert_eq!(probe.version, "hpc-rstudio 0.1.0");
        let missing = parse_probe("os=Linux\narch=x86_64\nhost=h\nprogram=\n");
        assert_eq!(missing.program, "");
        assert_eq!(missing.status, None);
    }

    #[test]
    fn probe_script_runs_in_sh() {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(probe_script(Some("/bin/true")))
            .output()
            .unwrap();
        let probe = parse_probe(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(probe.program, "/bin/true");
        assert_eq!(probe.status, Some(0));
        assert_eq!(probe.os, "Linux");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(probe_script(Some("/no/such/program")))
            .output()
            .unwrap();
        assert_eq!(
            parse_probe(&String::from_utf8_lossy(&out.stdout)).status,
            Some(127)
        );
    }

    #[test]
    fn version_rule() {
        assert!(compatible("hpc-rstudio 0.1.0", "hpc-rstudio 0.1.7"));
        assert!(!compatible("hpc-rstudio 0.1.0", "hpc-rstudio 0.2.0"));
        assert!(!compatible("hpc-rstudio 1.1.0", "hpc-rstudio 0.1.0"));
        assert!(!compatible("hpc-rstudio 0.1.0", "sh: 1: x: not found"));
    }

    #[test]
    fn remote_errors_keep_their_parts() {
        let output = process::Output {
            status: std::os::unix::process::ExitStatusExt::from_raw(2 << 8),
            stdout: String::new(),
            stderr: "error: image /x does not exist\n  | line one\nhint: pass an image\n".into(),
        };
        let err = command_failure("h", "submit", &output);
        assert_eq!(err.message, "on h: image /x does not exist");
        assert_eq!(err.kind, Kind::Usage);
        assert_eq!(err.details, ["line one"]);
        assert_eq!(err.hint.as_deref(), Some("pass an image"));
    }

    #[test]
    fn latest_alive_session() {
        let sessions: Vec<serde_json::Value> = serde_json::from_str(
            r#"[{"id":"a","state":"ready"},{"id":"b","state":"pending"},{"id":"c","state":"stopped"}]"#,
        )
        .unwrap();
        assert_eq!(latest_alive(&sessions).as_deref(), Some("b"));
        assert_eq!(latest_alive(&sessions[2..]), None);
    }

    #[test]
    fn end_reasons() {
        let status = serde_json::json!({"id": "s", "state": "timeout", "job_state": "TIMEOUT"});
        assert_eq!(ended_reason(&status), "the job reached its time limit");
        let status = serde_json::json!({"id": "s", "state": "stopped", "job_state": "CANCELLED",
            "server": {"message": "received SIGTERM"}});
        assert_eq!(
            ended_reason(&status),
            "the job was cancelled (received SIGTERM)"
        );
        let status = serde_json::json!({"id": "s", "state": "stopped", "job_state": "COMPLETED",
            "server": {"message": "the job's time limit is near"}});
        assert_eq!(
            ended_reason(&status),
            "RStudio Server stopped: the job's time limit is near"
        );
        let status = serde_json::json!({"state": "stopped"});
        assert_eq!(ended_reason(&status), "it is stopped");
    }
}
