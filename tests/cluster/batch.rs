//! `hpc-rstudio submit` and the session commands against the real SLURM and sshd.

use std::time::Duration;

use crate::harness::*;

/// Runs `submit` and returns the parsed session (with `base` still unset) and its tunnel line.
fn submit(env: &Env, user: &str, extra: &[&str]) -> (Finished, String, String, String) {
    let mut args = vec![
        "submit",
        "--login-host",
        &env.ssh_host,
        "--partition",
        &env.partition,
        "--image",
    ];
    let image = env.image("2024.12");
    args.push(&image);
    args.extend_from_slice(extra);
    let finished = tool(env, user, &args).success();
    let stdout = finished.stdout();
    let find = |label: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {label:?} in output\n{}", finished.explain()))
    };
    let tunnel = find("ssh -N -L");
    let password = find("Password:");
    let id = submitted_session_id(&stdout);
    (finished, id, format!("ssh -N -L {tunnel}"), password)
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn submit_reaches_server_through_ssh_tunnel() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    reset_user(user);
    let (finished, id, tunnel, password) =
        submit(&env, user, &["--time", "10", "--cpus", "3", "--mem", "1G"]);
    assert!(
        tunnel.ends_with(&format!("{user}@{}", env.ssh_host)),
        "{tunnel}"
    );

    // Open the printed tunnel, with another local port in place of 8787 (which may be taken).
    let local = free_port();
    let words: Vec<String> = tunnel
        .split_whitespace()
        .map(|w| {
            if w.starts_with("8787:") {
                w.replacen("8787", &local.to_string(), 1)
            } else {
                w.to_owned()
            }
        })
        .collect();
    assert_eq!(words[0], "ssh");
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    let mut ssh_args = vec!["-o", "ExitOnForwardFailure=yes"];
    ssh_args.extend(args);
    let _ssh = Running::start(as_user(user, "ssh", &ssh_args));
    let base = format!("http://127.0.0.1:{local}");
    let mut answered = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", local)).is_ok() {
            answered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(answered, "the tunnel did not open\n{}", finished.explain());
    let (ok, page) = sign_in(&base, user, &password, &[]);
    assert!(ok, "sign-in through the tunnel failed:\n{page}");

    // The job got 3 CPUs, and R's thread variables say so.
    let records = rsession_records(user);
    assert!(
        records
            .iter()
            .any(|r| r.1.contains("\"OMP_NUM_THREADS\": \"3\"")
                || r.1.contains("\"OMP_NUM_THREADS\":\"3\"")),
        "{records:?}"
    );

    // The password is in no process's argv and not in the job's output.
    assert_eq!(
        processes_with_argv_containing(&password),
        Vec::<String>::new()
    );
    let dir = state_dir(user, &id);
    let job_out = std::fs::read_to_string(dir.join("job.out")).unwrap();
    assert!(
        !job_out.contains(&password),
        "the password is in the job output:\n{job_out}"
    );

    // status shows it ready with the connection details; list shows it.
    let status = tool(&env, user, &["status", &id]).success();
    assert!(
        status.stdout().contains("State:    ready"),
        "{}",
        status.explain()
    );
    assert!(status.stdout().contains(&password));
    let list = tool(&env, user, &["list"]).success();
    assert!(list.stdout().contains(&id), "{}", list.explain());

    // stop: R sessions save, the job ends.
    tool(&env, user, &["stop", &id]).success();
    let server = read_json(&dir.join("server.json"));
    assert_eq!(server["state"], "stopped", "{server}");
    assert_eq!(server["sessions_suspended"], 1, "{server}");
    assert_eq!(
        server["message"], "stopped with `hpc-rstudio stop`",
        "{server}"
    );
    let marker = records[0]
        .0
        .parent()
        .unwrap()
        .join("suspended-session-data/suspended");
    assert!(marker.exists(), "no saved state at {}", marker.display());
    let logs = tool(&env, user, &["logs", &id]).success();
    assert!(logs.stdout().contains("rserver log"), "{}", logs.explain());
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn time_limit_saves_session() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(1);
    reset_user(user);
    // Two minutes with a 100-second lead: SLURM sends the signal at its first periodic check
    // after 20 s, which comes within 30 s.
    let (_, id, _, password) = submit(&env, user, &["--time", "2", "--save-lead", "100"]);
    let dir = state_dir(user, &id);
    let connection = read_json(&dir.join("connection.json"));
    let port = connection["port"].as_u64().unwrap();
    let (ok, page) = sign_in(&format!("http://127.0.0.1:{port}"), user, &password, &[]);
    assert!(ok, "{page}");
    let records = rsession_records(user);
    assert_eq!(records.len(), 1);
    let marker = records[0]
        .0
        .parent()
        .unwrap()
        .join("suspended-session-data/suspended");
    assert!(
        wait_for_file(&marker, Duration::from_secs(110)),
        "the session was not saved before the time limit"
    );
    let mut stopped = false;
    for _ in 0..60 {
        let server = read_json(&dir.join("server.json"));
        if server["state"] == "stopped" {
            assert_eq!(server["message"], "the job's time limit is near");
            assert_eq!(server["sessions_suspended"], 1);
            assert_eq!(server["sessions_saved"], 1, "{server}");
            stopped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(stopped, "the supervisor did not record the stop");
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn submit_reports_broken_image() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    let image = env.image("broken");
    let finished = tool(&env, user, &["submit", "--time", "5", "--image", &image]);
    finished.fails_with(
        1,
        &[
            "RStudio Server did not start",
            "unrecognised option",
            "FAILED, exit code 1:0",
            "hint:",
        ],
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn script_matches_submission() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    let image = env.image("2024.12");
    let finished = tool(
        &env,
        user,
        &[
            "script",
            "--image",
            &image,
            "--time",
            "1:00:00",
            "--partition",
            &env.short_partition,
            "--sbatch-arg=--comment=x y",
        ],
    )
    .success();
    let text = finished.stdout();
    for expected in [
        "#SBATCH --signal=B:USR2@120",
        "#SBATCH --time=01:00:00",
        &format!("#SBATCH --partition={}", env.short_partition),
        "#SBATCH --comment=x y",
        " job ",
    ] {
        assert!(text.contains(expected), "missing {expected:?}\n{text}");
    }
    let path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(path.path(), &text).unwrap();
    let check = run(
        {
            let mut c = std::process::Command::new("bash");
            c.arg("-n").arg(path.path());
            c
        },
        Duration::from_secs(10),
    );
    assert!(check.output.status.success(), "{}", check.explain());
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn submit_no_wait_then_status_and_stop() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    let image = env.image("2024.12");
    let finished = tool(
        &env,
        user,
        &["submit", "--no-wait", "--time", "5", "--image", &image],
    )
    .success();
    let id = finished.stdout().trim().to_owned();
    let status = tool(&env, user, &["status", "--json", &id]).success();
    let value: serde_json::Value = serde_json::from_str(&status.stdout()).unwrap();
    assert_eq!(value["id"], id.as_str());
    assert!(value["job"].is_string(), "{value}");
    tool(&env, user, &["stop", &id]).success();
    let status = tool(&env, user, &["status", "--json", &id]).success();
    let value: serde_json::Value = serde_json::from_str(&status.stdout()).unwrap();
    assert_ne!(value["state"], "ready", "{value}");
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn plain_scancel_is_not_reported_as_saved() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    reset_user(user);
    let (_, id, _, password) = submit(&env, user, &["--time", "10"]);
    let dir = state_dir(user, &id);
    let connection = read_json(&dir.join("connection.json"));
    let port = connection["port"].as_u64().unwrap();
    let (ok, page) = sign_in(&format!("http://127.0.0.1:{port}"), user, &password, &[]);
    assert!(ok, "{page}");
    // Let the supervisor see the R session, then cancel the job the plain way.
    std::thread::sleep(Duration::from_secs(4));
    let job = read_json(&dir.join("session.json"))["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    run(as_user(user, "scancel", &[&job]), Duration::from_secs(30)).success();
    let mut server = serde_json::Value::Null;
    for _ in 0..60 {
        server = read_json(&dir.join("server.json"));
        if server["state"] == "stopped" || server["state"] == "failed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(server["state"], "stopped", "{server}");
    assert_eq!(
        server["sessions_saved"], 0,
        "a killed R session was reported as saved: {server}"
    );
    let told =
        server["sessions_lost"].as_u64().unwrap() + server["sessions_suspended"].as_u64().unwrap();
    assert_eq!(told, 1, "the R session is not accounted for: {server}");
}
