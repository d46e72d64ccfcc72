//! `hpc-rstudio pull`, the image cache, the probe cache and configuration layering.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use crate::harness::*;

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn pull_caches_and_reuses_image() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(1);
    reset_user(user);
    let reference = format!(
        "oci-archive:{}",
        env.images.join("rstudio-2024.12.oci.tar").display()
    );

    let first = tool(&env, user, &["pull", &reference]).success();
    let path = std::path::PathBuf::from(first.stdout().trim());
    assert!(
        path.starts_with(home(user).join(".cache/hpc-rstudio/images")),
        "{}",
        first.explain()
    );
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        &bytes[32..41],
        b"SIF_MAGIC",
        "not a SIF: {}",
        path.display()
    );
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let mtime = std::fs::metadata(&path).unwrap().mtime();

    // A second pull reuses the file and says so; nothing is overwritten.
    let second = tool(&env, user, &["pull", &reference]).success();
    assert!(
        second.stderr().contains("already in the image cache"),
        "{}",
        second.explain()
    );
    assert_eq!(std::fs::metadata(&path).unwrap().mtime(), mtime);

    // --image with the reference uses the cached file without pulling again.
    let (_running, session) = start_run(&env, user, &["--image", &reference]);
    let (ok, page) = sign_in(&session.base, &session.user, &session.password, &[]);
    assert!(ok, "{page}");
    assert_eq!(std::fs::metadata(&path).unwrap().mtime(), mtime);

    // The image was probed once and the result cached by its identity.
    let probes = walk(&home(user).join(".cache/hpc-rstudio/probes"));
    assert_eq!(probes.len(), 1, "{probes:?}");
    let probe = read_json(&probes[0]);
    assert_eq!(probe["rstudio_version"], "2024.12.1+563");
    assert!(
        probe["options"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "www-socket")
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn pull_rejects_a_path_and_a_broken_reference() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(1);
    tool(&env, user, &["pull", "/etc/hostname"]).fails_with(2, &["is not an image reference"]);
    let finished = tool(&env, user, &["pull", "oci-archive:/no/such/archive.tar"]);
    finished.fails_with(1, &["pull", "nothing in the cache was changed"]);
    let cached = walk(&home(user).join(".cache/hpc-rstudio/images"));
    assert!(
        !cached
            .iter()
            .any(|p| p.to_string_lossy().contains("no_such_archive")),
        "{cached:?}"
    );
}

#[test]
#[ignore = "needs the test cluster: run testing/ci.sh"]
fn settings_layer_site_user_env() {
    let _serial = serial();
    let env = Env::load();
    let user = env.user(1);
    let image = env.image("2024.12");
    let site = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        site.path(),
        format!(
            "image = \"{image}\"\n[resources]\ntime = \"1:00:00\"\npartition = \"{}\"\n",
            env.short_partition
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        site.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let user_config = home(user).join(".config/hpc-rstudio/config.toml");
    let setup = format!(
        "mkdir -p {} && printf '[resources]\\ntime = \"2:00:00\"\\n' > {}",
        user_config.parent().unwrap().display(),
        user_config.display()
    );
    run(
        as_user(user, "sh", &["-c", &setup]),
        Duration::from_secs(10),
    )
    .success();

    let bin = env.bin.display().to_string();
    let site_var = format!("HPC_RSTUDIO_SITE_CONFIG={}", site.path().display());
    let script = |extra: &[&str]| {
        let mut args = vec![site_var.as_str()];
        args.extend_from_slice(extra);
        args.push(&bin);
        args.push("script");
        run(
            as_user(user, "/usr/bin/env", &args),
            Duration::from_secs(60),
        )
        .success()
        .stdout()
    };
    // The site sets the partition and image; the user's file overrides the site's time.
    let text = script(&[]);
    assert!(
        text.contains(&format!("--partition={}", env.short_partition)),
        "{text}"
    );
    assert!(text.contains("--time=02:00:00"), "{text}");
    // The environment overrides the files.
    let text = script(&["HPC_RSTUDIO_TIME=3:00:00"]);
    assert!(text.contains("--time=03:00:00"), "{text}");
    let _ = std::fs::remove_file(&user_config);
}
