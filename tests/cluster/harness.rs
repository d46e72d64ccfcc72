//! Test harness for the cluster tests: the environment that `testing/env/start-services.sh`
//! describes, commands run as the non-root test users, and checks that explain their failures.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The test environment, read from the env file the service script writes.
pub struct Env {
    pub users: Vec<String>,
    pub node: String,
    pub partition: String,
    pub short_partition: String,
    pub ssh_host: String,
    pub images: PathBuf,
    pub bin: PathBuf,
}

/// The env file's location; HPCRS_CI_ENV overrides it.
fn env_file() -> PathBuf {
    std::env::var_os("HPCRS_CI_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/hpc-rstudio-ci/env.sh"))
}

impl Env {
    pub fn load() -> Env {
        let path = env_file();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|err| {
            panic!(
                "cannot read {}: {err}; start the test cluster with testing/ci.sh first",
                path.display()
            )
        });
        let value = |key: &str| -> String {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim().trim_matches('\'').to_owned())
                .unwrap_or_else(|| panic!("{key} missing from {}", path.display()))
        };
        let env = Env {
            users: value("HPCRS_TEST_USERS")
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            node: value("HPCRS_NODE"),
            partition: value("HPCRS_PARTITION"),
            short_partition: value("HPCRS_SHORT_PARTITION"),
            ssh_host: value("HPCRS_SSH_HOST"),
            images: PathBuf::from(value("HPCRS_IMAGES")),
            bin: PathBuf::from(value("HPCRS_BIN_DIR")).join("hpc-rstudio"),
        };
        assert!(
            env.bin.exists(),
            "{} is missing; testing/ci.sh installs it",
            env.bin.display()
        );
        env
    }

    pub fn image(&self, name: &str) -> String {
        self.images
            .join(format!("rstudio-{name}.sif"))
            .display()
            .to_string()
    }

    pub fn user(&self, index: usize) -> &str {
        &self.users[index]
    }
}

pub fn home(user: &str) -> PathBuf {
    PathBuf::from("/home").join(user)
}

/// Builds a command that runs `program` as `user` with a clean login-like environment.
pub fn as_user(user: &str, program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", user, "--", "env", "-i"])
        .arg(format!("HOME={}", home(user).display()))
        .arg(format!("USER={user}"))
        .arg(format!("LOGNAME={user}"))
        .arg("PATH=/usr/local/bin:/usr/bin:/bin")
        .arg("LANG=C.UTF-8")
        .arg(program)
        .args(args);
    cmd.current_dir("/");
    cmd
}

/// Runs hpc-rstudio as `user` and waits for it, with a time limit.
pub fn tool(env: &Env, user: &str, args: &[&str]) -> Finished {
    let bin = env.bin.display().to_string();
    run(as_user(user, &bin, args), Duration::from_secs(300))
}

/// A finished command with everything needed to explain a failed check.
pub struct Finished {
    pub shown: String,
    pub output: Output,
}

impl Finished {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    pub fn explain(&self) -> String {
        format!(
            "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.shown,
            self.output.status,
            self.stdout(),
            self.stderr()
        )
    }

    pub fn success(self) -> Finished {
        assert!(
            self.output.status.success(),
            "expected success\n{}",
            self.explain()
        );
        self
    }

    /// Checks the exit code and that stderr contains every one of `texts`.
    pub fn fails_with(self, code: i32, texts: &[&str]) -> Finished {
        assert_eq!(
            self.code(),
            Some(code),
            "wrong exit code\n{}",
            self.explain()
        );
        for text in texts {
            assert!(
                self.stderr().contains(text),
                "stderr lacks {text:?}\n{}",
                self.explain()
            );
        }
        self
    }
}

pub fn run(mut cmd: Command, timeout: Duration) -> Finished {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {shown}: {err}"));
    let pid = child.id();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(timeout) {
        Ok(output) => Finished {
            shown,
            output: output.expect("wait for child"),
        },
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("{shown} did not finish within {} s", timeout.as_secs());
        }
    }
}

/// A long-running command whose stdout and stderr are collected line by line.
pub struct Running {
    pub child: Child,
    pub shown: String,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    pub fn start(mut cmd: Command) -> Running {
        let shown = format!("{cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {shown}: {err}"));
        let (sender, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for (pipe, tag) in [
            (Box::new(out) as Box<dyn std::io::Read + Send>, "out"),
            (Box::new(err), "err"),
        ] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = sender.send(format!("{tag}: {line}"));
                }
            });
        }
        Running {
            child,
            shown,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `text` and returns it, or panics with everything seen.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        if let Some(line) = self.seen.iter().find(|l| l.contains(text)) {
            return line.clone();
        }
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        self.drain();
                        panic!(
                            "{} exited ({status}) before printing {text:?}\n{}",
                            self.shown,
                            self.seen.join("\n")
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.drain();
        panic!(
            "{} did not print {text:?} within {} s\n{}",
            self.shown,
            timeout.as_secs(),
            self.seen.join("\n")
        );
    }

    fn drain(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
            self.seen.push(line);
        }
    }

    /// The value after `label` on a line that contains it, for example the password.
    pub fn value_after(&mut self, label: &str) -> String {
        let line = self.wait_for(label, Duration::from_secs(120));
        line.split_once(label)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap()
    }

    /// Sends a signal to the process (runuser passes it on to the tool).
    pub fn signal(&self, signal: &str) {
        let pid = self.tool_pid();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// The pid of the tool itself: the child of `runuser` and `env` (env execs the tool).
    pub fn tool_pid(&self) -> u32 {
        let runuser = self.child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(pid) = children(runuser).first() {
                return *pid;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("runuser {runuser} has no child");
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.drain();
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        self.drain();
        panic!(
            "{} did not exit within {} s\n{}",
            self.shown,
            timeout.as_secs(),
            self.seen.join("\n")
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Interrupt the tool first so it can clean up, then make sure it is gone.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.tool_pid().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
        }
    }
}

/// The pids whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    all_processes()
        .into_iter()
        .filter(|p| p.ppid == pid)
        .map(|p| p.pid)
        .collect()
}

pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    pub cmdline: String,
}

pub fn all_processes() -> Vec<ProcInfo> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = stat[stat.find('(').unwrap() + 1..close].to_owned();
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(u32::MAX);
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        found.push(ProcInfo {
            pid,
            ppid,
            uid,
            comm,
            cmdline,
        });
    }
    found
}

pub fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The processes of `user` whose command name is one of `names`.
pub fn processes_named(user: &str, names: &[&str]) -> Vec<String> {
    let uid = uid_of(user);
    all_processes()
        .into_iter()
        .filter(|p| p.uid == uid && names.contains(&p.comm.as_str()))
        .map(|p| format!("{} {} {}", p.pid, p.comm, p.cmdline))
        .collect()
}

/// Every process whose command line contains `secret`.
pub fn processes_with_argv_containing(secret: &str) -> Vec<String> {
    all_processes()
        .into_iter()
        .filter(|p| p.cmdline.contains(secret))
        .map(|p| p.cmdline)
        .collect()
}

/// Runs curl (as root: only the network matters) and returns its stdout with headers.
pub fn curl(args: &[&str]) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time", "20"]).args(args);
    let finished = run(cmd, Duration::from_secs(30));
    assert!(
        finished.output.status.success(),
        "curl failed\n{}",
        finished.explain()
    );
    finished.stdout()
}

/// Signs in through `base` (for example http://127.0.0.1:8800) and returns the page that `/`
/// shows afterwards, or the sign-in response when it did not set a cookie.
pub fn sign_in(base: &str, user: &str, password: &str, extra: &[&str]) -> (bool, String) {
    let jar = tempfile::NamedTempFile::new().unwrap();
    let jar_path = jar.path().display().to_string();
    let mut args: Vec<&str> = extra.to_vec();
    let url = format!("{base}/auth-do-sign-in");
    let user_field = format!("username={user}");
    let password_field = format!("password={password}");
    args.extend([
        "-c",
        &jar_path,
        "--data-urlencode",
        &user_field,
        "--data-urlencode",
        &password_field,
        &url,
    ]);
    let response = curl(&args);
    let signed_in = std::fs::read_to_string(jar.path())
        .unwrap_or_default()
        .contains("user-id");
    if !signed_in {
        return (false, response);
    }
    let root = format!("{base}/");
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["-b", &jar_path, &root]);
    (true, curl(&args))
}

/// Waits until `path` exists.
pub fn wait_for_file(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// The mode bits of a file.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every file and directory below `root`.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

/// The rsession records (JSON text) the stand-in wrote under the user's RStudio state.
pub fn rsession_records(user: &str) -> Vec<(PathBuf, String)> {
    let root = home(user).join(".local/share/rstudio/sessions/active");
    walk(&root)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "standin-record.json"))
        .filter_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)))
        .collect()
}

/// Removes the user's hpc-rstudio state and RStudio state, so that a test starts clean.
pub fn reset_user(user: &str) {
    for dir in [
        ".local/state/hpc-rstudio",
        ".local/share/rstudio",
        ".cache/hpc-rstudio",
        ".config/hpc-rstudio",
    ] {
        let _ = std::fs::remove_dir_all(home(user).join(dir));
    }
}

/// Serializes the cluster tests: they share the test users, their homes and one SLURM node.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts `hpc-rstudio run` as `user` and waits until it prints the password.
pub fn start_run(env: &Env, user: &str, args: &[&str]) -> (Running, Session) {
    let bin = env.bin.display().to_string();
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    let mut running = Running::start(as_user(user, &bin, &full));
    let id_line = running.wait_for("Session ", Duration::from_secs(120));
    let id = id_line.split_whitespace().nth(2).unwrap().to_owned();
    let url = running.value_after("URL:");
    let user_name = running.value_after("User name:");
    let password = running.value_after("Password:");
    let base = url.trim_end_matches('/').to_owned();
    (
        running,
        Session {
            id,
            base,
            user: user_name,
            password,
        },
    )
}

/// What `run` or `submit` printed about a ready session.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    /// The server's base URL without a trailing slash, or the tunnel's local URL.
    pub base: String,
    pub user: String,
    pub password: String,
}

pub fn state_dir(user: &str, id: &str) -> PathBuf {
    home(user)
        .join(".local/state/hpc-rstudio/sessions")
        .join(id)
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

/// A free TCP port on 127.0.0.1 at this moment.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The whole environment the newest rsession of `user` saw, as KEY=VALUE lines.
pub fn rsession_environ(user: &str) -> Vec<String> {
    let root = home(user).join(".local/share/rstudio/sessions/active");
    let mut files: Vec<PathBuf> = walk(&root)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "standin-environ"))
        .collect();
    files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    let newest = files
        .last()
        .unwrap_or_else(|| panic!("no rsession environment under {}", root.display()));
    std::fs::read_to_string(newest)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The value of `key` in an environment listing, if set.
pub fn env_value(environ: &[String], key: &str) -> Option<String> {
    environ
        .iter()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
}

/// Writes `text` to `path` as `user`, creating the parent directory.
pub fn write_as(user: &str, path: &Path, text: &str) {
    let script = "mkdir -p \"$(dirname \"$1\")\" && printf '%s' \"$2\" > \"$1\"";
    let path = path.display().to_string();
    run(
        as_user(user, "sh", &["-c", script, "sh", &path, text]),
        Duration::from_secs(10),
    )
    .success();
}

/// The command line of the user's running rserver processes.
pub fn rserver_argv(user: &str) -> Vec<String> {
    let uid = uid_of(user);
    all_processes()
        .into_iter()
        .filter(|p| p.uid == uid && p.comm == "rserver")
        .map(|p| p.cmdline)
        .collect()
}

/// The file system type of `path`, from `stat -f`.
pub fn fs_type_of(path: &Path) -> String {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if text == "ext2/ext3" {
        "ext4".to_owned()
    } else {
        text
    }
}

/// Cancels the user's jobs and waits until none of the user's RStudio processes are left, so a
/// test that checks for leftovers does not see those of an earlier test that failed midway.
pub fn quiesce_user(user: &str) {
    let mut scancel = Command::new("scancel");
    scancel.args(["-u", user]);
    let _ = run(scancel, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && !processes_named(user, &["rserver", "rsession", "starter"]).is_empty()
    {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The session id from `submit`'s "RStudio Server is ready: session ID, ..." line.
pub fn submitted_session_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("RStudio Server is ready: session "))
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no ready line in submit's output:\n{stdout}"))
        .to_owned()
}
