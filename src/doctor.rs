//! `hpc-rstudio doctor`: checks, on the node where it runs, everything a launch depends on, and
//! prints one line per check with OK, WARN or FAIL and the fix. The checks that can stop a
//! launch also run before every `run` and `submit`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::fsinfo;
use crate::paths::User;
use crate::runtime::{Flavor, Runtime};
use crate::settings::Files;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One check: what was looked at, what was found, and the fix when it is not OK.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &str, detail: impl Into<String>) -> Check {
        Check {
            name: name.to_owned(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.to_owned(),
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.to_owned(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Host variables that would point R at the host's own installation. They are not passed into
/// the container (the runtime runs with --cleanenv), and the supervisor reports them.
pub const LEAKY_VARIABLES: &[&str] = &[
    "R_HOME",
    "R_LIBS",
    "R_LIBS_USER",
    "R_LIBS_SITE",
    "RSTUDIO_WHICH_R",
    "R_ENVIRON_USER",
    "R_PROFILE_USER",
    "LD_LIBRARY_PATH",
    "CONDA_PREFIX",
    "PYTHONPATH",
];

/// Whether the runtime can run containers without root: through a setuid starter, or through
/// unprivileged user namespaces. A FAIL here stops a launch.
pub fn check_namespaces(runtime: &Runtime) -> Check {
    let limit = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    namespace_verdict(setuid_starter(runtime), limit)
}

/// Decides the namespace check from the setuid starter, if any, and the node's namespace limit.
fn namespace_verdict(setuid: Option<PathBuf>, limit: Option<u64>) -> Check {
    let mode = match &setuid {
        Some(path) => format!("setuid starter {}", path.display()),
        None => "no setuid starter: unprivileged user namespaces".to_owned(),
    };
    let limit_text = limit.map_or("unknown".to_owned(), |l| l.to_string());
    let detail = format!("{mode}; user.max_user_namespaces = {limit_text}");
    if setuid.is_none() && limit == Some(0) {
        return Check::fail(
            "namespaces",
            detail,
            "user namespaces are disabled on this node and the runtime is not installed setuid: ask the admins to set user.max_user_namespaces above 0 (sysctl) or to install the runtime setuid",
        );
    }
    Check::ok("namespaces", detail)
}

/// Finds the runtime's setuid starter, when it has one with the setuid bit set.
fn setuid_starter(runtime: &Runtime) -> Option<PathBuf> {
    let mut cmd = runtime.command();
    cmd.arg("buildcfg");
    let output = crate::process::run(&mut cmd, None, Duration::from_secs(20)).ok()?;
    let libexec = output
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("LIBEXECDIR="))?
        .trim()
        .to_owned();
    let name = match runtime.flavor {
        Flavor::Apptainer => "apptainer",
        Flavor::SingularityCe => "singularity",
    };
    let path = Path::new(&libexec).join(name).join("bin/starter-suid");
    let meta = std::fs::metadata(&path).ok()?;
    (meta.mode() & 0o4000 != 0 && meta.uid() == 0).then_some(path)
}

fn check_fuse() -> Check {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => Check::ok("fuse", "/dev/fuse is usable"),
        Err(err) => Check::warn(
            "fuse",
            format!("/dev/fuse cannot be opened: {err}"),
            "without FUSE an unprivileged runtime unpacks each image into a temporary directory, which is slow and uses space; ask the admins to make /dev/fuse usable",
        ),
    }
}

fn check_home(user: &User) -> Vec<Check> {
    let mut checks = Vec::new();
    let fs_type = fsinfo::fs_type(&user.home).unwrap_or_else(|| "unknown".to_owned());
    if fsinfo::is_network(&fs_type) {
        checks.push(Check::warn(
            "home file system",
            format!("{} is on {fs_type}, a network file system", user.home.display()),
            "RStudio's state and locks in ~/.local/share/rstudio can fail there (\"No locks available\"); keep them on node-local storage with --env RSTUDIO_DATA_HOME=/local/dir, or ask the admins whether locking works on HOME",
        ));
    } else {
        checks.push(Check::ok(
            "home file system",
            format!("{} is on {fs_type}", user.home.display()),
        ));
    }
    match fsinfo::free_bytes(&user.home) {
        Some(free) if free < 100 << 20 => checks.push(Check::fail(
            "home free space",
            format!("{} free in {}", fsinfo::human(free), user.home.display()),
            "RStudio cannot save sessions in a full home directory: free some space (check your quota with `quota -s`)",
        )),
        Some(free) if free < 1 << 30 => checks.push(Check::warn(
            "home free space",
            format!("{} free in {}", fsinfo::human(free), user.home.display()),
            "free some space: saved R sessions and packages need room (check your quota with `quota -s`)",
        )),
        Some(free) => checks.push(Check::ok("home free space", format!("{} free", fsinfo::human(free)))),
        None => checks.push(Check::warn("home free space", "cannot read free space", "check `df -h ~`")),
    }
    checks
}

fn check_cache(files: &Files, user: &User) -> Check {
    let cache = files.image_cache(user);
    let existing = cache
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_owned();
    match fsinfo::free_bytes(&existing) {
        Some(free) if free < 8 << 30 => Check::warn(
            "image cache",
            format!("{} with {} free", cache.display(), fsinfo::human(free)),
            "pulling an image needs several GiB: set image_cache in ~/.config/hpc-rstudio/config.toml to a larger file system",
        ),
        Some(free) => Check::ok(
            "image cache",
            format!("{} with {} free", cache.display(), fsinfo::human(free)),
        ),
        None => Check::warn(
            "image cache",
            format!("cannot read free space of {}", cache.display()),
            "check the image_cache setting",
        ),
    }
}

/// Another user's `/tmp/rstudio-server` on this node. hpc-rstudio's private /tmp makes it
/// harmless, but it breaks every launch that shares the host's /tmp.
pub fn check_foreign_tmp(uid: u32) -> Check {
    let path = Path::new("/tmp/rstudio-server");
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.uid() != uid => {
            let owner = nix::unistd::User::from_uid(meta.uid().into())
                .ok()
                .flatten()
                .map_or_else(|| format!("uid {}", meta.uid()), |u| u.name);
            Check::warn(
                "shared /tmp",
                format!("{} belongs to {owner}", path.display()),
                format!(
                    "harmless with hpc-rstudio's private /tmp (the default); a launch with --shared-tmp fails, so ask {owner} to remove it"
                ),
            )
        }
        Ok(_) => Check::ok("shared /tmp", format!("{} is yours", path.display())),
        Err(_) => Check::ok("shared /tmp", format!("no {}", path.display())),
    }
}

fn check_host_variables() -> Check {
    let set: Vec<&str> = LEAKY_VARIABLES
        .iter()
        .copied()
        .filter(|v| std::env::var_os(v).is_some())
        .collect();
    if set.is_empty() {
        return Check::ok("host variables", "none that point R at the host");
    }
    Check::warn(
        "host variables",
        format!("set here: {}", set.join(", ")),
        "they are not passed into the container, so the image's R is used; pass what R really needs with --env KEY=VALUE",
    )
}

/// Lines of ~/.Renviron and ~/.Rprofile that set library paths, which the image's R also reads.
fn check_r_startup_files(user: &User) -> Check {
    let mut found = Vec::new();
    for (name, patterns) in [
        (".Renviron", &["R_LIBS", "R_LIBS_USER", "R_LIBS_SITE"][..]),
        (".Rprofile", &[".libPaths"][..]),
    ] {
        let path = user.home.join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for (number, line) in text.lines().enumerate() {
            let code = line.split('#').next().unwrap_or_default();
            if patterns.iter().any(|p| code.contains(p)) {
                found.push(format!(
                    "{}:{}: {}",
                    path.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    if found.is_empty() {
        return Check::ok(
            "R startup files",
            "~/.Renviron and ~/.Rprofile set no library paths",
        );
    }
    Check::warn(
        "R startup files",
        found.join("; "),
        "these lines override hpc-rstudio's per-image R library, so packages built for another system may load; remove them or make them conditional",
    )
}

fn check_rstudio_state(user: &User, env: &[(String, String)]) -> Check {
    let root = crate::rstudio_state::state_root(user, env);
    if !root.exists() {
        return Check::ok(
            "RStudio state",
            format!("no saved state in {}", root.display()),
        );
    }
    let size = fsinfo::dir_size(&root);
    let stale = crate::rstudio_state::stale_locks(&root);
    let detail = format!(
        "{} in {}, {} stale lock file(s)",
        fsinfo::human(size),
        root.display(),
        stale.len()
    );
    if !stale.is_empty() || size > 2 << 30 {
        let mut fix =
            "start with --fresh-session, which moves the saved state aside (nothing is deleted)"
                .to_owned();
        if let Some(first) = stale.first() {
            fix.push_str(&format!("; first stale lock: {}", first.display()));
        }
        return Check::warn("RStudio state", detail, fix);
    }
    Check::ok("RStudio state", detail)
}

fn check_scheduler() -> Check {
    let missing: Vec<&str> = ["sbatch", "squeue", "sacct", "scancel"]
        .into_iter()
        .filter(|p| crate::runtime::find_program(p).is_none())
        .collect();
    if missing.is_empty() {
        return Check::ok("scheduler", "sbatch, squeue, sacct and scancel found");
    }
    Check::warn(
        "scheduler",
        format!("not found on PATH: {}", missing.join(", ")),
        "`submit` needs SLURM's commands: run it on a login node, or `module load slurm`",
    )
}

fn check_login_host(files: &Files) -> Check {
    match files
        .user
        .login_host
        .as_ref()
        .or(files.site.login_host.as_ref())
    {
        Some(host) => Check::ok("login host", host.clone()),
        None => Check::warn(
            "login host",
            format!(
                "not set; tunnel commands will name {}",
                crate::paths::hostname()
            ),
            "set login_host in the site or user configuration file to the name users give ssh",
        ),
    }
}

/// Checks of the image: readable SIF, its RStudio and R versions and options, and read-only
/// parts users trip over.
fn check_image(text: &str, files: &Files, user: &User, runtime: &Runtime) -> Vec<Check> {
    let cache = files.image_cache(user);
    let image = match crate::image::ImageSource::parse(text) {
        crate::image::ImageSource::File(path) => crate::image::Image::open(&path, None),
        crate::image::ImageSource::Reference(reference) => {
            let path = cache.join(crate::image::cache_file_name(&reference));
            if !path.exists() {
                return vec![Check::warn(
                    "image",
                    format!("{reference} is not in the cache yet"),
                    format!("run `hpc-rstudio pull {reference}`"),
                )];
            }
            crate::image::Image::open(&path, Some(reference))
        }
    };
    let image = match image {
        Ok(image) => image,
        Err(err) => {
            return vec![Check::fail(
                "image",
                err.message,
                err.hint.unwrap_or_default(),
            )];
        }
    };
    let mut checks = vec![Check::ok(
        "image",
        format!(
            "{} ({}, {})",
            image.path.display(),
            fsinfo::human(image.size),
            image.identity()
        ),
    )];
    let probe = crate::probe::probe_cached(&image, runtime, &crate::paths::cache_dir(user));
    match &probe {
        Ok(probe) => {
            checks.push(Check::ok(
                "image RStudio",
                format!(
                    "{}; rserver lists {} options",
                    probe.describe(),
                    probe.options.len()
                ),
            ));
            if !probe.has_pam_helper {
                checks.push(Check::fail(
                    "image sign-in",
                    "no /usr/lib/rstudio-server/bin/pam-helper",
                    "use a Rocker image, which ships the helper for password sign-in",
                ));
            }
        }
        Err(err) => checks.push(Check::fail(
            "image RStudio",
            err.message.clone(),
            err.hint.clone().unwrap_or_default(),
        )),
    }

    // One container start lists the read-only places that users trip over.
    let mut cmd = runtime.command();
    cmd.args(["exec", "--cleanenv", "--no-home"]).arg(&image.path).args([
        "/bin/sh",
        "-c",
        "ls -ln /var/lib/rstudio-server 2>/dev/null | tail -n +2; test -d /opt/TinyTeX && echo HPC_RSTUDIO_TINYTEX; \
         while IFS= read -r line; do echo \"HPC_RSTUDIO_CONF $line\"; done < /etc/rstudio/rserver.conf 2>/dev/null",
    ]);
    if let Ok(output) = crate::process::run(&mut cmd, None, Duration::from_secs(120)) {
        let files: Vec<&str> = output
            .stdout
            .lines()
            .filter(|l| !l.starts_with("HPC_RSTUDIO_"))
            .collect();
        checks.push(Check::ok(
            "image state files",
            format!("/var/lib/rstudio-server holds {} file(s); each session binds a private directory over it", files.len()),
        ));
        if let Ok(probe) = &probe {
            checks.push(check_rserver_conf(&output.stdout, probe));
        }
        if output.stdout.contains("HPC_RSTUDIO_TINYTEX") {
            checks.push(Check::warn(
                "image TeX",
                "TinyTeX in /opt/TinyTeX is read-only inside the image, so tlmgr cannot install packages (Permission denied)",
                "install TinyTeX under HOME with tinytex::install_tinytex() in R, or build an image that includes the TeX packages you need",
            ));
        }
    }
    checks.push(check_rsession(&image, runtime));
    checks.push(check_pam_helper(&image, runtime, user));
    checks
}

/// Checks the options the image's /etc/rstudio/rserver.conf sets against the options its
/// rserver lists: an unknown one makes rserver exit at once.
fn check_rserver_conf(listing: &str, probe: &crate::probe::Probe) -> Check {
    let unknown: Vec<String> = listing
        .lines()
        .filter_map(|line| line.strip_prefix("HPC_RSTUDIO_CONF "))
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split('=').next().map(|key| key.trim().to_owned()))
        .filter(|key| !probe.supports(key))
        .collect();
    if unknown.is_empty() {
        return Check::ok(
            "image rserver.conf",
            "every option it sets is known to this rserver",
        );
    }
    Check::fail(
        "image rserver.conf",
        format!(
            "/etc/rstudio/rserver.conf sets {}, which this rserver does not know ({})",
            unknown.join(", "),
            probe.describe()
        ),
        "rserver would exit with \"unrecognised option\": use an image whose configuration matches its RStudio, or rebuild it without that line",
    )
}

/// Starts the image's rsession with --version. It fails at once when it cannot load R, for
/// example when the image's R is newer than its RStudio build.
fn check_rsession(image: &crate::image::Image, runtime: &Runtime) -> Check {
    let mut cmd = runtime.command();
    cmd.args(["exec", "--cleanenv", "--no-home"])
        .arg(&image.path)
        .args([crate::probe::RSESSION, "--version"]);
    let Ok(output) = crate::process::run(&mut cmd, None, Duration::from_secs(120)) else {
        return Check::warn(
            "image rsession",
            "rsession --version did not finish",
            "read `hpc-rstudio logs` after a launch",
        );
    };
    let lines: Vec<String> = output
        .stdout
        .lines()
        .chain(output.stderr.lines())
        .map(str::to_owned)
        .collect();
    match crate::diagnose::find(&lines) {
        Some(finding) => Check::fail(
            "image rsession",
            format!("rsession cannot start: {}", finding.line.trim()),
            format!("{}; {}", finding.known.cause, finding.known.fix),
        ),
        None => Check::ok("image rsession", "rsession starts"),
    }
}

/// Runs the image's pam-helper the way rserver does, with a throwaway password passed the way
/// sessions pass theirs. A rejection means every sign-in would fail.
fn check_pam_helper(image: &crate::image::Image, runtime: &Runtime, user: &User) -> Check {
    let password = "hpc-rstudio-doctor-check";
    let prefix = runtime.env_prefix();
    let result = crate::probe::run_pam_helper(image, runtime, &user.name, password, |cmd| {
        cmd.env(format!("{prefix}USER"), &user.name)
            .env(format!("{prefix}PASSWORD"), password);
    });
    match result {
        Ok(output) if output.success() => Check::ok(
            "image sign-in",
            "pam-helper accepts the session's credentials",
        ),
        Ok(_) => Check::fail(
            "image sign-in",
            "pam-helper rejects the credentials a session passes in USER and PASSWORD",
            "the image (or a site wrapper) clears USER or PASSWORD, so every sign-in would fail with \"Incorrect or invalid username/password\"; use another image",
        ),
        Err(err) => Check::warn(
            "image sign-in",
            format!("pam-helper could not be run: {}", err.message),
            "run `hpc-rstudio run` to see whether sign-in works",
        ),
    }
}

/// Runs every check. `image` is the image to check, if any.
pub fn run_checks(image: Option<&str>, requested_runtime: Option<&str>) -> Result<Vec<Check>> {
    let user = User::current()?;
    let files = Files::load(&user)?;
    let mut checks = Vec::new();
    let runtime = match Runtime::detect(
        requested_runtime
            .or(files.user.runtime.as_deref())
            .or(files.site.runtime.as_deref()),
    ) {
        Ok(runtime) => {
            checks.push(Check::ok(
                "runtime",
                format!(
                    "{} {} ({:?})",
                    runtime.program.display(),
                    runtime.version,
                    runtime.flavor
                ),
            ));
            checks.push(check_namespaces(&runtime));
            Some(runtime)
        }
        Err(err) => {
            checks.push(Check::fail(
                "runtime",
                err.message,
                err.hint.unwrap_or_default(),
            ));
            None
        }
    };
    checks.push(check_fuse());
    if let (Some(image), Some(runtime)) = (image, &runtime) {
        checks.extend(check_image(image, &files, &user, runtime));
    }
    checks.extend(check_home(&user));
    checks.push(check_cache(&files, &user));
    checks.push(check_foreign_tmp(user.uid));
    checks.push(check_host_variables());
    checks.push(check_r_startup_files(&user));
    let mut env = files.site.env.clone();
    env.extend(files.user.env.iter().cloned());
    let env: Vec<(String, String)> = env
        .iter()
        .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    checks.push(check_rstudio_state(&user, &env));
    checks.push(check_scheduler());
    checks.push(check_login_host(&files));
    Ok(checks)
}

/// Prints the checks, one line each, with the fix under each one that is not OK.
pub fn print(checks: &[Check], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(checks).expect("checks serialize")
        );
        return;
    }
    for check in checks {
        let status = match check.status {
            Status::Ok => "OK  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        println!("{status} {:<18} {}", check.name, check.detail);
        if let Some(fix) = &check.fix {
            println!("     {:<18} fix: {fix}", "");
        }
    }
}

/// `hpc-rstudio doctor`.
pub fn doctor(args: &crate::cli::DoctorArgs) -> Result<()> {
    if args.on_node {
        return doctor_on_node(args);
    }
    let checks = run_checks(args.image.as_deref(), args.runtime.as_deref())?;
    print(&checks, args.json);
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failed > 0 {
        return Err(Error::failed(format!("{failed} check(s) failed"))
            .with_hint("apply the fixes listed above"));
    }
    Ok(())
}

/// Runs `doctor --json` as a short SLURM job on a compute node and prints its result.
fn doctor_on_node(args: &crate::cli::DoctorArgs) -> Result<()> {
    let user = User::current()?;
    let dir = crate::paths::state_dir(&user).join("doctor");
    crate::private_fs::create_private_dir(&dir)?;
    let output = dir.join(format!("doctor-{}.json", crate::session::new_id()));
    let binary = std::env::current_exe()?;
    let mut inner = vec![
        crate::shell::quote(&binary.to_string_lossy()),
        "doctor".to_owned(),
        "--json".to_owned(),
    ];
    if let Some(image) = &args.image {
        inner.push("--image".to_owned());
        inner.push(crate::shell::quote(image));
    }
    let mut cmd = Command::new("sbatch");
    cmd.args([
        "--wait",
        "--parsable",
        "--job-name=hpc-rstudio-doctor",
        "--time=00:10:00",
    ])
    .arg(format!("--output={}", output.display()));
    if let Some(partition) = &args.partition {
        crate::resources::check_name("partition", partition)?;
        cmd.arg(format!("--partition={partition}"));
    }
    cmd.arg(format!("--wrap={}", inner.join(" ")));
    eprintln!("Running the checks as a SLURM job; this waits for the job to start and finish...");
    let result = crate::process::run(&mut cmd, None, Duration::from_secs(3600))?;
    let text = std::fs::read_to_string(&output).unwrap_or_default();
    let _ = std::fs::remove_file(&output);
    let start = text.find('[').ok_or_else(|| {
        // sbatch's own reason (an unknown partition, say) comes first, then the job's output.
        let details = result
            .stderr
            .lines()
            .chain(text.lines())
            .take(20)
            .map(str::to_owned);
        crate::process::failure(&cmd, &result)
            .with_details(details.collect())
            .with_hint("fix what sbatch or the job reports above")
    })?;
    let end = text.rfind(']').map_or(text.len(), |i| i + 1);
    let checks: Vec<serde_json::Value> =
        serde_json::from_str(&text[start..end]).map_err(|err| {
            Error::failed(format!("cannot read the job's checks: {err}"))
                .with_details(text.lines().take(20).map(str::to_owned).collect())
        })?;
    let node_checks: Vec<Check> = checks
        .iter()
        .map(|c| Check {
            name: c["name"].as_str().unwrap_or("?").to_owned(),
            status: match c["status"].as_str() {
                Some("FAIL") => Status::Fail,
                Some("WARN") => Status::Warn,
                _ => Status::Ok,
            },
            detail: c["detail"].as_str().unwrap_or_default().to_owned(),
            fix: c["fix"].as_str().map(str::to_owned),
        })
        .collect();
    print(&node_checks, args.json);
    if node_checks.iter().any(|c| c.status == Status::Fail) {
        return Err(Error::failed("a check failed on the compute node")
            .with_hint("apply the fixes listed above"));
    }
    Ok(())
}

/// Runs the checks that can stop a launch and returns the first failure as an error. Warnings
/// are printed and the launch goes on.
pub fn preflight(runtime: &Runtime, user: &User) -> Result<()> {
    let mut checks = vec![check_namespaces(runtime)];
    checks.extend(check_home(user));
    for check in &checks {
        match check.status {
            Status::Fail => {
                return Err(Error::failed(format!("{}: {}", check.name, check.detail))
                    .with_hint(check.fix.clone().unwrap_or_default()));
            }
            Status::Warn => {
                eprintln!("warning: {}: {}", check.name, check.detail);
                if let Some(fix) = &check.fix {
                    eprintln!("  fix: {fix}");
                }
            }
            Status::Ok => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_namespaces_fail_without_setuid() {
        let check = namespace_verdict(None, Some(0));
        assert_eq!(check.status, Status::Fail);
        assert!(check.detail.contains("user.max_user_namespaces = 0"));
        assert!(check.fix.unwrap().contains("setuid"));
    }

    #[test]
    fn setuid_runtime_needs_no_namespaces() {
        let check = namespace_verdict(
            Some(PathBuf::from("/usr/libexec/apptainer/bin/starter-suid")),
            Some(0),
        );
        assert_eq!(check.status, Status::Ok);
    }

    #[test]
    fn enabled_namespaces_pass() {
        assert_eq!(namespace_verdict(None, Some(15000)).status, Status::Ok);
    }
}
