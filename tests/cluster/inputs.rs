//! Bad input gets one clear error naming the value and the fix, before anything is submitted.

use std::time::Duration;

use crate::harness::*;

/// The number of jobs the user has in the queue.
fn queued_jobs(user: &str) -> usize {
    let finished = run(
        as_user(user, "squeue", &["-h", "--me", "-o", "%i"]),
        Duration::from_secs(30),
    );
    finished
        .stdout()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn invalid_values_are_rejected_before_submission() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    let image = env.image("2024.12");
    let before = queued_jobs(user);
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--time", "2h"],
            vec!["invalid time limit '2h'", "HH:MM:SS"],
        ),
        (
            vec!["--mem", "lots"],
            vec!["invalid memory size 'lots'", "16G"],
        ),
        (vec!["--cpus", "0"], vec!["invalid CPU count '0'"]),
        (vec!["--gpus", "many"], vec!["invalid GPU request 'many'"]),
        (
            vec!["--partition", "bad name"],
            vec!["invalid partition name 'bad name'"],
        ),
        (
            vec!["--bind", "/no/such/dir"],
            vec!["bind source /no/such/dir does not exist"],
        ),
        (
            vec!["--rserver-option", "www-bogus-option=1"],
            vec!["does not support --www-bogus-option", "2024.12"],
        ),
        (
            vec!["--time", "1", "--save-lead", "120"],
            vec!["not shorter than the time limit"],
        ),
        (
            vec!["--env", "1BAD=x"],
            vec!["invalid environment setting '1BAD=x'"],
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["submit", "--no-wait", "--image", &image];
        args.extend(extra.iter());
        let finished = tool(&env, user, &args);
        finished.fails_with(2, &expected);
    }
    assert_eq!(
        queued_jobs(user),
        before,
        "a job was submitted for bad input"
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn bad_images_are_rejected() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    tool(
        &env,
        user,
        &["submit", "--no-wait", "--image", "/no/such/image.sif"],
    )
    .fails_with(2, &["image /no/such/image.sif does not exist"]);
    tool(&env, user, &["run", "--image", "/etc/hostname"])
        .fails_with(2, &["image /etc/hostname is not a SIF file"]);
    // An image without RStudio in it.
    tool(
        &env,
        user,
        &["run", "--socket", "--image", &env.image("2022.07")],
    )
    .fails_with(2, &["does not support --www-socket", "2024.12"]);
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn unknown_partition_uses_sbatch_message() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    let before = queued_jobs(user);
    let finished = tool(
        &env,
        user,
        &[
            "submit",
            "--no-wait",
            "--partition",
            "nosuchpart",
            "--image",
            &env.image("2024.12"),
        ],
    );
    finished.fails_with(
        2,
        &["sbatch rejected the job", "invalid partition", "sinfo"],
    );
    assert_eq!(queued_jobs(user), before);
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn missing_runtime_names_programs() {
    let _serial = serial();
    let env = Env::load();
    let bin = env.bin.display().to_string();
    // A PATH without apptainer or singularity, as on a node before `module load apptainer`.
    let mut cmd = as_user(
        env.user(0),
        "/usr/bin/env",
        &[
            "PATH=/nonexistent",
            &bin,
            "run",
            "--image",
            &env.image("2024.12"),
        ],
    );
    cmd.current_dir("/");
    let finished = run(cmd, Duration::from_secs(60));
    finished.fails_with(
        1,
        &[
            "no container runtime found",
            "`apptainer`",
            "`singularity`",
            "module load apptainer",
        ],
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn invalid_config_file_names_the_key() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    let config = home(user).join(".config/hpc-rstudio/config.toml");
    let setup = format!(
        "mkdir -p {} && printf 'imgae = \"x\"\\n' > {}",
        config.parent().unwrap().display(),
        config.display()
    );
    run(
        as_user(user, "sh", &["-c", &setup]),
        Duration::from_secs(10),
    )
    .success();
    let finished = tool(&env, user, &["script"]);
    let _ = std::fs::remove_file(&config);
    finished.fails_with(2, &["invalid configuration file", "imgae"]);
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn job_that_can_never_start_is_reported() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(0);
    let before = queued_jobs(user);
    // The node has 16 CPUs, so 50 can never be allocated.
    let finished = tool(
        &env,
        user,
        &[
            "submit",
            "--cpus",
            "50",
            "--time",
            "5",
            "--image",
            &env.image("2024.12"),
        ],
    );
    finished.fails_with(2, &["can never start (PartitionConfig)", "fewer CPUs"]);
    assert_eq!(
        queued_jobs(user),
        before,
        "the hopeless job was left in the queue"
    );
}
