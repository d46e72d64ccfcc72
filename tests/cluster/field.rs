//! Failures that people hit with RStudio under Apptainer on clusters, each set up for real: the
//! launch either prevents them by construction or names the cause and the fix.

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::*;

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn database_lives_in_private_node_directory() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    // The image's own /var/lib/rstudio-server is read-only and holds a root-only key.
    let listing = run(
        as_user(
            user,
            "apptainer",
            &[
                "exec",
                &env.image("2024.12"),
                "ls",
                "-ln",
                "/var/lib/rstudio-server",
            ],
        ),
        Duration::from_secs(60),
    )
    .success();
    assert!(
        listing.stdout().contains("secure-cookie-key"),
        "{}",
        listing.explain()
    );
    let (_running, session) = start_run(&env, user, &["--image", &env.image("2024.12")]);
    let node_dir = PathBuf::from(format!("/tmp/hpc-rstudio-{}/{}", uid_of(user), session.id));
    let var_lib: Vec<String> = walk(&node_dir.join("var-lib-rstudio-server"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        var_lib.iter().any(|n| n.ends_with(".sqlite")),
        "no database in the private directory: {var_lib:?}"
    );
    let conf = node_dir.join("run/hpc-rstudio/database.conf");
    assert_eq!(mode(&conf), 0o600);
    assert!(
        std::fs::read_to_string(&conf)
            .unwrap()
            .contains("provider=sqlite")
    );
    assert_eq!(
        crate::harness::fs_type_of(&node_dir),
        "ext4",
        "the database must be on node-local storage"
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn reserved_bind_destination_is_rejected() {
    let _serial = serial();
    let env = Env::load();
    let finished = tool(
        &env,
        env.user(0),
        &[
            "run",
            "--image",
            &env.image("2024.12"),
            "--bind",
            "/etc:/var/lib/rstudio-server:ro",
        ],
    );
    finished.fails_with(2, &["bind destination /var/lib/rstudio-server", "reserved"]);
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn release_1_3_gets_private_run() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    let (_running, session) = start_run(&env, user, &["--image", &env.image("1.3")]);
    let list = PathBuf::from(format!(
        "/tmp/hpc-rstudio-{}/{}/run/rstudio-server/revocation-list",
        uid_of(user),
        session.id
    ));
    assert!(
        list.exists(),
        "no revocation list in the private /run: {}",
        list.display()
    );
    assert!(!PathBuf::from("/run/rstudio-server/revocation-list").exists());
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn shared_tmp_with_foreign_leftovers_is_refused() {
    let _serial = serial();
    let env = Env::load();
    let (first, second) = (env.user(0), env.user(1));
    run(
        as_user(
            second,
            "sh",
            &[
                "-c",
                "mkdir -p /tmp/rstudio-server && chmod 700 /tmp/rstudio-server",
            ],
        ),
        Duration::from_secs(10),
    )
    .success();
    let finished = tool(
        &env,
        first,
        &["run", "--shared-tmp", "--image", &env.image("2022.07")],
    );
    let _ = run(
        as_user(second, "rm", &["-rf", "/tmp/rstudio-server"]),
        Duration::from_secs(10),
    );
    finished.fails_with(
        2,
        &["--shared-tmp", "/tmp/rstudio-server belongs to", second],
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn network_home_is_reported() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    // A real network file system: the user's home mounted over sshfs from the local sshd.
    let mount = tempfile::Builder::new()
        .prefix("sshfs-home")
        .tempdir_in("/tmp")
        .unwrap();
    let mount_path = mount.path().display().to_string();
    let mut chown = std::process::Command::new("chown");
    chown.args([user, &mount_path]);
    run(chown, Duration::from_secs(10)).success();
    let source = format!("{}:{}", env.ssh_host, home(user).display());
    run(
        as_user(
            user,
            "sshfs",
            &[&source, &mount_path, "-o", "BatchMode=yes"],
        ),
        Duration::from_secs(30),
    )
    .success();
    let bin = env.bin.display().to_string();
    let home_var = format!("HOME={mount_path}");
    let doctor = run(
        as_user(user, "/usr/bin/env", &[&home_var, &bin, "doctor"]),
        Duration::from_secs(120),
    );
    let launch = run(
        as_user(
            user,
            "/usr/bin/env",
            &[&home_var, &bin, "script", "--image", &env.image("2024.12")],
        ),
        Duration::from_secs(120),
    );
    run(
        as_user(user, "fusermount3", &["-u", &mount_path]),
        Duration::from_secs(30),
    )
    .success();

    let out = doctor.stdout();
    assert!(
        out.contains("WARN home file system"),
        "{}",
        doctor.explain()
    );
    assert!(
        out.contains("fuse.sshfs, a network file system"),
        "{}",
        doctor.explain()
    );
    assert!(out.contains("RSTUDIO_DATA_HOME"), "{}", doctor.explain());
    assert!(
        launch.stderr().contains("warning: home file system"),
        "{}",
        launch.explain()
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn read_only_tex_tree_is_explained() {
    let _serial = serial();
    let env = Env::load();
    let finished = tool(
        &env,
        env.user(0),
        &["doctor", "--image", &env.image("verse")],
    );
    let out = finished.stdout();
    assert!(out.contains("WARN image TeX"), "{}", finished.explain());
    assert!(
        out.contains("/opt/TinyTeX is read-only"),
        "{}",
        finished.explain()
    );
    assert!(
        out.contains("tinytex::install_tinytex()"),
        "{}",
        finished.explain()
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn credentials_that_never_arrive_are_caught() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    quiesce_user(user);
    // The image's own environment script unsets PASSWORD, so the PAM helper would reject
    // every sign-in; the launch stops before rserver starts.
    let finished = tool(&env, user, &["run", "--image", &env.image("env-cleared")]);
    finished.fails_with(
        1,
        &[
            "pam-helper rejected",
            "Incorrect or invalid username/password",
        ],
    );
    assert_eq!(processes_named(user, &["rserver"]), Vec::<String>::new());
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn idle_sign_out_and_suspend_are_off() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    let (_running, session) = start_run(&env, user, &["--image", &env.image("2024.12")]);
    let argv = rserver_argv(user).join("\n");
    for expected in [
        "--auth-timeout-minutes=0",
        "--auth-stay-signed-in-days=30",
        "--auth-none=0",
    ] {
        assert!(argv.contains(expected), "rserver lacks {expected}:\n{argv}");
    }
    let (ok, page) = sign_in(&session.base, &session.user, &session.password, &[]);
    assert!(ok, "{page}");
    let environ = rsession_environ(user);
    assert_eq!(
        env_value(&environ, "RSTUDIO_SESSION_TIMEOUT").as_deref(),
        Some("0")
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn unauthenticated_request_gets_sign_in() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    let (_running, session) = start_run(&env, user, &["--image", &env.image("2024.12")]);
    for path in ["/", "/rstudio", "/s/abc/"] {
        let response = curl(&[&format!("{}{path}", session.base)]);
        let status = response.lines().next().unwrap_or_default().to_owned();
        assert!(
            !status.contains(" 200"),
            "{path} served content without sign-in: {status}"
        );
    }
    let (ok, _) = sign_in(&session.base, &session.user, "", &[]);
    assert!(!ok, "an empty password signed in");
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn limits_are_recorded_at_start() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    let finished = tool(
        &env,
        user,
        &[
            "submit",
            "--time",
            "5",
            "--mem",
            "700M",
            "--partition",
            &env.partition,
            "--image",
            &env.image("2024.12"),
        ],
    )
    .success();
    let id = submitted_session_id(&finished.stdout());
    let status = tool(&env, user, &["status", &id]).success();
    tool(&env, user, &["stop", &id]).success();
    assert!(
        status
            .stdout()
            .contains("Limit:    SLURM_MEM_PER_NODE = 700"),
        "{}",
        status.explain()
    );
    assert!(
        status.stdout().contains("Limit:    Max address space"),
        "{}",
        status.explain()
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn host_r_and_libraries_do_not_leak() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    // A conda R on the host, a host-built user library, and variables that point at them.
    let conda = home(user).join("miniconda3/bin/R");
    write_as(user, &conda, "#!/bin/sh\necho host R\n");
    let host_lib = home(user).join("R/x86_64-pc-linux-gnu-library/4.4/broken/libs");
    write_as(user, &host_lib.join("broken.so"), "not a shared object");
    let bin = env.bin.display().to_string();
    let path_var = format!(
        "PATH={}:/usr/local/bin:/usr/bin:/bin",
        conda.parent().unwrap().display()
    );
    let which_r = format!("RSTUDIO_WHICH_R={}", conda.display());
    let libs = format!(
        "R_LIBS_USER={}",
        home(user)
            .join("R/x86_64-pc-linux-gnu-library/4.4")
            .display()
    );
    let args = [
        path_var.as_str(),
        which_r.as_str(),
        libs.as_str(),
        "R_HOME=/opt/conda/lib/R",
        "LD_LIBRARY_PATH=/opt/host-libs",
        "SINGULARITYENV_FROM_HOST=1",
        "APPTAINERENV_ALSO_FROM_HOST=1",
        "MY_EXPORT=from-the-shell",
        &bin,
        "run",
        "--image",
        &env.image("2024.12"),
        "--env",
        "MY_SETTING=a b (c) 'd'",
        "--env",
        "SLURM_LIKE=8(x2)",
        "--env",
        "DOLLAR=price $5 $(touch /tmp/hpcrs-env-ran) `touch /tmp/hpcrs-env-ran` \\n",
    ];
    let _ = std::fs::remove_file("/tmp/hpcrs-env-ran");
    let mut running = Running::start(as_user(user, "/usr/bin/env", &args));
    let note = running.wait_for("host variables not passed", Duration::from_secs(120));
    assert!(
        note.contains("RSTUDIO_WHICH_R") && note.contains("LD_LIBRARY_PATH"),
        "{note}"
    );
    let password = running.value_after("Password:");
    let url = running.value_after("URL:");
    let (ok, page) = sign_in(url.trim_end_matches('/'), user, &password, &[]);
    assert!(ok, "{page}");

    let environ = rsession_environ(user);
    assert_ne!(
        env_value(&environ, "RSTUDIO_WHICH_R"),
        Some(conda.display().to_string())
    );
    assert_ne!(
        env_value(&environ, "R_HOME").as_deref(),
        Some("/opt/conda/lib/R")
    );
    assert_ne!(
        env_value(&environ, "LD_LIBRARY_PATH").as_deref(),
        Some("/opt/host-libs")
    );
    assert!(
        !env_value(&environ, "PATH")
            .unwrap_or_default()
            .contains("miniconda3")
    );
    assert_eq!(env_value(&environ, "FROM_HOST"), None);
    assert_eq!(env_value(&environ, "ALSO_FROM_HOST"), None);
    assert_eq!(
        env_value(&environ, "MY_EXPORT"),
        None,
        "a shell export reached R"
    );
    assert_eq!(
        env_value(&environ, "MY_SETTING").as_deref(),
        Some("a b (c) 'd'")
    );
    assert_eq!(env_value(&environ, "SLURM_LIKE").as_deref(), Some("8(x2)"));
    assert_eq!(
        env_value(&environ, "DOLLAR").as_deref(),
        Some("price $5 $(touch /tmp/hpcrs-env-ran) `touch /tmp/hpcrs-env-ran` \\n")
    );
    assert!(
        !std::path::Path::new("/tmp/hpcrs-env-ran").exists(),
        "a value was run as a command"
    );
    assert_eq!(
        env_value(&environ, "PASSWORD"),
        None,
        "the password reached the R session"
    );
    let r_libs = env_value(&environ, "R_LIBS_USER").unwrap();
    assert!(
        r_libs.starts_with(&format!("/home/{user}/R/hpc-rstudio/")),
        "{r_libs}"
    );
    running.signal("TERM");
    running.wait_exit(Duration::from_secs(60));

    // No deprecation warning from the runtime about the variables it was given.
    let log = std::fs::read_to_string(
        walk(&home(user).join(".local/state/hpc-rstudio/sessions"))
            .into_iter()
            .filter(|p| p.ends_with("rserver.log"))
            .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .unwrap(),
    )
    .unwrap();
    assert!(!log.to_lowercase().contains("deprecated"), "{log}");
    let _ = std::fs::remove_dir_all(home(user).join("miniconda3"));
    let _ = std::fs::remove_dir_all(home(user).join("R/x86_64-pc-linux-gnu-library"));
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn job_output_names_runtime_version() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    let finished = tool(
        &env,
        user,
        &[
            "submit",
            "--no-wait",
            "--time",
            "5",
            "--image",
            &env.image("2024.12"),
        ],
    )
    .success();
    let id = finished.stdout().trim().to_owned();
    let job_out = state_dir(user, &id).join("job.out");
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&job_out).unwrap_or_default();
        if text.contains("runtime:") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    tool(&env, user, &["stop", &id]).success();
    assert!(text.contains("runtime: /usr/bin/apptainer 1.4"), "{text}");
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn silent_rserver_failure_shows_log() {
    let _serial = serial();
    let env = Env::load();
    // The broken image's rserver.conf has an option the release does not know. With the image's
    // syslog logging nothing would be visible; the session's own logging shows the cause.
    let finished = tool(&env, env.user(0), &["run", "--image", &env.image("broken")]);
    let finished = finished.fails_with(1, &["unrecognised option 'admin-enabled'"]);
    assert!(
        !finished.stderr().contains("Logging to 'syslog'"),
        "{}",
        finished.explain()
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn replaced_image_is_probed_again() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    let dir = tempfile::Builder::new()
        .prefix("same-tag")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = dir.path().join("rstudio_latest.sif");
    let path_text = path.display().to_string();

    std::fs::copy(env.image("2024.12"), &path).unwrap();
    let first = tool(&env, user, &["script", "--image", &path_text]).success();
    // The same file name now holds another release, as after a re-pull of a moving tag.
    std::fs::copy(env.image("2022.07"), dir.path().join("next.sif")).unwrap();
    std::fs::rename(dir.path().join("next.sif"), &path).unwrap();
    let (mut running, session) = start_run(&env, user, &["--image", &path_text]);
    let line = running.wait_for("Session ", Duration::from_secs(10));
    assert!(
        line.contains("RStudio 2022.07"),
        "the old probe was used: {line}\n{}",
        first.explain()
    );
    let status = tool(&env, user, &["status", "--json", &session.id]).success();
    let value: serde_json::Value = serde_json::from_str(&status.stdout()).unwrap();
    assert_eq!(value["rstudio_version"], "2022.07.2+576");
    assert!(
        value["image_identity"].as_str().unwrap().len() > 32,
        "{value}"
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn rstudio_older_than_r_is_diagnosed() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    let (_running, session) = start_run(&env, user, &["--image", &env.image("r-too-new")]);
    let (ok, page) = sign_in(&session.base, &session.user, &session.password, &[]);
    assert!(ok, "{page}");
    assert!(
        page.contains("Could not connect to the R session"),
        "{page}"
    );
    let mut text = String::new();
    for _ in 0..50 {
        text = tool(&env, user, &["status", &session.id])
            .success()
            .stdout();
        if text.contains("Problem:") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(text.contains("too old for its R"), "{text}");
    assert!(text.contains("Rf_countContexts"), "{text}");
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn doctor_reports_every_check() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    let finished = tool(
        &env,
        user,
        &["doctor", "--json", "--image", &env.image("2024.12")],
    )
    .success();
    let checks: Vec<serde_json::Value> = serde_json::from_str(&finished.stdout()).unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for expected in [
        "runtime",
        "namespaces",
        "fuse",
        "image",
        "image RStudio",
        "image state files",
        "home file system",
        "home free space",
        "image cache",
        "shared /tmp",
        "host variables",
        "R startup files",
        "RStudio state",
        "scheduler",
        "login host",
    ] {
        assert!(
            names.contains(&expected),
            "no {expected:?} check in {names:?}"
        );
    }
    let namespaces = checks.iter().find(|c| c["name"] == "namespaces").unwrap();
    assert!(
        namespaces["detail"]
            .as_str()
            .unwrap()
            .contains("user.max_user_namespaces"),
        "{namespaces}"
    );
    assert!(checks.iter().all(|c| c["status"] != "FAIL"), "{checks:?}");

    // A ~/.Renviron that sets a library path is named with its line.
    let renviron = home(user).join(".Renviron");
    write_as(user, &renviron, "# mine\nR_LIBS_USER=~/R/host-lib\n");
    let finished = tool(&env, user, &["doctor"]).success();
    let _ = std::fs::remove_file(&renviron);
    assert!(
        finished
            .stdout()
            .contains(".Renviron:2: R_LIBS_USER=~/R/host-lib"),
        "{}",
        finished.explain()
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn doctor_runs_on_compute_node() {
    let _serial = serial();
    let env = Env::load();
    let finished = tool(
        &env,
        env.user(1),
        &["doctor", "--on-node", "--partition", &env.partition],
    )
    .success();
    assert!(
        finished.stdout().contains("OK   runtime"),
        "{}",
        finished.explain()
    );
    assert!(
        finished.stdout().contains("scheduler"),
        "{}",
        finished.explain()
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn doctor_failure_exits_nonzero() {
    let _serial = serial();
    let env = Env::load();
    let bin = env.bin.display().to_string();
    let finished = run(
        as_user(
            env.user(1),
            "/usr/bin/env",
            &["PATH=/nonexistent", &bin, "doctor"],
        ),
        Duration::from_secs(60),
    );
    let finished = finished.fails_with(1, &["check(s) failed"]);
    assert!(
        finished.stdout().contains("FAIL runtime"),
        "{}",
        finished.explain()
    );
    assert!(
        finished.stdout().contains("module load apptainer"),
        "{}",
        finished.explain()
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn fresh_session_moves_state_aside() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(1);
    reset_user(user);
    let state = home(user).join(".local/share/rstudio");
    write_as(
        user,
        &state.join("sessions/active/session-old/lock"),
        "999999999",
    );
    write_as(
        user,
        &state.join("monitored/user-settings/keep"),
        "precious",
    );

    // A stale lock is reported at launch.
    let finished = tool(&env, user, &["script", "--image", &env.image("2024.12")]).success();
    assert!(
        finished.stderr().contains("stale lock file"),
        "{}",
        finished.explain()
    );

    let (mut running, _session) = start_run(
        &env,
        user,
        &["--fresh-session", "--image", &env.image("2024.12")],
    );
    let moved_line = running.wait_for(
        "Moved RStudio's saved state aside to",
        Duration::from_secs(10),
    );
    let moved = PathBuf::from(moved_line.rsplit(' ').next().unwrap());
    assert_eq!(
        std::fs::read_to_string(moved.join("monitored/user-settings/keep")).unwrap(),
        "precious"
    );
    assert!(!state.join("sessions/active/session-old").exists());
    let _ = std::fs::remove_dir_all(&moved);
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn squatted_node_directory_is_avoided() {
    let _serial = serial();
    let env = Env::load();
    let (victim, squatter) = (env.user(1), env.user(0));
    // A shared, sticky directory like /tmp, made for this test and set as the victim's node_tmp.
    let base = tempfile::Builder::new()
        .prefix("shared-tmp")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        base.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let config = home(victim).join(".config/hpc-rstudio/config.toml");
    write_as(
        victim,
        &config,
        &format!("node_tmp = \"{}\"\n", base.path().display()),
    );
    // The squatter takes the name the victim's sessions use first.
    let name = base
        .path()
        .join(format!("hpc-rstudio-{}", uid_of(victim)))
        .display()
        .to_string();
    run(
        as_user(squatter, "sh", &["-c", &format!("echo mine > {name}")]),
        Duration::from_secs(10),
    )
    .success();

    let (mut running, session) = start_run(&env, victim, &["--image", &env.image("2024.12")]);
    let (ok, page) = sign_in(&session.base, &session.user, &session.password, &[]);
    let _ = std::fs::remove_file(&config);
    assert!(ok, "{page}");
    let warning = running.wait_for("cannot use", Duration::from_secs(5));
    assert!(warning.contains(&name), "{warning}");
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn doctor_finds_images_that_cannot_launch() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(1);
    let cases = [
        ("broken", "FAIL image rserver.conf", "admin-enabled"),
        ("r-too-new", "FAIL image rsession", "Rf_countContexts"),
        (
            "env-cleared",
            "FAIL image sign-in",
            "Incorrect or invalid username/password",
        ),
    ];
    for (image, line, detail) in cases {
        let finished = tool(&env, user, &["doctor", "--image", &env.image(image)]);
        let finished = finished.fails_with(1, &["check(s) failed"]);
        assert!(
            finished.stdout().contains(line),
            "{image}: no {line:?}\n{}",
            finished.explain()
        );
        assert!(
            finished.stdout().contains(detail),
            "{image}: no {detail:?}\n{}",
            finished.explain()
        );
    }
    let good = tool(&env, user, &["doctor", "--image", &env.image("2024.12")]).success();
    for line in [
        "OK   image rserver.conf",
        "OK   image rsession",
        "OK   image sign-in",
    ] {
        assert!(
            good.stdout().contains(line),
            "no {line:?}\n{}",
            good.explain()
        );
    }
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn disabled_user_namespaces_are_diagnosed() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    // A user namespace whose own limit on further user namespaces is 0: inside it, the
    // unprivileged runtime cannot create the namespace it needs, as on a node where
    // user.max_user_namespaces is 0. The real runtime fails there too, which is checked first.
    let bin = env.bin.display().to_string();
    let image = env.image("2024.12");
    let script = "echo 0 > /proc/sys/user/max_user_namespaces || exit 99; \
                  apptainer exec \"$2\" true; echo \"runtime exit $?\"; \
                  \"$1\" doctor; echo \"doctor exit $?\"; \
                  \"$1\" run --image \"$2\"; echo \"run exit $?\"";
    let finished = run(
        as_user(
            user,
            "unshare",
            &[
                "--user",
                "--map-current-user",
                "--keep-caps",
                "sh",
                "-c",
                script,
                "sh",
                &bin,
                &image,
            ],
        ),
        Duration::from_secs(120),
    );
    let out = format!("{}{}", finished.stdout(), finished.stderr());
    assert!(
        out.contains("runtime exit 255") || out.contains("runtime exit 1"),
        "the runtime did not fail:\n{out}"
    );
    assert!(out.contains("Failed to create user namespace"), "{out}");
    assert!(out.contains("FAIL namespaces"), "{out}");
    assert!(out.contains("user.max_user_namespaces = 0"), "{out}");
    assert!(out.contains("doctor exit 1"), "{out}");
    assert!(out.contains("error: namespaces:"), "{out}");
    assert!(out.contains("run exit 1"), "{out}");
    assert!(out.contains("install the runtime setuid"), "{out}");
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn memory_kill_is_reported() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(1);
    // The R session takes 300 MB in a job that asked for 100 MB; SLURM kills the job.
    let finished = tool(
        &env,
        user,
        &[
            "submit",
            "--mem",
            "100M",
            "--time",
            "5",
            "--env",
            "STANDIN_ALLOCATE_MB=300",
            "--image",
            &env.image("2024.12"),
        ],
    )
    .success();
    let stdout = finished.stdout();
    let id = submitted_session_id(&stdout);
    let password = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Password:"))
        .unwrap()
        .trim()
        .to_owned();
    let port = read_json(&state_dir(user, &id).join("connection.json"))["port"]
        .as_u64()
        .unwrap();
    let (ok, page) = sign_in(&format!("http://127.0.0.1:{port}"), user, &password, &[]);
    assert!(ok, "{page}");
    let mut text = String::new();
    for _ in 0..60 {
        text = tool(&env, user, &["status", &id]).success().stdout();
        if text.contains("Problem:") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(text.contains("Exceeded job memory limit"), "{text}");
    assert!(text.contains("ask for more memory with --mem"), "{text}");
    assert!(
        text.contains("Limit:    SLURM_MEM_PER_NODE = 100"),
        "{text}"
    );
}
