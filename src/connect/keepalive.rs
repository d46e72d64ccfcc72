//! Keeps the tunnel alive while `connect` runs. It watches the ssh master and probes the server
//! through the tunnel, reconnects with backoff when either is lost, and ends when the session
//! has ended or the user presses Ctrl-C.

use std::time::{Duration, Instant};

use crate::error::{Error, Kind, Result};
use crate::paths::User;

use super::Stop;
use super::remote::{self, Ready, Remote};
use super::state;
use super::tunnel::{Target, Tunnel};

/// How often the server is asked for a page through the tunnel. Each probe is also a channel
/// of the ssh master, which keeps it from ending as idle (ControlPersist).
const PROBE_EVERY: Duration = Duration::from_secs(3);
/// Failed probes in a row before the tunnel counts as lost.
const PROBES_LOST: u32 = 2;
/// How often the session's state is asked for on the host, to notice a job that ended.
const STATUS_EVERY: Duration = Duration::from_secs(60);
/// Waits between reconnection attempts grow to this, and attempts stop after the limit.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const RECONNECT_LIMIT: Duration = Duration::from_secs(15 * 60);
/// How often the master's process is looked at.
const TICK: Duration = Duration::from_millis(250);

/// Reason the keep-alive loop ended.
pub enum End {
    /// Ctrl-C (or SIGTERM, SIGHUP): the session goes on.
    Interrupted,
    /// The session ended on the host; its last status.
    Ended(serde_json::Value),
}

/// A session with its open tunnel.
pub struct Attached<'a> {
    pub remote: &'a Remote<'a>,
    pub user: &'a User,
    pub ready: Ready,
    pub target: Target,
    pub tunnel: Tunnel,
    pub master: u32,
    pub pinned: Option<u16>,
}

impl Attached<'_> {
    fn host(&self) -> &str {
        &self.remote.control.host
    }

    /// Records the tunnel in the local state file (0600), for `connect` users and tests to find
    /// which ssh process carries it. The password is not part of it.
    pub fn record(&self) -> Result<()> {
        let url = self.tunnel.url();
        state::write(
            self.user,
            &state::Attached {
                host: self.host(),
                session: &self.ready.session,
                job: self.ready.job.as_deref(),
                node: &self.ready.node,
                url: &url,
                local_port: self.tunnel.port,
                ssh_pid: self.master,
                control_socket: &self.remote.control.socket,
                pid: std::process::id(),
                updated: crate::session::now(),
            },
        )
    }

    /// Runs until the session ends or `stop` is set.
    pub fn keep(&mut self, stop: &Stop) -> Result<End> {
        let mut next_probe = Instant::now() + PROBE_EVERY;
        let mut next_status = Instant::now() + STATUS_EVERY;
        let mut failed_probes = 0;
        loop {
            if stop.sleep(TICK) {
                return Ok(End::Interrupted);
            }
            if !alive(self.master) {
                eprintln!(
                    "The connection to {} was lost (ssh process {} ended); reconnecting...",
                    self.host(),
                    self.master
                );
                if let Some(end) = self.reconnect(stop)? {
                    return Ok(end);
                }
                failed_probes = 0;
                continue;
            }
            let now = Instant::now();
            if now >= next_probe {
                next_probe = now + PROBE_EVERY;
                if self.tunnel.responds() {
                    failed_probes = 0;
                } else {
                    failed_probes += 1;
                }
            }
            if failed_probes >= PROBES_LOST || now >= next_status {
                next_status = now + STATUS_EVERY;
                match self.remote.status(&self.ready.session) {
                    Ok(status) if status["state"] != "ready" => {
                        return Ok(End::Ended(self.final_status(status)));
                    }
                    Ok(_) if failed_probes >= PROBES_LOST => {
                        eprintln!(
                            "RStudio Server stopped answering through the tunnel; reopening it..."
                        );
                        self.tunnel.close(self.remote.control);
                        if let Some(end) = self.reconnect(stop)? {
                            return Ok(end);
                        }
                        failed_probes = 0;
                    }
                    Ok(_) => {}
                    // hpc-rstudio on the host has no record of the session, so there is nothing to wait for.
                    Err(err) if err.kind == Kind::Usage => return Err(err),
                    Err(err) => {
                        tracing::debug!("status check failed: {}", err.message);
                        if failed_probes >= PROBES_LOST {
                            // The host does not respond through the master either, so the
                            // master is replaced.
                            eprintln!(
                                "{} does not answer ({}); reconnecting...",
                                self.host(),
                                err.message
                            );
                            end_master(self.master);
                            if let Some(end) = self.reconnect(stop)? {
                                return Ok(end);
                            }
                            failed_probes = 0;
                        }
                    }
                }
            }
        }
    }

    /// Reconnects with growing waits: the master (signing in again where it ended), then the
    /// forward, checked by HTTP. Returns the end when the session ended meanwhile.
    fn reconnect(&mut self, stop: &Stop) -> Result<Option<End>> {
        let started = Instant::now();
        let mut delay = Duration::ZERO;
        let mut attempt = 0;
        loop {
            if stop.sleep(delay) {
                return Ok(Some(End::Interrupted));
            }
            attempt += 1;
            match self.reconnect_once(stop) {
                Ok(None) => {
                    eprintln!(
                        "Reconnected after {:.1} s: {}",
                        started.elapsed().as_secs_f64(),
                        self.tunnel.url()
                    );
                    self.record()?;
                    return Ok(None);
                }
                Ok(Some(end)) => return Ok(Some(end)),
                Err(err) => {
                    if stop.is_set() {
                        return Ok(Some(End::Interrupted));
                    }
                    // A rejected request (an unknown session, a busy pinned port) fails the same
                    // way on every attempt.
                    if err.kind == Kind::Usage {
                        return Err(err);
                    }
                    if started.elapsed() >= RECONNECT_LIMIT {
                        return Err(Error::failed(format!(
                            "could not reconnect to {} within {} minutes: {}",
                            self.host(),
                            RECONNECT_LIMIT.as_secs() / 60,
                            err.message
                        ))
                        .with_details(err.details)
                        .with_hint(format!(
                            "the session keeps running; re-attach later with `hpc-rstudio connect {} --attach {}`",
                            self.host(),
                            self.ready.session
                        )));
                    }
                    delay = next_delay(delay);
                    eprintln!(
                        "Reconnection attempt {attempt} failed: {}; next in {} s",
                        err.message,
                        delay.as_secs()
                    );
                }
            }
        }
    }

    /// Waits briefly for the job to end after its server did, so that the reason given is the
    /// scheduler's final one (cancelled, timed out) and not "running".
    fn final_status(&self, mut status: serde_json::Value) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        while remote::job_still_ending(&status) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(2));
            match self.remote.status(&self.ready.session) {
                Ok(newer) => status = newer,
                Err(_) => break,
            }
        }
        status
    }

    /// Makes one attempt: the master, then the forward. The session's state is asked for only
    /// when the server does not respond, so the common case runs no remote command.
    fn reconnect_once(&mut self, stop: &Stop) -> Result<Option<End>> {
        let control = self.remote.control;
        self.master = control.start(stop)?;
        let previous = self.tunnel.port;
        let err = match Tunnel::open(control, &self.target, self.pinned, Some(previous)) {
            Ok(tunnel) => {
                self.tunnel = tunnel;
                if self.tunnel.port != previous {
                    eprintln!(
                        "Local port {previous} was taken meanwhile; the tunnel now listens on {}",
                        self.tunnel.url()
                    );
                }
                return Ok(None);
            }
            Err(err) => err,
        };
        let status = self.remote.status(&self.ready.session)?;
        if status["state"] != "ready" {
            return Ok(Some(End::Ended(self.final_status(status))));
        }
        // The server may have moved to another port: the next attempt uses the new one.
        if let Some(ready) = remote::ready_from_status(&status) {
            self.target = Target::of(&ready, &control.host, &self.remote.hostname)?;
            self.ready = ready;
        }
        Err(err)
    }
}

/// 1, 2, 4, ... seconds, at most [`BACKOFF_MAX`].
fn next_delay(delay: Duration) -> Duration {
    if delay.is_zero() {
        Duration::from_secs(1)
    } else {
        (delay * 2).min(BACKOFF_MAX)
    }
}

/// Checks whether a process runs. After going to the background the master is no longer our
/// child. Until its new parent reaps it, a killed master is a zombie that signal 0 still
/// reaches, so /proc is read where it exists.
fn alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if std::path::Path::new("/proc/self/stat").exists() {
        return crate::procs::alive(raw);
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(errno) => errno == nix::errno::Errno::EPERM,
    }
}

/// Ends a master whose connection no longer carries anything, so that a new one replaces it.
fn end_master(pid: u32) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_limit() {
        let mut delay = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..7 {
            delay = next_delay(delay);
            seen.push(delay.as_secs());
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn own_process_is_alive() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX));
    }
}
