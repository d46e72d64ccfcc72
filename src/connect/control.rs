//! The shared SSH connection: one ControlMaster per host and ssh configuration, started with
//! the system `ssh` so that its password or second-factor prompt appears once, in the user's
//! terminal, and reused by every later remote command and by the tunnel.

use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::paths::User;
use crate::{private_fs, process};

use super::Stop;

/// How long the master stays up after its last channel closed. The keep-alive loop probes the
/// tunnel every few seconds, so the master stays busy while `connect` runs. After `connect`
/// ends, a `connect HOST --list` within this time needs no new sign-in.
const PERSIST: &str = "10m";
/// ssh's own limit for the TCP connection, and its keep-alive: a dead connection (a laptop that
/// slept, a dropped Wi-Fi) ends the master within 15 s x 3. A RemoteCommand from the user's
/// configuration would clash with the commands given here.
const SSH_OPTIONS: &[&str] = &[
    "ConnectTimeout=20",
    "ServerAliveInterval=15",
    "ServerAliveCountMax=3",
    "RemoteCommand=none",
];
/// How long signing in may take: long enough to type a password and a second factor.
const SIGN_IN_LIMIT_TERMINAL: Duration = Duration::from_secs(180);
const SIGN_IN_LIMIT: Duration = Duration::from_secs(60);
/// ssh's control commands (-O) and `ssh -G` only talk to local processes.
const LOCAL_LIMIT: Duration = Duration::from_secs(20);
/// Unix socket paths are limited to 104 bytes on some systems; ssh adds 17 while it binds.
const SOCKET_PATH_MAX: usize = 104 - 17;

/// The shared connection to one host with one set of ssh options.
#[derive(Debug, Clone)]
pub struct Control {
    /// The destination as the user writes it for `ssh HOST`.
    pub host: String,
    /// Options for every ssh invocation: `-F FILE` and `-o OPTION`.
    options: Vec<String>,
    /// The control socket, with ssh's %C already expanded.
    pub socket: PathBuf,
    /// File (0600) that receives the master's own messages, shown when it fails.
    log: PathBuf,
}

impl Control {
    /// Prepares the connection to `host`: checks the name, creates the private socket directory
    /// and reads the control socket's path for this host and these options from `ssh -G`.
    pub fn new(
        user: &User,
        host: &str,
        ssh_config: Option<&Path>,
        ssh_options: &[String],
    ) -> Result<Control> {
        if host.is_empty() || host.starts_with('-') || host.contains(char::is_whitespace) {
            return Err(Error::usage(format!("invalid host '{host}'")).with_hint(
                "give the host as you write it for `ssh HOST`, for example login.cluster.example or an alias from ~/.ssh/config",
            ));
        }
        let mut options = Vec::new();
        if let Some(file) = ssh_config {
            options.push("-F".to_owned());
            options.push(file.display().to_string());
        }
        for option in ssh_options {
            options.push("-o".to_owned());
            options.push(option.clone());
        }
        let dir = socket_dir(user)?;
        // Different ssh options (another identity, another known_hosts file) must not share a
        // master that was signed in with other ones, so they are part of the socket's name.
        let pattern = dir.join(format!("c-{:08x}-%C", fnv32(&options.join("\n"))));
        let log_dir = super::state::dir(user)?;
        let log = log_dir.join(format!(
            "ssh-{:08x}.log",
            fnv32(&format!("{host}\n{options:?}"))
        ));

        let mut cmd = Command::new("ssh");
        cmd.args(&options)
            .arg("-G")
            .arg("-o")
            .arg(format!("ControlPath={}", pattern.display()))
            .arg("--")
            .arg(host);
        let output = process::run_checked(&mut cmd, LOCAL_LIMIT)?;
        let socket = output
            .stdout
            .lines()
            .find_map(|line| line.strip_prefix("controlpath "))
            .map(PathBuf::from)
            .ok_or_else(|| {
                Error::failed(format!("`ssh -G {host}` printed no control path"))
                    .with_hint("connect needs OpenSSH 6.8 or later on this computer")
            })?;
        Ok(Control {
            host: host.to_owned(),
            options,
            socket,
            log,
        })
    }

    /// Builds an ssh command with the user's options and the control socket, without the host.
    fn ssh(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(&self.options)
            .arg("-o")
            .arg(format!("ControlPath={}", self.socket.display()));
        cmd
    }

    /// Returns the pid of the running master, or `None` when none runs.
    pub fn master_pid(&self) -> Option<u32> {
        if !self.socket.exists() {
            return None;
        }
        let mut cmd = self.ssh();
        cmd.args(["-O", "check", "--", &self.host]);
        let output = process::run(&mut cmd, None, LOCAL_LIMIT).ok()?;
        if !output.success() {
            return None;
        }
        parse_master_pid(&output.stderr).or_else(|| parse_master_pid(&output.stdout))
    }

    /// Makes sure a master runs and returns its pid: reuses a running one, else starts one.
    /// Prompts (password, second factor, an unknown host key) appear in this terminal.
    pub fn start(&self, stop: &Stop) -> Result<u32> {
        if let Some(pid) = self.master_pid() {
            tracing::debug!(pid, socket = %self.socket.display(), "reusing the ssh connection");
            return Ok(pid);
        }
        // A socket left by a master that died would make the new one run without sharing.
        let _ = std::fs::remove_file(&self.socket);
        let log =
            std::fs::File::create(&self.log).map_err(|err| Error::io("create", &self.log, err))?;
        let mut cmd = self.ssh();
        // LocalForward lines for this host in the user's configuration (an old 8787 tunnel,
        // say) would bind their ports too; only the forwards connect asks for are wanted.
        cmd.args(["-o", "ControlMaster=yes", "-o", "ClearAllForwardings=yes"])
            .arg("-o")
            .arg(format!("ControlPersist={PERSIST}"));
        for option in SSH_OPTIONS {
            cmd.args(["-o", option]);
        }
        // -f: ssh goes to the background once signed in, so its exit tells us the outcome.
        cmd.args(["-N", "-f", "--", &self.host])
            .stdin(Stdio::inherit())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        tracing::debug!(command = %process::display_argv(&cmd), "starting the ssh connection");
        let mut child = cmd.spawn().map_err(|err| {
            Error::failed(format!("cannot start ssh: {err}"))
                .with_hint("install the OpenSSH client; connect uses the system `ssh`")
        })?;
        let limit = if std::io::stdin().is_terminal() {
            SIGN_IN_LIMIT_TERMINAL
        } else {
            SIGN_IN_LIMIT
        };
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline || stop.is_set() {
                let _ = child.kill();
                let _ = child.wait();
                if stop.is_set() {
                    return Err(Error::failed(format!(
                        "interrupted while connecting to {}",
                        self.host
                    )));
                }
                return Err(Error::failed(format!(
                    "ssh to {} did not sign in within {} s",
                    self.host,
                    limit.as_secs()
                ))
                .with_details(self.log_lines())
                .with_hint(format!(
                    "check that `ssh {}` works in a terminal; a host that does not answer needs the VPN or a ProxyJump in ~/.ssh/config",
                    self.host
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if !status.success() {
            return Err(ssh_failure(&self.host, &self.log_lines()));
        }
        // The master accepts clients a moment after the foreground process has exited.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = self.master_pid() {
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                return Err(Error::failed(format!(
                    "ssh signed in to {} but its shared connection does not respond on {}",
                    self.host,
                    self.socket.display()
                ))
                .with_details(self.log_lines())
                .with_hint(format!(
                    "a ControlMaster or ControlPath setting for {} in your ssh configuration may conflict; remove it and try again",
                    self.host
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Reads the master's messages, without blank lines.
    fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| line.trim_end().to_owned())
            .filter(|line| !line.is_empty())
            .collect()
    }

    /// Builds an ssh command that runs `remote` (a shell command line) on the host through the
    /// master. It runs in its own process group so that Ctrl-C reaches only `connect`, which
    /// then ends the command itself.
    pub fn remote(&self, remote: &str) -> Command {
        let mut cmd = self.ssh();
        // BatchMode: should the master be gone, this fails instead of prompting in the middle.
        cmd.args(["-o", "ControlMaster=no", "-o", "BatchMode=yes", "-T"]);
        for option in SSH_OPTIONS {
            cmd.args(["-o", option]);
        }
        cmd.args(["--", &self.host, remote]);
        cmd.process_group(0);
        cmd
    }

    /// Sends a control command (`-O forward`, `-O cancel`, `-O exit`) with its extra arguments.
    pub fn control(&self, operation: &str, args: &[&str]) -> Result<process::Output> {
        let mut cmd = self.ssh();
        cmd.args(["-O", operation])
            .args(args)
            .args(["--", &self.host]);
        cmd.process_group(0);
        process::run(&mut cmd, None, LOCAL_LIMIT)
    }
}

/// Creates the private directory of control sockets, short and on a local file system.
fn socket_dir(user: &User) -> Result<PathBuf> {
    let dir = choose_socket_dir(
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        user.uid,
    );
    private_fs::create_private_dir(&dir)?;
    Ok(dir)
}

/// `$XDG_RUNTIME_DIR/hpc-rstudio` where that is short enough, else `/tmp/hpc-rstudio-UID`.
fn choose_socket_dir(runtime: Option<PathBuf>, uid: u32) -> PathBuf {
    // The socket's name adds 11 bytes and ssh's 40-character hash to the directory.
    let fits = |dir: &PathBuf| dir.as_os_str().len() + 1 + 11 + 40 <= SOCKET_PATH_MAX;
    runtime
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join("hpc-rstudio"))
        .filter(fits)
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/hpc-rstudio-{uid}")))
}

/// FNV-1a: a stable short name for a set of options (not a secret, not a security check).
fn fnv32(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// Reads the pid from `Master running (pid=1234)`.
fn parse_master_pid(text: &str) -> Option<u32> {
    let start = text.find("(pid=")? + 5;
    let end = start + text[start..].find(')')?;
    text[start..end].parse().ok()
}

/// Builds the error for an ssh that could not sign in: ssh's own message, and a hint for the
/// known cases.
pub fn ssh_failure(host: &str, lines: &[String]) -> Error {
    let text = lines.join("\n");
    let main = lines
        .iter()
        .rev()
        .find(|line| !line.starts_with('@') && !line.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| "ssh exited without a message".to_owned());
    let hint = if text.contains("Could not resolve hostname") {
        format!(
            "check the name: {host} must be a host name or a Host alias in your ssh configuration (~/.ssh/config, or the file --ssh-config names)"
        )
    } else if text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || text.contains("Host key verification failed")
    {
        format!(
            "{host} presented a host key that differs from the one in your known_hosts file. Connect only if your administrators announced a new key; then remove the old one with the `ssh-keygen -R` command ssh shows above"
        )
    } else if text.contains("Permission denied") || text.contains("Too many authentication") {
        format!(
            "{host} refused your credentials: check the key (IdentityFile) and the user name, and that `ssh {host}` works in a terminal"
        )
    } else if text.contains("Connection refused")
        || text.contains("timed out")
        || text.contains("No route to host")
        || text.contains("Network is unreachable")
    {
        format!(
            "{host} cannot be reached: check the network or VPN, and whether it needs a ProxyJump in ~/.ssh/config"
        )
    } else {
        format!("run `ssh -v {host}` to see why ssh fails")
    };
    Error::failed(format!("ssh to {host} failed: {main}"))
        .with_details(lines.iter().take(20).cloned().collect())
        .with_hint(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_pid_from_check() {
        assert_eq!(
            parse_master_pid("Master running (pid=23645)\n"),
            Some(23645)
        );
        assert_eq!(
            parse_master_pid("Control socket connect(x): No such file"),
            None
        );
    }

    #[test]
    fn option_sets_get_distinct_names() {
        assert_ne!(fnv32("-i\na"), fnv32("-i\nb"));
        assert_eq!(fnv32(""), 0x811c_9dc5);
    }

    #[test]
    fn ssh_messages_get_hints() {
        let lines = |text: &str| text.lines().map(str::to_owned).collect::<Vec<_>>();
        let err = ssh_failure(
            "nohost",
            &lines("ssh: Could not resolve hostname nohost: Name or service not known"),
        );
        assert!(
            err.message.contains("Could not resolve hostname nohost"),
            "{}",
            err.message
        );
        assert!(err.hint.unwrap().contains("Host alias"));

        let err = ssh_failure(
            "h",
            &lines(
                "@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@\nHost key verification failed.",
            ),
        );
        assert_eq!(
            err.message,
            "ssh to h failed: Host key verification failed."
        );
        assert!(err.hint.unwrap().contains("ssh-keygen -R"));

        let err = ssh_failure("h", &lines("u@127.0.0.1: Permission denied (publickey)."));
        assert!(err.hint.unwrap().contains("IdentityFile"));
    }

    #[test]
    fn socket_dir_is_short() {
        let run = Some(PathBuf::from("/run/user/1001"));
        assert_eq!(
            choose_socket_dir(run, 1001),
            PathBuf::from("/run/user/1001/hpc-rstudio")
        );
        let long = Some(PathBuf::from(format!("/{}", "x".repeat(60))));
        assert_eq!(
            choose_socket_dir(long, 7),
            PathBuf::from("/tmp/hpc-rstudio-7")
        );
        assert_eq!(
            choose_socket_dir(Some("rel".into()), 7),
            PathBuf::from("/tmp/hpc-rstudio-7")
        );
    }
}
