//! `hpc-rstudio run`: a server in the foreground on this node.

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::*;

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn run_serves_sign_in_and_stops_cleanly() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    quiesce_user(user);
    reset_user(user);
    let (mut running, session) = start_run(&env, user, &["--image", &env.image("2024.12")]);

    // The server answers with the sign-in page, and a real sign-in with the printed password works.
    let root = curl(&[&format!("{}/", session.base)]);
    assert!(
        root.contains("302") && root.contains("auth-sign-in"),
        "{root}"
    );
    assert_eq!(session.user, user);
    let (ok, page) = sign_in(&session.base, &session.user, &session.password, &[]);
    assert!(ok, "sign-in with the printed password failed:\n{page}");
    assert!(page.contains("RStudio"), "{page}");
    let (ok, _) = sign_in(&session.base, &session.user, "wrong-password", &[]);
    assert!(!ok, "a wrong password signed in");

    // The password never appears in any process's argv.
    assert_eq!(
        processes_with_argv_containing(&session.password),
        Vec::<String>::new()
    );

    // rsession saw the explicit environment.
    let records = rsession_records(user);
    assert_eq!(records.len(), 1, "{records:?}");
    let record: serde_json::Value = serde_json::from_str(&records[0].1).unwrap();
    let env_of = |key: &str| {
        record["env"][key]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_default()
    };
    assert_eq!(env_of("USER"), user);
    assert!(
        env_of("R_LIBS_USER").starts_with(&format!("/home/{user}/R/hpc-rstudio/")),
        "{record}"
    );
    assert!(
        std::path::Path::new(&env_of("R_LIBS_USER")).is_dir(),
        "R_LIBS_USER was not created"
    );
    assert_eq!(env_of("RSTUDIO_SESSION_TIMEOUT"), "0");
    assert_eq!(env_of("LANG"), "en_US.UTF-8");
    assert!(!env_of("TZ").is_empty());
    assert!(env_of("OMP_NUM_THREADS").parse::<u32>().unwrap() >= 1);
    assert_eq!(env_of("OMP_NUM_THREADS"), env_of("OPENBLAS_NUM_THREADS"));

    // Session records are private.
    let dir = state_dir(user, &session.id);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("connection.json")), 0o600);
    assert_eq!(mode(&dir.join("rserver.log")), 0o600);
    let node_dir =
        std::path::PathBuf::from(format!("/tmp/hpc-rstudio-{}/{}", uid_of(user), session.id));
    assert_eq!(mode(node_dir.parent().unwrap()), 0o700);
    assert!(node_dir.join("var-lib-rstudio-server").is_dir());

    // Ctrl-C: R sessions save their state, then everything stops and the private files go.
    running.signal("INT");
    let status = running.wait_exit(Duration::from_secs(90));
    assert!(
        status.success(),
        "run exited with {status}\n{}",
        running.seen.join("\n")
    );
    let marker = records[0]
        .0
        .parent()
        .unwrap()
        .join("suspended-session-data/suspended");
    assert!(
        marker.exists(),
        "rsession did not save its state: {} is missing",
        marker.display()
    );
    assert!(!node_dir.exists(), "{} was left behind", node_dir.display());
    assert_eq!(
        processes_named(user, &["rserver", "rsession", "starter", "squashfuse_ll"]),
        Vec::<String>::new()
    );
    let server = read_json(&dir.join("server.json"));
    assert_eq!(server["state"], "stopped");
    assert_eq!(server["sessions_suspended"], 1);
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn run_sigterm_stops_cleanly() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    quiesce_user(user);
    let (mut running, session) = start_run(&env, user, &["--image", &env.image("2024.12")]);
    running.signal("TERM");
    let status = running.wait_exit(Duration::from_secs(90));
    assert!(
        status.success(),
        "run exited with {status}\n{}",
        running.seen.join("\n")
    );
    let server = read_json(&state_dir(user, &session.id).join("server.json"));
    assert_eq!(server["state"], "stopped");
    assert_eq!(
        processes_named(user, &["rserver", "rsession"]),
        Vec::<String>::new()
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn broken_image_reports_log_lines() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    quiesce_user(user);
    let finished = tool(&env, user, &["run", "--image", &env.image("broken")]);
    finished.fails_with(
        1,
        &[
            "rserver exited before it answered",
            "unrecognised option",
            "hint:",
        ],
    );
    assert_eq!(
        processes_named(user, &["rserver", "rsession", "starter"]),
        Vec::<String>::new()
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn two_users_side_by_side() {
    let _serial = serial();
    let env = Env::load();
    let (first, second) = (env.user(0), env.user(1));
    let image = env.image("2024.12");
    let (_run_a, a) = start_run(&env, first, &["--image", &image]);
    let (_run_b, b) = start_run(&env, second, &["--image", &image]);
    // A second session of the same user on the same node does not collide with the first.
    let (_run_c, c) = start_run(&env, first, &["--image", &image]);
    assert_ne!(a.base, b.base);
    assert_ne!(a.base, c.base);

    for session in [&a, &b, &c] {
        let (ok, page) = sign_in(&session.base, &session.user, &session.password, &[]);
        assert!(ok, "sign-in to {} failed:\n{page}", session.base);
    }
    // Neither can sign in to the other's server, with their own or the other's credentials.
    assert!(
        !sign_in(&a.base, &b.user, &b.password, &[]).0,
        "second user signed in to the first's server"
    );
    assert!(
        !sign_in(&b.base, &a.user, &a.password, &[]).0,
        "first user signed in to the second's server"
    );
    assert!(
        !sign_in(&a.base, &a.user, &c.password, &[]).0,
        "one session's password opened another"
    );

    // Neither can read the other's private files.
    let theirs = [
        state_dir(second, &b.id)
            .join("connection.json")
            .display()
            .to_string(),
        format!("/tmp/hpc-rstudio-{}", uid_of(second)),
    ];
    for path in &theirs {
        let finished = run(as_user(first, "cat", &[path]), Duration::from_secs(10));
        assert!(
            !finished.output.status.success(),
            "{first} could read {path}"
        );
        let finished = run(as_user(first, "ls", &[path]), Duration::from_secs(10));
        assert!(
            !finished.output.status.success() || path.ends_with(".json"),
            "{first} could list {path}"
        );
    }
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn foreign_tmp_rstudio_server_is_harmless() {
    let _serial = serial();
    let env = Env::load();
    let (first, second) = (env.user(0), env.user(1));
    // Another user's leftovers in the host's /tmp, as RStudio leaves them without a private /tmp.
    let setup = "mkdir -p /tmp/rstudio-server && chmod 700 /tmp/rstudio-server && \
                 echo key > /tmp/rstudio-server/secure-cookie-key && chmod 600 /tmp/rstudio-server/secure-cookie-key";
    let _ = run(
        as_user(second, "sh", &["-c", setup]),
        Duration::from_secs(10),
    );
    let (_running, session) = start_run(&env, first, &["--image", &env.image("2022.07")]);
    let (ok, page) = sign_in(&session.base, &session.user, &session.password, &[]);
    assert!(ok, "{page}");
    let _ = run(
        as_user(second, "rm", &["-rf", "/tmp/rstudio-server"]),
        Duration::from_secs(10),
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn older_releases_start() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    // 1.3 needs a writable /run; 1.4 has no rserver on PATH and needs a database; 2022.07 needs
    // --server-user.
    for release in ["1.3", "1.4", "2022.07"] {
        let (mut running, session) = start_run(&env, user, &["--image", &env.image(release)]);
        let (ok, page) = sign_in(&session.base, &session.user, &session.password, &[]);
        assert!(ok, "release {release}: {page}");
        running.signal("TERM");
        assert!(
            running.wait_exit(Duration::from_secs(90)).success(),
            "release {release}"
        );
    }
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn socket_mode_serves_on_private_socket() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    let bin = env.bin.display().to_string();
    let image = env.image("2024.12");
    let mut running = Running::start(as_user(user, &bin, &["run", "--socket", "--image", &image]));
    let url = running.value_after("URL:");
    let password = running.value_after("Password:");
    let socket = url.strip_prefix("unix:").expect("socket URL").to_owned();
    assert_eq!(
        mode(std::path::Path::new(&socket)) & 0o777,
        0o700,
        "socket mode"
    );
    let (ok, page) = sign_in(
        "http://localhost",
        user,
        &password,
        &["--unix-socket", &socket],
    );
    assert!(ok, "{page}");
    // Another user cannot even connect.
    let other = env.user(1);
    let finished = run(
        as_user(
            other,
            "curl",
            &["-sS", "--unix-socket", &socket, "http://localhost/"],
        ),
        Duration::from_secs(20),
    );
    assert!(
        !finished.output.status.success(),
        "{other} reached the socket\n{}",
        finished.explain()
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn pinned_busy_port_is_an_error() {
    let _serial = serial();
    let env = Env::load();
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let finished = tool(
        &env,
        env.user(0),
        &["run", "--port", &port, "--image", &env.image("2024.12")],
    );
    finished.fails_with(
        2,
        &[&format!("port {port} is already in use on {}", env.node)],
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn odd_image_path_keeps_wrapper_intact() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    // A path with parentheses, quotes and spaces ends up in R_LIBS_USER in the generated wrapper.
    let dir = tempfile::Builder::new()
        .prefix("odd")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let odd = dir.path().join("rstudio (it's) \"v8(x2)\".sif");
    std::fs::copy(env.image("2024.12"), &odd).unwrap();
    let (_running, session) = start_run(&env, user, &["--image", &odd.display().to_string()]);
    let (ok, page) = sign_in(&session.base, &session.user, &session.password, &[]);
    assert!(ok, "{page}");
    let records = rsession_records(user);
    let text = records
        .iter()
        .map(|r| r.1.clone())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("rstudio (it's)"),
        "R_LIBS_USER lost the odd name:\n{text}"
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn lost_port_race_retries_another_port() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(1);
    reset_user(user);
    // Two adjacent free ports form the whole range, so the retry has exactly one other choice.
    let first = (20000..30000u16)
        .find(|p| {
            std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok()
                && std::net::TcpListener::bind(("0.0.0.0", p + 1)).is_ok()
        })
        .unwrap();
    let config = home(user).join(".config/hpc-rstudio/config.toml");
    let setup = format!(
        "mkdir -p {} && printf 'port_range = \"{first}-{}\"\\n' > {}",
        config.parent().unwrap().display(),
        first + 1,
        config.display()
    );
    run(
        as_user(user, "sh", &["-c", &setup]),
        Duration::from_secs(10),
    )
    .success();

    // Another program takes the chosen port between the check and rserver's start: it watches
    // the session record, where the supervisor writes the port just before starting rserver.
    let sessions = home(user).join(".local/state/hpc-rstudio/sessions");
    let grabber = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            for path in walk(&sessions)
                .into_iter()
                .filter(|p| p.ends_with("server.json"))
            {
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                if let Some(port) = value["port"].as_u64() {
                    if let Ok(listener) = std::net::TcpListener::bind(("0.0.0.0", port as u16)) {
                        return Some((port as u16, listener));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    });
    let (_running, session) = start_run(&env, user, &["--image", &env.image("2024.12")]);
    let (grabbed, _listener) = grabber
        .join()
        .unwrap()
        .expect("the grabber never saw a port");
    let _ = std::fs::remove_file(&config);

    assert!(
        !session.base.ends_with(&format!(":{grabbed}")),
        "served on the grabbed port {grabbed}"
    );
    let log = std::fs::read_to_string(state_dir(user, &session.id).join("rserver.log")).unwrap();
    assert!(
        log.contains("Address already in use"),
        "rserver did not lose the race:\n{log}"
    );
    let (ok, page) = sign_in(&session.base, &session.user, &session.password, &[]);
    assert!(ok, "{page}");
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn killed_session_leftovers_are_removed() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(1);
    let (running, first) = start_run(&env, user, &["--image", &env.image("2024.12")]);
    let first_dir = PathBuf::from(format!("/tmp/hpc-rstudio-{}/{}", uid_of(user), first.id));
    assert!(first_dir.exists());
    // SIGKILL leaves the supervisor no chance to clean up, as when a job is killed hard. Its
    // container processes are found first, to be killed by pid as well.
    let supervisor = running.tool_pid();
    let mut tree = vec![supervisor];
    let procs = all_processes();
    let mut index = 0;
    while index < tree.len() {
        let parent = tree[index];
        tree.extend(procs.iter().filter(|p| p.ppid == parent).map(|p| p.pid));
        index += 1;
    }
    for pid in &tree {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let mut running = running;
    running.wait_exit(Duration::from_secs(30));
    assert!(
        first_dir.exists(),
        "the killed session's directory should still be there"
    );
    let status = tool(&env, user, &["status", &first.id]).success();
    assert!(
        status.stdout().contains("State:    killed"),
        "{}",
        status.explain()
    );

    // The next session on the node removes it.
    let (_running, second) = start_run(&env, user, &["--image", &env.image("2024.12")]);
    assert_ne!(second.id, first.id);
    assert!(
        !first_dir.exists(),
        "{} was left behind",
        first_dir.display()
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn clean_removes_only_ended_sessions() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(1);
    let (mut ended, ended_session) = start_run(&env, user, &["--image", &env.image("2024.12")]);
    ended.signal("TERM");
    assert!(ended.wait_exit(Duration::from_secs(60)).success());
    let (_running, live) = start_run(&env, user, &["--image", &env.image("2024.12")]);

    let dry = tool(&env, user, &["clean", "--dry-run"]).success();
    assert!(
        dry.stdout()
            .contains(&format!("would remove {}", ended_session.id)),
        "{}",
        dry.explain()
    );
    assert!(state_dir(user, &ended_session.id).exists());

    let cleaned = tool(&env, user, &["clean"]).success();
    assert!(
        cleaned
            .stdout()
            .contains(&format!("removed {}", ended_session.id)),
        "{}",
        cleaned.explain()
    );
    assert!(
        !cleaned.stdout().contains(&live.id),
        "a running session was removed\n{}",
        cleaned.explain()
    );
    assert!(!state_dir(user, &ended_session.id).exists());
    assert!(state_dir(user, &live.id).join("connection.json").exists());
}
