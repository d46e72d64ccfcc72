//! The supervisor: the process of ours that stays with a running server, in the foreground of
//! `run` or as the batch job's main process. It prepares the session's private node-local
//! directories, starts rserver in the container, waits until the server answers, and at the end
//! tells every rsession to save its state (SIGUSR2) before it stops rserver and cleans up.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::diagnose;
use crate::error::{Error, Result};
use crate::http::{self, Target};
use crate::paths::User;
use crate::private_fs::{tail_lines, write_private};
use crate::procs;
use crate::rserver::{self, Listen};
use crate::session::{Connection, ServerRecord, ServerState, SessionDir, SessionRecord, now};

mod node;

use node::{
    NodeDirs, Placement, check_pinned_port, choose_port, effective_limits, host_timezone, node_base,
};

/// How long R sessions get to save their state after SIGUSR2.
const SAVE_TIMEOUT: Duration = Duration::from_secs(45);
/// How long rserver gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often readiness is checked while the server starts.
const READY_POLL: Duration = Duration::from_millis(250);
/// How often rserver's log is read for known errors while the session runs.
const LOG_WATCH: Duration = Duration::from_secs(3);
/// How many times a lost race for a free port is retried with another port.
const PORT_ATTEMPTS: u32 = 5;

/// Something the supervisor waits for.
enum Event {
    Signal(i32),
    /// The container process exited; the number identifies the start it belonged to.
    Exited(u32, ExitStatus),
}

/// Runs the session in `dir` until it is stopped. `report` receives lines for the user.
pub fn supervise(
    user: &User,
    dir: &SessionDir,
    record: &SessionRecord,
    report: &dyn Fn(&Report),
) -> Result<()> {
    let placement = Placement::detect(record.mode, record.settings.cpus);
    let mut supervisor = Supervisor::new(user, dir, record, placement)?;
    let result = supervisor.run(report);
    if result.is_err() {
        // A failure after rserver started (a full disk under the session records, say) must
        // not leave the server running without its supervisor.
        supervisor.stop_server();
    }
    supervisor.cleanup();
    if let Err(err) = &result {
        supervisor.record_failure(err);
    }
    result
}

/// Progress the supervisor reports to the user as the session goes.
pub enum Report<'a> {
    Starting {
        node: &'a str,
        port: Option<u16>,
    },
    Ready(&'a Connection),
    Stopping(&'a str),
    Stopped {
        reason: &'a str,
        suspended: u32,
        saved: u32,
    },
    /// Something the user should know that does not stop the session.
    Note(&'a str),
}

struct Supervisor<'a> {
    user: &'a User,
    dir: &'a SessionDir,
    record: &'a SessionRecord,
    placement: Placement,
    nodes: Option<NodeDirs>,
    server: ServerRecord,
    child_pid: Option<i32>,
    events: (mpsc::Sender<Event>, mpsc::Receiver<Event>),
    starts: u32,
    /// The rsession pids seen at the last look, every few seconds while the session runs.
    recent_sessions: Vec<i32>,
}

impl<'a> Supervisor<'a> {
    fn new(
        user: &'a User,
        dir: &'a SessionDir,
        record: &'a SessionRecord,
        placement: Placement,
    ) -> Result<Self> {
        let server = ServerRecord {
            state: ServerState::Starting,
            updated: now(),
            node: placement.node.clone(),
            supervisor_pid: std::process::id(),
            port: None,
            socket: None,
            message: None,
            log_lines: Vec::new(),
            hint: None,
            sessions_suspended: 0,
            sessions_saved: 0,
            sessions_lost: 0,
            problems: Vec::new(),
            limits: effective_limits(),
        };
        dir.write_server(&server)?;
        Ok(Supervisor {
            user,
            dir,
            record,
            placement,
            nodes: None,
            server,
            child_pid: None,
            events: mpsc::channel(),
            starts: 0,
            recent_sessions: Vec::new(),
        })
    }

    fn run(&mut self, report: &dyn Fn(&Report)) -> Result<()> {
        // Orphans of the container (an rsession whose rserver died) are re-parented to us, so
        // that cleanup can still find and stop them.
        let _ = nix::sys::prctl::set_child_subreaper(true);
        self.listen_for_signals()?;
        for line in &self.server.limits {
            tracing::info!("limit: {line}");
        }
        let dropped: Vec<&str> = crate::doctor::LEAKY_VARIABLES
            .iter()
            .copied()
            .filter(|v| std::env::var_os(v).is_some())
            .collect();
        if !dropped.is_empty() {
            report(&Report::Note(&format!(
                "host variables not passed into the container: {} (pass what R needs with --env KEY=VALUE)",
                dropped.join(", ")
            )));
        }

        let settings = &self.record.settings;
        let base = node_base(settings.node_tmp.as_deref());
        let nodes = NodeDirs::create(&base, self.user.uid, &self.dir.id)?;
        self.remove_stale_node_dirs(nodes.root.parent().expect("session directory has a parent"));
        let password = random_password();
        write_private(
            &nodes.host_run_path(rserver::COOKIE_KEY),
            random_hex(32).as_bytes(),
        )?;
        write_private(
            &nodes.host_run_path(rserver::DATABASE_CONF),
            rserver::database_conf().as_bytes(),
        )?;
        std::fs::write(&nodes.logging_conf, rserver::logging_conf())?;
        let r_libs = self.r_libs_user()?;
        let wrapper = nodes.host_run_path(rserver::RSESSION_WRAPPER);
        crate::private_fs::write_atomic(
            &wrapper,
            rserver::rsession_wrapper(&self.dir.id, &r_libs.to_string_lossy()).as_bytes(),
            0o700,
        )?;
        crate::shell::check_syntax(&wrapper)?;
        self.nodes = Some(nodes);
        self.check_sign_in(&password)?;

        let connection = self.start_until_ready(&password, report)?;
        self.dir.write_connection(&connection)?;
        self.set_state(ServerState::Ready, None)?;
        report(&Report::Ready(&connection));

        let reason = self.wait_for_end(report)?;
        report(&Report::Stopping(&reason));
        self.set_state(ServerState::Stopping, Some(reason.clone()))?;
        // File times come from the kernel's coarse clock, which can lag the system clock by a
        // few milliseconds, so the window opens a little before the stop.
        let stop_started = std::time::SystemTime::now() - Duration::from_secs(2);
        // R sessions seen a moment ago that are gone now got the same signal as the supervisor
        // (a plain scancel sends SIGTERM to every process of the job) and could not save.
        let current = self.rsession_pids();
        let lost = self
            .recent_sessions
            .iter()
            .filter(|p| !current.contains(p))
            .count() as u32;
        if lost > 0 {
            report(&Report::Note(&format!(
                "{lost} R session(s) ended before they could save their state; stop sessions with `hpc-rstudio stop`, not scancel"
            )));
        }
        self.server.sessions_lost = lost;
        let suspended = self.stop_server();
        let state_root = crate::rstudio_state::state_root(self.user, &self.record.settings.env);
        let saved = crate::rstudio_state::sessions_saved_since(&state_root, stop_started);
        self.server.sessions_suspended = suspended;
        self.server.sessions_saved = saved;
        self.set_state(ServerState::Stopped, Some(reason.clone()))?;
        report(&Report::Stopped {
            reason: &reason,
            suspended,
            saved,
        });
        Ok(())
    }

    /// Removes the node-local directories of this user's earlier sessions on this node whose
    /// supervisor is gone, for example after the job was killed with SIGKILL, so that they do not
    /// fill the node's /tmp.
    fn remove_stale_node_dirs(&self, user_root: &Path) {
        let Ok(entries) = std::fs::read_dir(user_root) else {
            return;
        };
        let state_dir = self
            .dir
            .path
            .parent()
            .expect("session directories have a parent");
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if id == self.dir.id {
                continue;
            }
            let record = SessionDir {
                id: id.clone(),
                path: state_dir.join(&id),
            }
            .read_server()
            .ok()
            .flatten();
            let gone = match record {
                Some(server) if server.node == self.placement.node => {
                    server.state.is_final() || !procs::alive(server.supervisor_pid as i32)
                }
                // Without a record from this node (another state directory, say) the directory
                // may still be in use, so it stays.
                Some(_) | None => false,
            };
            if gone {
                tracing::info!(session = %id, "removing the node directory of an ended session");
                if let Err(err) = std::fs::remove_dir_all(entry.path()) {
                    tracing::warn!("cannot remove {}: {err}", entry.path().display());
                }
            }
        }
    }

    fn listen_for_signals(&self) -> Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
        let mut signals =
            signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2])
                .map_err(|err| Error::failed(format!("cannot install signal handlers: {err}")))?;
        let sender = self.events.0.clone();
        std::thread::spawn(move || {
            for signal in signals.forever() {
                if sender.send(Event::Signal(signal)).is_err() {
                    break;
                }
            }
        });
        Ok(())
    }

    /// The image-specific R library under HOME, created before start so that R uses it: a
    /// shared HOME otherwise mixes packages built on the host with the image's R.
    fn r_libs_user(&self) -> Result<PathBuf> {
        let image = &self.record.image;
        let name = match &image.reference {
            Some(reference) => crate::image::cache_file_name(reference)
                .trim_end_matches(".sif")
                .to_owned(),
            // Two different images may share a file name in different directories, so the
            // directory's hash joins the name.
            None => {
                let stem = image
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned());
                let stem = stem.unwrap_or_default();
                let parent = image
                    .path
                    .parent()
                    .map(|p| p.to_string_lossy().into_owned());
                let hash = fnv1a(parent.unwrap_or_default().as_bytes());
                format!("{}-{hash:08x}", stem.trim_end_matches(".sif"))
            }
        };
        let r_version = self
            .record
            .probe
            .r_version
            .clone()
            .unwrap_or_else(|| "R".to_owned());
        let dir = self
            .user
            .home
            .join("R/hpc-rstudio")
            .join(name)
            .join(r_version);
        std::fs::create_dir_all(&dir)
            .map_err(|err| Error::io("create R library directory", &dir, err))?;
        Ok(dir)
    }

    /// Starts rserver and waits for it to respond, retrying on a lost port race.
    fn start_until_ready(
        &mut self,
        password: &str,
        report: &dyn Fn(&Report),
    ) -> Result<Connection> {
        let settings = &self.record.settings;
        let mut tried = Vec::new();
        loop {
            let listen = if settings.socket {
                Listen::Socket
            } else {
                let port = match settings.port {
                    Some(port) => {
                        check_pinned_port(&settings.www_address, port, &self.placement.node)?
                    }
                    None => choose_port(&settings.www_address, settings.port_range, &tried)?,
                };
                tried.push(port);
                Listen::Tcp {
                    address: settings.www_address.clone(),
                    port,
                }
            };
            let port = match &listen {
                Listen::Tcp { port, .. } => Some(*port),
                Listen::Socket => None,
            };
            self.server.port = port;
            self.server.socket = matches!(listen, Listen::Socket)
                .then(|| self.nodes().host_run_path(rserver::SOCKET));
            self.set_state(ServerState::Starting, None)?;
            report(&Report::Starting {
                node: &self.placement.node,
                port,
            });

            let started = Instant::now();
            let generation = self.spawn(&listen, password)?;
            match self.wait_until_ready(generation, &listen, started)? {
                None => {
                    return Ok(Connection {
                        url: self.url(&listen),
                        node: self.placement.node.clone(),
                        port,
                        socket: self.server.socket.clone(),
                        user: self.user.name.clone(),
                        password: password.to_owned(),
                    });
                }
                Some(status) => {
                    let lines = tail_lines(&self.dir.log_path(), 20);
                    let lost_race = lines.iter().any(|l| l.contains("Address already in use"));
                    if lost_race && settings.port.is_none() && (tried.len() as u32) < PORT_ATTEMPTS
                    {
                        tracing::warn!(port, "rserver lost the race for its port, trying another");
                        continue;
                    }
                    return Err(exit_error(
                        status,
                        lines,
                        &self.dir.log_path(),
                        port,
                        &self.placement.node,
                    ));
                }
            }
        }
    }

    fn nodes(&self) -> &NodeDirs {
        self.nodes
            .as_ref()
            .expect("node directories are created before the server starts")
    }

    fn url(&self, listen: &Listen) -> String {
        match listen {
            Listen::Tcp { address, port } if address == "127.0.0.1" || address == "localhost" => {
                format!("http://127.0.0.1:{port}/")
            }
            Listen::Tcp { port, .. } => format!("http://{}:{port}/", self.placement.node),
            Listen::Socket => format!(
                "unix:{}",
                self.nodes().host_run_path(rserver::SOCKET).display()
            ),
        }
    }

    /// Starts the container; returns the number of this start.
    fn spawn(&mut self, listen: &Listen, password: &str) -> Result<u32> {
        let record = self.record;
        let settings = &record.settings;
        let args = rserver::arguments(
            &record.probe,
            settings,
            &self.user.name,
            self.user.uid,
            listen,
        )?;
        let nodes = self.nodes();
        let log_path = self.dir.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|err| Error::io("open log file", &log_path, err))?;
        let log_err = log.try_clone()?;

        let mut cmd = record.runtime.command();
        cmd.args(["exec", "--cleanenv", "--bind"])
            .arg(nodes.bind_list(settings.shared_tmp));
        for bind in &settings.binds {
            cmd.arg("--bind").arg(bind);
        }
        cmd.arg(&record.image.path)
            .arg(crate::probe::RSERVER)
            .args(&args);

        self.set_container_env(&mut cmd, password);
        cmd.current_dir(&self.user.home)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            // Its own process group, so that Ctrl-C reaches only us and we stop it in order.
            .process_group(0);
        // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2),
        // which is async-signal-safe. With it, the container is told to stop (SIGTERM, which
        // the runtime forwards to rserver) when the supervisor dies, even by SIGKILL.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        tracing::debug!(command = %crate::process::display_argv(&cmd), "starting rserver");
        let child = cmd.spawn().map_err(|err| {
            Error::failed(format!(
                "failed to start {}: {err}",
                record.runtime.program.display()
            ))
        })?;
        self.starts += 1;
        self.child_pid = Some(child.id() as i32);
        self.watch_child(child, self.starts);
        Ok(self.starts)
    }

    fn watch_child(&self, mut child: Child, generation: u32) {
        let sender = self.events.0.clone();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = sender.send(Event::Exited(generation, status));
            }
        });
    }

    /// Settings reach the container through the runtime's own prefix, in the environment of the
    /// runtime process, so the password is never in any process's argv. Variables that would
    /// set other values inside the container are removed first.
    fn set_container_env(&self, cmd: &mut std::process::Command, password: &str) {
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("APPTAINERENV_") || key.starts_with("SINGULARITYENV_") {
                cmd.env_remove(key.as_ref());
            }
        }
        let prefix = self.record.runtime.env_prefix();
        for (key, value) in self.container_env(password) {
            cmd.env(format!("{prefix}{key}"), escape_for_runtime(&value));
        }
    }

    /// Runs the image's pam-helper with the session's user name and password, in a container
    /// started the same way as rserver's, before rserver starts. rserver signs users in through
    /// this helper, so a rejection here means every sign-in would fail.
    fn check_sign_in(&self, password: &str) -> Result<()> {
        let record = self.record;
        let output = crate::probe::run_pam_helper(
            &record.image,
            &record.runtime,
            &self.user.name,
            password,
            |cmd| self.set_container_env(cmd, password),
        )?;
        if output.success() {
            return Ok(());
        }
        Err(Error::failed(format!(
            "the image's pam-helper rejected the session's own user name '{}' and password",
            self.user.name
        ))
        .with_details(output.stderr.lines().map(str::to_owned).collect())
        .with_hint("USER and PASSWORD did not reach the container, so every sign-in would fail with \"Incorrect or invalid username/password\"; check that the runtime passes APPTAINERENV_/SINGULARITYENV_ variables (a site wrapper may clear them)"))
    }

    /// The environment inside the container: explicit, and nothing else from the host.
    fn container_env(&self, password: &str) -> Vec<(String, String)> {
        let settings = &self.record.settings;
        let mut env = vec![
            ("USER".to_owned(), self.user.name.clone()),
            ("LOGNAME".to_owned(), self.user.name.clone()),
            ("PASSWORD".to_owned(), password.to_owned()),
            ("LANG".to_owned(), settings.locale.clone()),
            ("TZ".to_owned(), host_timezone()),
            (
                "RSTUDIO_SESSION_TIMEOUT".to_owned(),
                settings.session_timeout_minutes.to_string(),
            ),
        ];
        if let Some(cpus) = self.placement.cpus {
            for key in [
                "OMP_NUM_THREADS",
                "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS",
            ] {
                env.push((key.to_owned(), cpus.to_string()));
            }
        }
        env.extend(settings.env.iter().cloned());
        env
    }

    /// Waits for the server to respond to HTTP. Returns `None` when it does, or the exit status
    /// when the container exits first.
    fn wait_until_ready(
        &mut self,
        generation: u32,
        listen: &Listen,
        started: Instant,
    ) -> Result<Option<ExitStatus>> {
        let target = match listen {
            Listen::Tcp { port, .. } => Target::Tcp(SocketAddr::from(([127, 0, 0, 1], *port))),
            Listen::Socket => Target::Unix(self.nodes().host_run_path(rserver::SOCKET)),
        };
        let timeout = Duration::from_secs(self.record.settings.start_timeout);
        loop {
            match self.events.1.recv_timeout(READY_POLL) {
                Ok(Event::Exited(g, status)) if g == generation => {
                    self.child_pid = None;
                    return Ok(Some(status));
                }
                Ok(Event::Exited(..)) => {}
                Ok(Event::Signal(signal)) => {
                    let reason = format!("interrupted by {} while starting", signal_name(signal));
                    self.stop_server();
                    return Err(Error::failed(reason));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if http::get_status(&target, "/", Duration::from_secs(2)).is_some() {
                        tracing::info!(
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "server answers"
                        );
                        return Ok(None);
                    }
                    if started.elapsed() > timeout {
                        self.stop_server();
                        return Err(Error::failed(format!(
                            "rserver did not respond within {} s",
                            timeout.as_secs()
                        ))
                        .with_details(tail_lines(&self.dir.log_path(), 10))
                        .with_hint("raise --start-timeout if the node is slow, or read the log with `hpc-rstudio logs`"));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    unreachable!("the supervisor keeps a sender")
                }
            }
        }
    }

    /// Waits until a signal asks us to stop, or the server exits. Returns the reason.
    fn wait_for_end(&mut self, report: &dyn Fn(&Report)) -> Result<String> {
        let mut log_offset = std::fs::metadata(self.dir.log_path()).map_or(0, |m| m.len());
        loop {
            match self.events.1.recv_timeout(LOG_WATCH) {
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    log_offset = self.watch_log(log_offset, report);
                    self.recent_sessions = self.rsession_pids();
                }
                Ok(Event::Signal(signal)) => {
                    // `stop` sends the same SIGUSR2 as SLURM's time-limit warning, and leaves a
                    // marker file first so that the two can be told apart.
                    let stop_marker = self.dir.file(crate::session::STOP_MARKER);
                    let reason = match signal {
                        _ if stop_marker.exists() => {
                            let _ = std::fs::remove_file(&stop_marker);
                            "stopped with `hpc-rstudio stop`".to_owned()
                        }
                        signal_hook::consts::SIGUSR2 => "the job's time limit is near".to_owned(),
                        other => format!("received {}", signal_name(other)),
                    };
                    return Ok(reason);
                }
                Ok(Event::Exited(g, status)) if g == self.starts => {
                    self.child_pid = None;
                    let lines = tail_lines(&self.dir.log_path(), 20);
                    return Err(
                        Error::failed(format!("rserver exited unexpectedly ({status})"))
                            .with_hint(diagnose::hint_for(&lines).unwrap_or_else(|| {
                                format!("read the log: {}", self.dir.log_path().display())
                            }))
                            .with_details(lines),
                    );
                }
                Ok(Event::Exited(..)) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    unreachable!("the supervisor keeps a sender")
                }
            }
        }
    }

    /// Reads what rserver logged since `offset` and records known errors (an R session that
    /// cannot start, for example) so that `status` shows them. Returns the new offset.
    fn watch_log(&mut self, offset: u64, report: &dyn Fn(&Report)) -> u64 {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(self.dir.log_path()) else {
            return offset;
        };
        let mut text = String::new();
        if file.seek(SeekFrom::Start(offset)).is_err() || file.read_to_string(&mut text).is_err() {
            return offset;
        }
        // Only whole lines count; a partial last line is read again next time.
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        let lines: Vec<String> = text[..complete].lines().map(str::to_owned).collect();
        for line in &lines {
            let Some(finding) = diagnose::find(std::slice::from_ref(line)) else {
                continue;
            };
            let problem = format!("{}: {}", finding.known.cause, finding.known.fix);
            if self.server.problems.iter().any(|p| p.hint == problem) {
                continue;
            }
            report(&Report::Note(&format!(
                "{} ({})",
                finding.known.cause,
                line.trim()
            )));
            self.server.problems.push(crate::session::Problem {
                line: line.trim().to_owned(),
                hint: problem,
            });
            if let Err(err) = self.dir.write_server(&self.server) {
                tracing::warn!("cannot record a problem in the session record: {err}");
            }
        }
        offset + complete as u64
    }

    /// Tells every rsession to save its state, waits for them, then stops rserver and kills
    /// whatever is left. Returns how many R sessions were signalled.
    fn stop_server(&mut self) -> u32 {
        let Some(pid) = self.child_pid else {
            self.kill_leftovers();
            return 0;
        };
        let sessions = self.rsession_pids();
        for session in &sessions {
            tracing::info!(pid = session, "asking rsession to save its state (SIGUSR2)");
            let _ = kill(Pid::from_raw(*session), Signal::SIGUSR2);
        }
        let deadline = Instant::now() + SAVE_TIMEOUT;
        while sessions.iter().any(|p| procs::alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        for session in sessions.iter().filter(|p| procs::alive(**p)) {
            tracing::warn!(pid = session, "rsession did not finish saving in time");
        }

        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.events.1.recv_timeout(Duration::from_millis(100)) {
                Ok(Event::Exited(g, _)) if g == self.starts => {
                    self.child_pid = None;
                    break;
                }
                _ => {}
            }
        }
        self.kill_leftovers();
        sessions.len() as u32
    }

    /// Returns the pids of the R sessions below the supervisor.
    fn rsession_pids(&self) -> Vec<i32> {
        let own = std::process::id() as i32;
        procs::descendants(own, &procs::all())
            .into_iter()
            .filter(|p| p.comm == "rsession")
            .map(|p| p.pid)
            .collect()
    }

    /// Kills every process still below the supervisor and reaps them.
    fn kill_leftovers(&mut self) {
        let own = std::process::id() as i32;
        let left = procs::descendants(own, &procs::all());
        for proc in &left {
            tracing::debug!(pid = proc.pid, comm = %proc.comm, "killing leftover process");
            let _ = kill(Pid::from_raw(proc.pid), Signal::SIGKILL);
        }
        if let Some(pid) = self.child_pid.take() {
            let _ = nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // Reap re-parented orphans; our own child is reaped by its watcher thread.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && !procs::descendants(own, &procs::all()).is_empty() {
            let _ = nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn cleanup(&mut self) {
        if self.record.settings.shared_tmp {
            // rserver's keys in the host's /tmp would block the next user's --shared-tmp launch.
            let leftover = Path::new("/tmp/rstudio-server");
            let ours = std::fs::symlink_metadata(leftover).is_ok_and(|m| {
                std::os::unix::fs::MetadataExt::uid(&m) == self.user.uid && m.is_dir()
            });
            if ours {
                let _ = std::fs::remove_dir_all(leftover);
            }
        }
        if let Some(nodes) = self.nodes.take() {
            if let Err(err) = std::fs::remove_dir_all(&nodes.root) {
                tracing::warn!("cannot remove {}: {err}", nodes.root.display());
            }
        }
    }

    fn set_state(&mut self, state: ServerState, message: Option<String>) -> Result<()> {
        self.server.state = state;
        self.server.updated = now();
        if message.is_some() {
            self.server.message = message;
        }
        self.dir.write_server(&self.server)
    }

    fn record_failure(&mut self, err: &Error) {
        self.server.log_lines = err.details.clone();
        self.server.hint = err.hint.clone();
        let _ = self.set_state(ServerState::Failed, Some(err.message.clone()));
    }
}

/// The error for a container that exited before the server answered.
fn exit_error(
    status: ExitStatus,
    lines: Vec<String>,
    log: &Path,
    port: Option<u16>,
    node: &str,
) -> Error {
    let mut message = format!("rserver exited before it answered ({status})");
    if let Some(port) = port {
        message.push_str(&format!(" on {node}:{port}"));
    }
    let finding = diagnose::find(&lines);
    if let Some(finding) = &finding {
        message.push_str(&format!(": {}", finding.line.trim()));
    }
    let hint = match finding {
        Some(finding) => format!("{}; {}", finding.known.cause, finding.known.fix),
        None if lines.iter().all(|l| l.contains("Logging to 'syslog'")) => {
            "rserver logged nothing visible: the image's logging configuration sends errors to syslog".to_owned()
        }
        None => format!("the full log is {}", log.display()),
    };
    Error::failed(message).with_details(lines).with_hint(hint)
}

/// The 32-bit FNV-1a hash: short, stable across releases, and enough to tell directories apart.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Escapes a value for the runtime's environment prefix: Apptainer and SingularityCE evaluate
/// those values like a shell would inside double quotes, so `$`, a backquote and a backslash
/// are escaped to arrive as written.
fn escape_for_runtime(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | '$' | '`') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// A random password of 27 characters from a 32-letter alphabet: 135 bits.
fn random_password() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghjkmnpqrstuvwxyz23456789A";
    let mut bytes = [0u8; 27];
    getrandom::fill(&mut bytes).expect("the system random source works");
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % 32] as char)
        .collect()
}

fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("the system random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn signal_name(signal: i32) -> String {
    Signal::try_from(signal)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_known_values() {
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_ne!(fnv1a(b"/opt/images"), fnv1a(b"/home/u/images"));
    }

    #[test]
    fn runtime_escaping() {
        assert_eq!(escape_for_runtime("price $5"), "price \\$5");
        assert_eq!(escape_for_runtime("$(touch x)`y`"), "\\$(touch x)\\`y\\`");
        assert_eq!(
            escape_for_runtime("a\\b \"q\" 'x' 8(x2)"),
            "a\\\\b \"q\" 'x' 8(x2)"
        );
    }

    #[test]
    fn password_has_enough_entropy() {
        let a = random_password();
        let b = random_password();
        assert_eq!(a.len(), 27);
        assert_ne!(a, b);
        // 27 characters of 5 bits each.
        assert!(a.len() * 5 >= 128, "{} bits", a.len() * 5);
    }
}
