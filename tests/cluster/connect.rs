//! `hpc-rstudio connect` against the real sshd on 127.0.0.1:2222, with SLURM and Apptainer
//! behind it. The "laptop" and the cluster are the same machine: the tool runs as a test user
//! and connects to `cluster-login` as that same user.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;

/// Returns the arguments that every `connect` here starts with.
fn base_args(env: &Env) -> Vec<String> {
    vec![
        "connect".to_owned(),
        env.ssh_host.clone(),
        "--remote-command".to_owned(),
        env.bin.display().to_string(),
        "--no-browser".to_owned(),
    ]
}

/// Returns `connect` arguments for a new session of the 2024.12 image in the debug partition,
/// with a time limit of `time`.
fn submit_args(env: &Env, time: &str, extra: &[&str]) -> Vec<String> {
    let mut args = base_args(env);
    let image = env.image("2024.12");
    let options = [
        "--image",
        &image,
        "--partition",
        &env.partition,
        "--time",
        time,
    ];
    args.extend(options.map(str::to_owned));
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

fn start(env: &Env, user: &str, args: &[String]) -> Running {
    let bin = env.bin.display().to_string();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Running::start(as_user(user, &bin, &args))
}

/// Runs `connect` to completion, with a limit: none of these may hang.
fn finish(env: &Env, user: &str, args: &[String], limit: Duration) -> Finished {
    let bin = env.bin.display().to_string();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(as_user(user, &bin, &args), limit)
}

/// Waits until `connect` prints that the tunnel works, and returns what it printed.
fn ready(running: &mut Running) -> Session {
    let line = running.wait_for(
        "RStudio Server is ready: session ",
        Duration::from_secs(180),
    );
    let id = line
        .split("session ")
        .nth(1)
        .and_then(|rest| rest.split([',', ' ']).next())
        .unwrap()
        .to_owned();
    let url = running.value_after("URL:");
    let user = running.value_after("User name:");
    let password = running.value_after("Password:");
    Session {
        id,
        base: url.trim_end_matches('/').to_owned(),
        user,
        password,
    }
}

/// Waits for `connect` to exit and checks that it exited with status 0.
fn exits_cleanly(running: &mut Running, limit: Duration) {
    let status = running.wait_exit(limit);
    assert!(status.success(), "{}", running.seen.join("\n"));
}

fn connect_state(user: &str) -> PathBuf {
    home(user).join(".local/state/hpc-rstudio/connect")
}

/// Reads the pid of the ssh process that carries the tunnel from connect's state file.
fn tunnel_pid(user: &str, id: &str) -> u32 {
    let record = read_json(&connect_state(user).join(format!("{id}.json")));
    record["ssh_pid"].as_u64().unwrap() as u32
}

fn signs_in(session: &Session) {
    let (ok, page) = sign_in(&session.base, &session.user, &session.password, &[]);
    assert!(ok, "sign-in through {} failed:\n{page}", session.base);
    assert!(page.contains("RStudio"), "{page}");
}

/// Waits until the URL responds again and returns how long that took, or panics after `limit`.
fn wait_responding(base: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "2",
            ])
            .arg(format!("{base}/"))
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&out.stdout).into_owned();
        if code.starts_with('2') || code.starts_with('3') {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{base} did not respond within {} s", limit.as_secs());
}

/// Returns `status --json` of a session, read on this machine.
fn session_status(env: &Env, user: &str, id: &str) -> serde_json::Value {
    let status = tool(env, user, &["status", "--json", id]).success();
    serde_json::from_str(&status.stdout()).unwrap()
}

fn session_state(env: &Env, user: &str, id: &str) -> String {
    session_status(env, user, id)["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Starts an ssh tunnel as `user` that listens on `port`, as an old forgotten tunnel would.
fn stale_tunnel(user: &str, port: u16) -> Running {
    let forward = format!("127.0.0.1:{port}:127.0.0.1:9");
    let tunnel = Running::start(as_user(
        user,
        "ssh",
        &[
            "-N",
            "-o",
            "ControlPath=none",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            &forward,
            "cluster-login",
        ],
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the stale tunnel did not open");
        std::thread::sleep(Duration::from_millis(100));
    }
    tunnel
}

/// Creates an empty directory owned by the user in their home, for test-local ssh files.
fn user_dir(user: &str, name: &str) -> PathBuf {
    let dir = home(user).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let status = Command::new("runuser")
        .args(["-u", user, "--", "mkdir", "-m", "0700", "-p"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

fn write_as(user: &str, path: &Path, text: &str, mode: &str) {
    std::fs::write(path, text).unwrap();
    let status = Command::new("chown")
        .arg(format!("{user}:{user}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("chmod").arg(mode).arg(path).status().unwrap();
    assert!(status.success());
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn signs_in_detaches_and_reattaches() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    reset_user(user);
    let mut running = start(&env, user, &submit_args(&env, "15", &[]));
    let session = ready(&mut running);
    // A job that starts within one poll goes from pending to ready without a "starting" line.
    for event in ["Submitted job", "Job "] {
        running.wait_for(event, Duration::from_secs(5));
    }
    signs_in(&session);

    // The password is on no command line, and the local state is private and contains no secret.
    assert_eq!(
        processes_with_argv_containing(&session.password),
        Vec::<String>::new()
    );
    let state = connect_state(user);
    assert_eq!(mode(&state), 0o700);
    for file in walk(&state) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains(&session.password), "{}", file.display());
    }
    assert_eq!(
        mode(Path::new(&format!("/tmp/hpc-rstudio-{}", uid_of(user)))),
        0o700
    );

    // The sign-in page: not for another user, once for this one, then gone.
    let link = running.value_after("Sign-in link (one use, 60 s):");
    let other = curl(&[&link]);
    assert!(other.starts_with("HTTP/1.0 403"), "{other}");
    let page = run(
        as_user(user, "curl", &["-sS", "-i", "--max-time", "10", &link]),
        Duration::from_secs(20),
    )
    .success()
    .stdout();
    let action = format!("action=\"{}/auth-do-sign-in\"", session.base);
    assert!(page.contains(&action), "{page}");
    assert!(page.contains(&session.password), "{page}");
    let again = run(
        as_user(user, "curl", &["-sS", "--max-time", "10", &link]),
        Duration::from_secs(20),
    );
    assert!(
        !again.output.status.success(),
        "served twice\n{}",
        again.explain()
    );

    // Ctrl-C closes the tunnel and leaves the job running.
    running.signal("INT");
    exits_cleanly(&mut running, Duration::from_secs(60));
    running.wait_for(
        &format!(
            "hpc-rstudio connect {} --attach {}",
            env.ssh_host, session.id
        ),
        Duration::from_secs(1),
    );
    assert_eq!(session_state(&env, user, &session.id), "ready");
    assert!(!state.join(format!("{}.json", session.id)).exists());

    // --attach ID brings it back, with the same password.
    let mut args = base_args(&env);
    args.extend(["--attach".to_owned(), session.id.clone()]);
    let mut attached = start(&env, user, &args);
    let again = ready(&mut attached);
    assert_eq!(again.id, session.id);
    assert_eq!(again.password, session.password);
    signs_in(&again);

    // --list works through the same shared connection. --stop ends the session, and the
    // attached connect reports the end and exits.
    let mut args = base_args(&env);
    args.push("--list".to_owned());
    let list = finish(&env, user, &args, Duration::from_secs(60)).success();
    assert!(list.stdout().contains(&session.id), "{}", list.explain());
    let mut args = base_args(&env);
    args.extend(["--stop".to_owned(), session.id.clone()]);
    finish(&env, user, &args, Duration::from_secs(240)).success();
    assert_eq!(session_state(&env, user, &session.id), "stopped");
    attached.wait_for("has ended", Duration::from_secs(120));
    exits_cleanly(&mut attached, Duration::from_secs(30));
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn attach_picks_latest_session() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    reset_user(user);
    let submitted = tool(
        &env,
        user,
        &["submit", "--image", &env.image("2024.12"), "--time", "15"],
    )
    .success();
    let id = submitted
        .stdout()
        .lines()
        .find_map(|l| l.strip_prefix("RStudio Server is ready: session "))
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_owned();
    let mut args = base_args(&env);
    args.push("--attach".to_owned());
    let mut attached = start(&env, user, &args);
    let session = ready(&mut attached);
    assert_eq!(session.id, id);
    signs_in(&session);

    // A cancelled job ends connect, which says so.
    let status = session_status(&env, user, &id);
    let job = status["job"].as_str().unwrap().to_owned();
    run(as_user(user, "scancel", &[&job]), Duration::from_secs(60)).success();
    attached.wait_for("has ended: the job was cancelled", Duration::from_secs(120));
    exits_cleanly(&mut attached, Duration::from_secs(30));
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn ctrl_c_while_pending_keeps_job() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    reset_user(user);
    // A job that may not start for an hour stays pending, with BeginTime as its reason.
    let args = submit_args(&env, "15", &["--sbatch-arg=--begin=now+3600"]);
    let mut running = start(&env, user, &args);
    let submitted = running.wait_for("Submitted job", Duration::from_secs(120));
    let id = submitted.rsplit(' ').next().unwrap().to_owned();
    running.wait_for("PENDING (BeginTime)", Duration::from_secs(60));

    running.signal("INT");
    exits_cleanly(&mut running, Duration::from_secs(60));
    running.wait_for("stays queued", Duration::from_secs(1));
    running.wait_for(&format!("--attach {id}"), Duration::from_secs(1));
    assert_eq!(session_state(&env, user, &id), "pending");

    let mut args = base_args(&env);
    args.extend(["--stop".to_owned(), id.clone()]);
    let stopped = finish(&env, user, &args, Duration::from_secs(120)).success();
    assert!(
        stopped.stderr().contains("Cancelled pending job"),
        "{}",
        stopped.explain()
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn time_limit_end_is_reported() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    reset_user(user);
    // Two minutes, and RStudio is told to save 30 s before the end. SLURM may send that signal
    // up to 60 s early (sbatch(1), --signal), so a one-minute job could end before it is ready.
    let args = submit_args(&env, "2", &["--save-lead", "30"]);
    let mut running = start(&env, user, &args);
    let session = ready(&mut running);
    signs_in(&session);
    running.wait_for("has ended: ", Duration::from_secs(180));
    running.wait_for("time limit", Duration::from_secs(1));
    exits_cleanly(&mut running, Duration::from_secs(30));
    assert!(
        !connect_state(user)
            .join(format!("{}.json", session.id))
            .exists()
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn killed_tunnel_reconnects() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    reset_user(user);
    let mut running = start(&env, user, &submit_args(&env, "15", &["--stop-on-exit"]));
    let session = ready(&mut running);
    signs_in(&session);

    let first = tunnel_pid(user, &session.id);
    let killed = Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    running.wait_for("Reconnected after", Duration::from_secs(60));
    signs_in(&session);
    let second = tunnel_pid(user, &session.id);
    assert_ne!(first, second);

    // --stop-on-exit: Ctrl-C stops the session as well.
    running.signal("INT");
    exits_cleanly(&mut running, Duration::from_secs(240));
    assert_eq!(session_state(&env, user, &session.id), "stopped");
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn socket_session_is_tunnelled() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    reset_user(user);
    // The compute node is the ssh host here, so the tunnel can reach the server's socket.
    let args = submit_args(&env, "15", &["--socket", "--stop-on-exit"]);
    let mut running = start(&env, user, &args);
    let session = ready(&mut running);
    signs_in(&session);
    let status = session_status(&env, user, &session.id);
    assert!(status["connection"]["socket"].is_string(), "{status}");
    running.signal("INT");
    exits_cleanly(&mut running, Duration::from_secs(240));
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn stale_tunnel_port_is_skipped() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    reset_user(user);
    // An old tunnel listens on the first port connect would try.
    let _stale = stale_tunnel(user, 8787);
    let mut running = start(&env, user, &submit_args(&env, "15", &["--stop-on-exit"]));
    let session = ready(&mut running);
    assert!(!session.base.ends_with(":8787"), "{}", session.base);
    signs_in(&session);
    running.signal("INT");
    running.wait_exit(Duration::from_secs(240));
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn pinned_busy_port_names_holder() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    reset_user(user);
    let port = free_port();
    let stale = stale_tunnel(user, port);
    let ssh_pid = stale.tool_pid();
    let port_text = port.to_string();
    let args = submit_args(&env, "15", &["--local-port", &port_text]);
    let finished = finish(&env, user, &args, Duration::from_secs(60));
    finished.fails_with(
        2,
        &[
            &format!("local port {port} is in use by process {ssh_pid}"),
            "ssh -N",
            "hint:",
        ],
    );
    // Nothing was submitted for it.
    let list = tool(&env, user, &["list", "--json"]).success();
    assert_eq!(list.stdout().trim(), "[]", "{}", list.explain());
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn broken_image_opens_no_tunnel() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    reset_user(user);
    let mut args = base_args(&env);
    let image = env.image("broken");
    args.extend(["--image", &image, "--time", "5"].map(str::to_owned));
    let finished = finish(&env, user, &args, Duration::from_secs(240));

    // The job's state, exit code and the server's log lines, from the far side.
    let finished = finished.fails_with(
        1,
        &[
            "error: on cluster-login: RStudio Server did not start",
            "FAILED",
            "exit code",
            "  | ",
            "unrecognised option",
            "hint:",
        ],
    );

    // No URL was printed, and no tunnel recorded.
    assert!(
        !finished.stdout().contains("URL:"),
        "{}",
        finished.explain()
    );
    assert!(
        !finished.stdout().contains("http://"),
        "{}",
        finished.explain()
    );
    assert!(
        std::fs::read_dir(connect_state(user))
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".json")),
        "a tunnel was recorded"
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn ssh_failures_are_reported() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    reset_user(user);
    let limit = Duration::from_secs(60);

    // An unknown host alias.
    let mut args = base_args(&env);
    args[1] = "no-such-host.invalid".to_owned();
    args.push("--list".to_owned());
    finish(&env, user, &args, limit).fails_with(
        1,
        &[
            "ssh to no-such-host.invalid failed",
            "Could not resolve hostname",
            "hint:",
        ],
    );

    // A key the server refuses, from a test-local ssh configuration.
    let dir = user_dir(user, "connect-ssh-test");
    let key = dir.join("wrong_key");
    run(
        as_user(
            user,
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                &key.display().to_string(),
            ],
        ),
        limit,
    )
    .success();
    let config = dir.join("config");
    write_as(
        user,
        &config,
        &format!(
            "Host {}\n  HostName 127.0.0.1\n  Port 2222\n  IdentityFile {}\n  IdentitiesOnly yes\n  BatchMode yes\n  UserKnownHostsFile {}/.ssh/known_hosts\n",
            env.ssh_host,
            key.display(),
            home(user).display()
        ),
        "0600",
    );
    let mut args = base_args(&env);
    args.extend([
        "--ssh-config".to_owned(),
        config.display().to_string(),
        "--list".to_owned(),
    ]);
    finish(&env, user, &args, limit).fails_with(
        1,
        &["Permission denied (publickey)", "refused your credentials"],
    );

    // A host key that differs from the one in known_hosts.
    let known = dir.join("known_hosts");
    write_as(
        user,
        &known,
        "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGQ0ZmFrZWtleWZha2VrZXlmYWtla2V5ZmFrZWtleQAA\n",
        "0600",
    );
    let mut args = base_args(&env);
    args.extend([
        "--ssh-option".to_owned(),
        format!("UserKnownHostsFile={}", known.display()),
        "--list".to_owned(),
    ]);
    finish(&env, user, &args, limit).fails_with(
        1,
        &[
            "Host key verification failed",
            "REMOTE HOST IDENTIFICATION HAS CHANGED",
            "ssh-keygen -R",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn remote_program_checked_and_installed() {
    let _serial = serial();
    let env = Env::load();
    // The second user has no hpc-rstudio on the PATH of the far side.
    let user = env.user(1);
    reset_user(user);
    let installed = home(user).join(".local/bin/hpc-rstudio");
    let _ = std::fs::remove_file(&installed);
    let limit = Duration::from_secs(120);
    let host = env.ssh_host.clone();
    let list = |extra: &[&str]| {
        let mut args = vec!["connect".to_owned(), host.clone(), "--list".to_owned()];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        finish(&env, user, &args, limit)
    };
    list(&[]).fails_with(
        1,
        &["hpc-rstudio is not installed on cluster-login", "--install"],
    );

    // Another minor version is refused, naming both.
    let dir = user_dir(user, "connect-version-test");
    let fake = dir.join("hpc-rstudio");
    write_as(user, &fake, "#!/bin/sh\necho 'hpc-rstudio 9.9.0'\n", "0755");
    list(&["--remote-command", &fake.display().to_string()]).fails_with(
        1,
        &[
            "hpc-rstudio 9.9.0",
            "this one is hpc-rstudio 0.",
            "same major and minor",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);

    // --install copies this program to ~/.local/bin there, and then it works.
    let finished = list(&["--install"]).success();
    assert!(
        finished.stderr().contains("Installed hpc-rstudio"),
        "{}",
        finished.explain()
    );
    assert_eq!(mode(&installed), 0o755);
    list(&[]).success();
    let _ = std::fs::remove_file(&installed);
}

/// Not a pass/fail test: measures how long the URL is unreachable after the tunnel's ssh
/// process is killed, over several rounds, and prints the times (see BENCHMARKS.md).
#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn reconnect_time_benchmark() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    reset_user(user);
    let mut running = start(&env, user, &submit_args(&env, "15", &["--stop-on-exit"]));
    let session = ready(&mut running);
    wait_responding(&session.base, Duration::from_secs(10));
    let mut times = Vec::new();
    for round in 0..5 {
        let pid = tunnel_pid(user, &session.id);
        let killed = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        times.push(wait_responding(&session.base, Duration::from_secs(120)));

        // Wait until connect has recorded the new ssh process before killing it again.
        let deadline = Instant::now() + Duration::from_secs(30);
        while tunnel_pid(user, &session.id) == pid && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("round {round}: reachable again after {:?}", times[round]);
    }
    times.sort();
    println!(
        "reconnect time over {} rounds: min {:?}, median {:?}, max {:?}",
        times.len(),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
    running.signal("INT");
    running.wait_exit(Duration::from_secs(240));
}
