//! The node side of a session: its private node-local directories, the CPUs and name of the
//! node, a free port, and the limits and time zone the session starts with.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::private_fs::create_private_dir;
use crate::rserver;
use crate::session::Mode;

/// The private node-local directories of one session.
pub(super) struct NodeDirs {
    pub(super) root: PathBuf,
    pub(super) run: PathBuf,
    pub(super) tmp: PathBuf,
    pub(super) var_lib: PathBuf,
    pub(super) logging_conf: PathBuf,
}

impl NodeDirs {
    pub(super) fn create(base: &Path, uid: u32, id: &str) -> Result<NodeDirs> {
        // One directory per user, checked to be ours and closed, then one per session inside.
        // Anyone can create that name first in a shared /tmp; then a fresh directory with a
        // random name, made atomically by us, takes its place.
        let mut user_root = base.join(format!("hpc-rstudio-{uid}"));
        if let Err(err) = create_private_dir(&user_root) {
            tracing::warn!(
                "cannot use {}: {err}; using a new directory instead",
                user_root.display()
            );
            user_root = tempfile::Builder::new()
                .prefix(&format!("hpc-rstudio-{uid}-"))
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir_in(base)
                .map_err(|err| Error::io("create a private directory in", base, err))?
                .keep();
        }
        let root = user_root.join(id);
        create_private_dir(&root)?;
        let dirs = NodeDirs {
            run: root.join("run"),
            tmp: root.join("tmp"),
            var_lib: root.join("var-lib-rstudio-server"),
            logging_conf: root.join("logging.conf"),
            root,
        };
        for dir in [
            &dirs.run,
            &dirs.tmp,
            &dirs.var_lib,
            &dirs.run.join("hpc-rstudio"),
        ] {
            create_private_dir(dir)?;
        }
        Ok(dirs)
    }

    /// The host path of a path under the container's `/run`.
    pub(super) fn host_run_path(&self, container_path: &str) -> PathBuf {
        self.run.join(container_path.trim_start_matches("/run/"))
    }

    pub(super) fn bind_list(&self, shared_tmp: bool) -> String {
        let tmp = if shared_tmp {
            String::new()
        } else {
            format!("{}:/tmp,", self.tmp.display())
        };
        format!(
            "{}:/run,{tmp}{}:/var/lib/rstudio-server,{}:{}:ro",
            self.run.display(),
            self.var_lib.display(),
            self.logging_conf.display(),
            rserver::LOGGING_CONF
        )
    }
}

/// The node a session runs on and the CPUs it may use.
pub struct Placement {
    pub node: String,
    pub cpus: Option<u32>,
}

impl Placement {
    /// The node and CPUs from SLURM's job environment, else from this host.
    pub fn detect(mode: Mode, cpus: Option<u32>) -> Placement {
        let node =
            std::env::var("SLURMD_NODENAME").unwrap_or_else(|_| crate::paths::short_hostname());
        let slurm_cpus = std::env::var("SLURM_CPUS_PER_TASK")
            .ok()
            .and_then(|v| v.parse().ok())
            .or_else(|| {
                // SLURM_JOB_CPUS_PER_NODE can read "8(x2)" on multi-node jobs; the first number
                // is this node's count.
                let text = std::env::var("SLURM_JOB_CPUS_PER_NODE").ok()?;
                text.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            });
        let cpus = match mode {
            Mode::Batch => slurm_cpus.or(cpus),
            Mode::Local => cpus.or(slurm_cpus).or_else(affinity_cpus),
        };
        Placement { node, cpus }
    }
}

fn affinity_cpus() -> Option<u32> {
    std::thread::available_parallelism()
        .ok()
        .map(|n| n.get() as u32)
}

/// The node-local base directory for private session directories.
pub(super) fn node_base(configured: Option<&Path>) -> PathBuf {
    if let Some(dir) = configured {
        return dir.to_owned();
    }
    match std::env::var_os("TMPDIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        _ => PathBuf::from("/tmp"),
    }
}

/// Checks that a port the user pinned is free.
pub(super) fn check_pinned_port(address: &str, port: u16, node: &str) -> Result<u16> {
    if port_is_free(address, port) {
        return Ok(port);
    }
    Err(
        Error::usage(format!("port {port} is already in use on {node}"))
            .with_hint("choose another --port, or leave --port out so that a free one is chosen"),
    )
}

/// Chooses a free port in `range`, starting at a random place so that users on one node spread
/// out, and skipping the ones already `tried`.
pub(super) fn choose_port(address: &str, range: (u16, u16), tried: &[u16]) -> Result<u16> {
    let span = u32::from(range.1 - range.0) + 1;
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).expect("the system random source works");
    let start = u32::from_le_bytes(random) % span;
    for offset in 0..span {
        let port = range.0 + ((start + offset) % span) as u16;
        if !tried.contains(&port) && port_is_free(address, port) {
            return Ok(port);
        }
    }
    Err(
        Error::failed(format!("no free port between {} and {}", range.0, range.1))
            .with_hint("set a wider port_range in the configuration file"),
    )
}

fn port_is_free(address: &str, port: u16) -> bool {
    TcpListener::bind((address, port)).is_ok()
}

/// The host's time zone name: TZ, else /etc/timezone, else the /etc/localtime link, else UTC.
pub(super) fn host_timezone() -> String {
    if let Ok(tz) = std::env::var("TZ") {
        if !tz.is_empty() {
            return tz;
        }
    }
    if let Ok(text) = std::fs::read_to_string("/etc/timezone") {
        if !text.trim().is_empty() {
            return text.trim().to_owned();
        }
    }
    if let Ok(target) = std::fs::read_link("/etc/localtime") {
        let text = target.to_string_lossy();
        if let Some((_, zone)) = text.split_once("zoneinfo/") {
            return zone.to_owned();
        }
    }
    "Etc/UTC".to_owned()
}

/// Effective limits at start: the cgroup memory limit, address-space and process ulimits, and
/// SLURM's memory variables, so that an R session killed below `--mem` can be explained.
pub(super) fn effective_limits() -> Vec<String> {
    let mut lines = Vec::new();
    if let Ok(cgroup) = std::fs::read_to_string("/proc/self/cgroup") {
        for line in cgroup.lines() {
            let path = line.rsplit(':').next().unwrap_or_default();
            for file in ["memory.max", "memory.limit_in_bytes"] {
                for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/memory"] {
                    let full = format!("{base}{path}/{file}");
                    if let Ok(value) = std::fs::read_to_string(&full) {
                        lines.push(format!("cgroup {file} = {}", value.trim()));
                    }
                }
            }
        }
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        for line in limits.lines() {
            if line.starts_with("Max address space")
                || line.starts_with("Max processes")
                || line.starts_with("Max open files")
            {
                lines.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
    }
    for key in [
        "SLURM_MEM_PER_NODE",
        "SLURM_MEM_PER_CPU",
        "SLURM_CPUS_PER_TASK",
    ] {
        if let Ok(value) = std::env::var(key) {
            lines.push(format!("{key} = {value}"));
        }
    }
    lines.sort();
    lines.dedup();
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn pinned_busy_port_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let err = check_pinned_port("127.0.0.1", port, "node1").unwrap_err();
        assert!(err.message.contains(&port.to_string()));
        assert!(err.message.contains("node1"));
    }

    #[test]
    fn chosen_port_skips_busy_ones() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = listener.local_addr().unwrap().port();
        let port = choose_port("127.0.0.1", (busy, busy.saturating_add(1)), &[]).unwrap();
        assert_eq!(port, busy + 1);
    }

    #[test]
    fn squatted_user_directory_is_replaced() {
        let base = tempfile::tempdir().unwrap();
        std::fs::write(base.path().join("hpc-rstudio-4242"), "squatter").unwrap();
        let dirs = NodeDirs::create(base.path(), 4242, "s1").unwrap();
        assert!(dirs.root.starts_with(base.path()));
        assert!(!dirs.root.starts_with(base.path().join("hpc-rstudio-4242")));
        let mode = std::fs::metadata(dirs.root.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn node_dirs_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let dirs = NodeDirs::create(base.path(), 4242, "s1").unwrap();
        let mode = std::fs::metadata(&dirs.root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(dirs.bind_list(false).contains(":/var/lib/rstudio-server,"));
        assert!(dirs.bind_list(false).contains(":/tmp,"));
        assert!(!dirs.bind_list(true).contains(":/tmp,"));
        assert_eq!(
            dirs.host_run_path("/run/hpc-rstudio/x"),
            dirs.run.join("hpc-rstudio/x")
        );
    }
}
