//! Settings: site configuration, user configuration, environment variables and flags, resolved
//! in that order of precedence (a flag wins over everything) into one [`Settings`] value that is
//! saved with each session.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::{LaunchArgs, ResourceArgs};
use crate::error::{Error, Result};
use crate::paths::User;
use crate::resources;

/// The image used when neither a flag nor a configuration file names one.
pub const DEFAULT_IMAGE: &str = "docker://rocker/rstudio:4.4.2";
/// The TCP ports tried when no port is pinned.
pub const DEFAULT_PORT_RANGE: (u16, u16) = (8787, 9786);

/// One configuration file, site or user. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub image: Option<String>,
    pub runtime: Option<String>,
    pub login_host: Option<String>,
    /// hpc-rstudio's path on the cluster, for `connect` run on the user's own computer.
    pub remote_command: Option<String>,
    pub image_cache: Option<PathBuf>,
    /// Node-local directory under which each session's private directories are made.
    pub node_tmp: Option<PathBuf>,
    /// Ports to choose from, as "FIRST-LAST".
    pub port_range: Option<String>,
    #[serde(default)]
    pub bind: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    pub start_timeout: Option<u64>,
    /// Minutes of idleness after which RStudio suspends an R session; 0 never suspends.
    pub session_timeout_minutes: Option<u32>,
    /// Minutes of inactivity after which RStudio signs the user out; 0 never does.
    pub auth_timeout_minutes: Option<u32>,
    pub auth_stay_signed_in_days: Option<u32>,
    pub locale: Option<String>,
    #[serde(default)]
    pub resources: FileResources,
}

/// The `[resources]` table of a configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileResources {
    pub time: Option<String>,
    pub cpus: Option<u32>,
    pub mem: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub gpus: Option<String>,
    #[serde(default)]
    pub sbatch_args: Vec<String>,
    pub save_lead: Option<u32>,
}

impl FileConfig {
    /// Reads a configuration file; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(FileConfig::default());
            }
            Err(err) => return Err(Error::io("read configuration file", path, err)),
        };
        toml::from_str(&text).map_err(|err| {
            let line = err
                .span()
                .map(|span| text[..span.start].lines().count().max(1));
            let place = line.map_or(String::new(), |l| format!(" line {l}"));
            Error::usage(format!(
                "invalid configuration file {}{place}: {}",
                path.display(),
                err.message()
            ))
            .with_hint(
                "fix or remove that line; the README's Configuration section lists the settings",
            )
        })
    }
}

/// SLURM resources of a batch job, checked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Resources {
    pub time: Option<String>,
    pub time_seconds: Option<u64>,
    pub cpus: Option<u32>,
    pub mem: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub gpus: Option<String>,
    pub sbatch_args: Vec<String>,
    pub save_lead: u32,
}

/// Everything a session needs, resolved from all sources and saved in its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub image: String,
    pub runtime: Option<String>,
    pub login_host: Option<String>,
    pub image_cache: PathBuf,
    pub node_tmp: Option<PathBuf>,
    pub port: Option<u16>,
    pub port_range: (u16, u16),
    pub socket: bool,
    /// Bind the host's /tmp instead of a private one.
    #[serde(default)]
    pub shared_tmp: bool,
    pub www_address: String,
    pub binds: Vec<String>,
    pub env: Vec<(String, String)>,
    pub rserver_options: Vec<(String, String)>,
    pub start_timeout: u64,
    pub session_timeout_minutes: u32,
    pub auth_timeout_minutes: u32,
    pub auth_stay_signed_in_days: u32,
    pub locale: String,
    pub cpus: Option<u32>,
    pub resources: Resources,
}

/// The two configuration files, read once.
pub struct Files {
    pub site: FileConfig,
    pub user: FileConfig,
}

impl Files {
    pub fn load(user: &User) -> Result<Files> {
        Ok(Files {
            site: FileConfig::load(&crate::paths::site_config_file())?,
            user: FileConfig::load(&crate::paths::user_config_file(user))?,
        })
    }

    /// The image cache directory from the files, else the user's cache directory.
    pub fn image_cache(&self, user: &User) -> PathBuf {
        self.user
            .image_cache
            .clone()
            .or_else(|| self.site.image_cache.clone())
            .unwrap_or_else(|| crate::paths::cache_dir(user).join("images"))
    }
}

/// Resolves the settings of a launch from flags (with their environment variables) and files.
pub fn resolve(
    user: &User,
    files: &Files,
    launch: &LaunchArgs,
    resources: Option<&ResourceArgs>,
) -> Result<Settings> {
    let (site, file) = (&files.site, &files.user);
    macro_rules! pick {
        ($flag:expr, $field:ident) => {
            $flag
                .clone()
                .or_else(|| file.$field.clone())
                .or_else(|| site.$field.clone())
        };
    }

    let port_range = match pick!(None::<String>, port_range) {
        Some(text) => parse_port_range(&text)?,
        None => DEFAULT_PORT_RANGE,
    };
    let mut binds = site.bind.clone();
    binds.extend(file.bind.iter().cloned());
    binds.extend(launch.binds.iter().cloned());

    let mut env_items = site.env.clone();
    env_items.extend(file.env.iter().cloned());
    env_items.extend(launch.env.iter().cloned());
    let env = env_items
        .iter()
        .map(|item| parse_env(item))
        .collect::<Result<Vec<_>>>()?;
    let rserver_options = launch
        .rserver_options
        .iter()
        .map(|item| parse_rserver_option(item))
        .collect::<Result<Vec<_>>>()?;

    let resources = resolve_resources(files, resources)?;
    let settings = Settings {
        image: pick!(launch.image, image).unwrap_or_else(|| DEFAULT_IMAGE.to_owned()),
        runtime: pick!(launch.runtime, runtime),
        login_host: None,
        image_cache: files.image_cache(user),
        node_tmp: pick!(None::<PathBuf>, node_tmp),
        port: launch.port,
        port_range,
        socket: launch.socket,
        shared_tmp: launch.shared_tmp,
        www_address: "0.0.0.0".to_owned(),
        binds,
        env,
        rserver_options,
        start_timeout: launch
            .start_timeout
            .or(file.start_timeout)
            .or(site.start_timeout)
            .unwrap_or(180),
        session_timeout_minutes: pick!(None::<u32>, session_timeout_minutes).unwrap_or(0),
        auth_timeout_minutes: pick!(None::<u32>, auth_timeout_minutes).unwrap_or(0),
        auth_stay_signed_in_days: pick!(None::<u32>, auth_stay_signed_in_days).unwrap_or(30),
        locale: pick!(None::<String>, locale).unwrap_or_else(|| "en_US.UTF-8".to_owned()),
        cpus: resources.cpus,
        resources,
    };
    check_binds(&settings.binds)?;
    if let Some(port) = settings.port {
        if port < 1024 {
            return Err(Error::usage(format!("invalid port {port}"))
                .with_hint("choose an unprivileged port from 1024 to 65535, or leave --port out so a free one is chosen"));
        }
    }
    if let Some(dir) = &settings.node_tmp {
        if !dir.is_absolute() {
            return Err(Error::usage(format!("node_tmp '{}' is not an absolute path", dir.display()))
                .with_hint("set node_tmp in the configuration file to an absolute node-local directory, for example /tmp or /local/scratch"));
        }
    }
    Ok(settings)
}

fn resolve_resources(files: &Files, args: Option<&ResourceArgs>) -> Result<Resources> {
    let (site, file) = (&files.site.resources, &files.user.resources);
    let args = args.cloned().unwrap_or_default();
    macro_rules! pick {
        ($field:ident) => {
            args.$field
                .clone()
                .or_else(|| file.$field.clone())
                .or_else(|| site.$field.clone())
        };
    }
    let time = pick!(time);
    let time_seconds = match &time {
        Some(text) => resources::parse_time(text)?,
        None => None,
    };
    let cpus = pick!(cpus);
    if let Some(cpus) = cpus {
        resources::check_cpus(cpus)?;
    }
    let mem = pick!(mem);
    if let Some(mem) = &mem {
        resources::check_mem(mem)?;
    }
    let partition = pick!(partition);
    if let Some(partition) = &partition {
        resources::check_name("partition", partition)?;
    }
    let account = pick!(account);
    if let Some(account) = &account {
        resources::check_name("account", account)?;
    }
    let gpus = pick!(gpus);
    if let Some(gpus) = &gpus {
        resources::check_gpus(gpus)?;
    }
    let mut sbatch_args = site.sbatch_args.clone();
    sbatch_args.extend(file.sbatch_args.iter().cloned());
    sbatch_args.extend(args.sbatch_args.iter().cloned());
    for arg in &sbatch_args {
        let name = arg.split('=').next().unwrap_or_default();
        let managed = MANAGED_SBATCH_OPTIONS.iter().any(|m| {
            name == *m || (m.len() == 2 && name.starts_with(m) && !name.starts_with("--"))
        });
        if managed {
            return Err(Error::usage(format!(
                "--sbatch-arg {arg} would override an option hpc-rstudio sets itself"
            ))
            .with_hint("use hpc-rstudio's own flags for time, CPUs, memory, partition, account and GPUs; output, signal and array options cannot be changed"));
        }
        if !arg.starts_with('-') || arg.contains(['\n', '\r']) {
            return Err(Error::usage(format!("invalid sbatch option '{arg}'"))
                .with_hint("give each option as one argument starting with a dash, for example --sbatch-arg=--qos=long"));
        }
    }
    let save_lead = pick!(save_lead).unwrap_or(120);
    if save_lead < 10 {
        return Err(Error::usage(format!("invalid save lead of {save_lead} s"))
            .with_hint("give R sessions at least 10 seconds to save their state, for example --save-lead 120"));
    }
    if let Some(limit) = time_seconds {
        if u64::from(save_lead) >= limit {
            return Err(Error::usage(format!(
                "the save lead of {save_lead} s is not shorter than the time limit of {limit} s"
            ))
            .with_hint("choose a longer --time or a shorter --save-lead"));
        }
    }
    Ok(Resources {
        time,
        time_seconds,
        cpus,
        mem,
        partition,
        account,
        gpus,
        sbatch_args,
        save_lead,
    })
}

/// Parses "FIRST-LAST" into an inclusive port range.
pub fn parse_port_range(text: &str) -> Result<(u16, u16)> {
    let parsed = text.split_once('-').and_then(|(first, last)| {
        Some((
            first.trim().parse::<u16>().ok()?,
            last.trim().parse::<u16>().ok()?,
        ))
    });
    match parsed {
        Some((first, last)) if first >= 1024 && first <= last => Ok((first, last)),
        _ => Err(Error::usage(format!("invalid port range '{text}'"))
            .with_hint("write it as FIRST-LAST with unprivileged ports, for example port_range = \"8787-9786\"")),
    }
}

/// Variables the session sets itself inside the container.
const RESERVED_VARIABLES: &[&str] = &["USER", "LOGNAME", "PASSWORD", "HOME"];

/// rserver options that hpc-rstudio sets for every session; a second value would make rserver
/// fail with "cannot be specified more than once" on the node.
const MANAGED_RSERVER_OPTIONS: &[&str] = &[
    "server-user",
    "server-daemonize",
    "www-address",
    "www-port",
    "www-socket",
    "auth-none",
    "auth-pam-helper-path",
    "auth-timeout-minutes",
    "auth-stay-signed-in-days",
    "auth-minimum-user-id",
    "secure-cookie-key-file",
    "database-config-file",
    "server-data-dir",
    "rsession-path",
];

/// sbatch options that hpc-rstudio sets itself or that break the one-job, one-server design.
const MANAGED_SBATCH_OPTIONS: &[&str] = &[
    "--output",
    "-o",
    "--error",
    "-e",
    "--signal",
    "--array",
    "-a",
    "--wrap",
    "--parsable",
    "--wait",
    "-W",
    "--job-name",
    "-J",
    "--time",
    "-t",
    "--cpus-per-task",
    "-c",
    "--mem",
    "--partition",
    "-p",
    "--account",
    "-A",
    "--gpus",
    "-G",
];

fn parse_env(item: &str) -> Result<(String, String)> {
    let valid_key = |key: &str| {
        !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    match item.split_once('=') {
        Some((key, _)) if RESERVED_VARIABLES.contains(&key) => Err(Error::usage(format!(
            "--env {key} is set by hpc-rstudio for every session and cannot be changed"
        ))
        .with_hint(
            "leave it out; the session's user name and password are printed when it is ready",
        )),
        Some((key, value)) if valid_key(key) => Ok((key.to_owned(), value.to_owned())),
        _ => Err(
            Error::usage(format!("invalid environment setting '{item}'")).with_hint(
                "write it as KEY=VALUE, where KEY has only letters, digits and underscores",
            ),
        ),
    }
}

fn parse_rserver_option(item: &str) -> Result<(String, String)> {
    let item = item.trim_start_matches('-');
    match item.split_once('=') {
        Some((name, _)) if MANAGED_RSERVER_OPTIONS.contains(&name) => Err(Error::usage(format!(
            "--rserver-option {name} is set by hpc-rstudio for every session"
        ))
        .with_hint("use hpc-rstudio's own flag where there is one (--port, --socket, --address), or leave it out")),
        Some((name, value))
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            Ok((name.to_owned(), value.to_owned()))
        }
        _ => Err(
            Error::usage(format!("invalid rserver option '{item}'")).with_hint(
                "write it as NAME=VALUE, for example --rserver-option www-frame-origin=same",
            ),
        ),
    }
}

/// One bind request, `SRC[:DEST[:OPTS]]`.
#[derive(Debug, PartialEq, Eq)]
pub struct Bind<'a> {
    pub source: &'a str,
    pub dest: &'a str,
}

pub fn parse_bind(item: &str) -> Result<Bind<'_>> {
    let mut parts = item.splitn(3, ':');
    let source = parts.next().unwrap_or_default();
    let dest = parts.next().unwrap_or(source);
    let opts = parts.next();
    let opts_ok = opts.is_none_or(|o| o.split(',').all(|o| matches!(o, "ro" | "rw")));
    if source.is_empty()
        || dest.is_empty()
        || !source.starts_with('/')
        || !dest.starts_with('/')
        || !opts_ok
    {
        return Err(Error::usage(format!("invalid bind '{item}'"))
            .with_hint("write it as SRC[:DEST[:ro|rw]] with absolute paths, for example /scratch/me:/scratch/me:ro"));
    }
    if source.contains(',') || dest.contains(',') {
        // The runtime splits a bind list at commas, so such a path would become two binds.
        return Err(Error::usage(format!(
            "bind '{item}' has a comma in a path, which the container runtime cannot bind"
        ))
        .with_hint("link the directory under a name without a comma (ln -s) and bind the link"));
    }
    Ok(Bind { source, dest })
}

/// Container paths where each session binds its own private directories, or where the image
/// keeps RStudio's programs and configuration. A bind at or below one of them would replace or
/// change what the session relies on: the runtime ignores a second bind to the same place, and
/// rserver makes its data directory below /run writable by all users.
const RESERVED_DESTINATIONS: &[&str] = &[
    "/run",
    "/tmp",
    "/var/lib/rstudio-server",
    "/etc/rstudio",
    "/usr/lib/rstudio-server",
];

/// Normalizes an absolute path lexically: repeated slashes and `.` go, `..` drops a component.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Checks that every bind source exists, so that the container does not fail to start with
/// "mount source ... doesn't exist" on the compute node, and that no bind lands on a reserved
/// place of the session.
fn check_binds(binds: &[String]) -> Result<()> {
    for item in binds {
        let bind = parse_bind(item)?;
        let dest = normalize(bind.dest);
        let reserved = RESERVED_DESTINATIONS
            .iter()
            .find(|r| dest == **r || dest.starts_with(&format!("{r}/")));
        if let Some(reserved) = reserved {
            return Err(Error::usage(format!(
                "bind destination {dest} in '{item}' is reserved: the session keeps its private files or RStudio's own files at {reserved}"
            ))
            .with_hint("bind your data somewhere else, for example under /scratch or /data"));
        }
        if !Path::new(bind.source).exists() {
            return Err(
                Error::usage(format!("bind source {} does not exist", bind.source)).with_hint(
                    format!(
                        "create it or fix the bind '{item}' (from --bind or a configuration file)"
                    ),
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_forms() {
        assert_eq!(parse_port_range("8787-9786").unwrap(), (8787, 9786));
        assert!(parse_port_range("80-90").is_err());
        assert!(parse_port_range("9000-8000").is_err());
        assert!(parse_port_range("x").is_err());
    }

    #[test]
    fn managed_options_are_rejected() {
        assert!(parse_rserver_option("www-port=9000").is_err());
        assert!(parse_rserver_option("--auth-none=1").is_err());
        assert!(parse_rserver_option("www-frame-origin=same").is_ok());
        assert!(parse_env("PASSWORD=x").is_err());
        assert!(parse_env("USER=x").is_err());
    }

    #[test]
    fn env_forms() {
        assert_eq!(
            parse_env("A_B=1=2").unwrap(),
            ("A_B".to_owned(), "1=2".to_owned())
        );
        assert!(parse_env("1A=x").is_err());
        assert!(parse_env("NOVALUE").is_err());
        assert!(parse_env("A-B=x").is_err());
    }

    #[test]
    fn bind_forms() {
        assert_eq!(
            parse_bind("/a").unwrap(),
            Bind {
                source: "/a",
                dest: "/a"
            }
        );
        assert_eq!(
            parse_bind("/a:/b:ro").unwrap(),
            Bind {
                source: "/a",
                dest: "/b"
            }
        );
        assert!(parse_bind("a:/b").is_err());
        assert!(parse_bind("/a:/b:xx").is_err());
        assert!(parse_bind("/a,b:/data").is_err());
        assert!(parse_bind("/a:/da,ta").is_err());
    }

    #[test]
    fn reserved_bind_destination_is_rejected() {
        let err = check_binds(&["/etc:/var/lib/rstudio-server:ro".to_owned()]).unwrap_err();
        assert!(
            err.message.contains("/var/lib/rstudio-server"),
            "{}",
            err.message
        );
        assert!(check_binds(&["/etc:/tmp/".to_owned()]).is_err());
        for sneaky in [
            "/run/rstudio-server",
            "//run",
            "/run/.",
            "/tmp/../run",
            "/./tmp",
            "/tmp/rstudio-server",
            "/etc/rstudio",
            "/usr/lib/rstudio-server/bin",
        ] {
            let item = format!("/etc:{sneaky}");
            assert!(
                check_binds(std::slice::from_ref(&item)).is_err(),
                "{item} was accepted"
            );
        }
        assert!(check_binds(&["/etc:/runner".to_owned()]).is_ok());
        assert!(check_binds(&["/etc:/data".to_owned()]).is_ok());
    }

    #[test]
    fn unknown_config_key_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "imgae = \"x\"\n").unwrap();
        let err = FileConfig::load(&path).unwrap_err();
        assert!(err.message.contains("imgae"), "{}", err.message);
    }

    #[test]
    fn config_file_reads_resources() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "login_host = \"login1\"\n[resources]\ntime = \"1:00:00\"\ncpus = 4\n",
        )
        .unwrap();
        let config = FileConfig::load(&path).unwrap();
        assert_eq!(config.login_host.as_deref(), Some("login1"));
        assert_eq!(config.resources.cpus, Some(4));
    }
}
