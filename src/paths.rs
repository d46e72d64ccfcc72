//! Where hpc-rstudio keeps its files (XDG base directories) and who the user is.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The user running the tool: name, uid and home directory.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub home: PathBuf,
}

impl User {
    /// Looks up the current user from the password database (which includes LDAP or SSSD users
    /// where the C library is set up for them), falling back to `id -un` for the name.
    pub fn current() -> Result<User> {
        let uid = nix::unistd::getuid();
        let entry = nix::unistd::User::from_uid(uid).ok().flatten();
        let name = match &entry {
            Some(entry) => entry.name.clone(),
            None => name_from_id_command()?,
        };
        let home = match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => PathBuf::from(home),
            None => match entry {
                Some(entry) => entry.dir,
                None => {
                    return Err(Error::failed(
                        "HOME is not set and the user has no home directory entry",
                    )
                    .with_hint("set HOME to your home directory"));
                }
            },
        };
        Ok(User {
            name,
            uid: uid.as_raw(),
            home,
        })
    }
}

fn name_from_id_command() -> Result<String> {
    let output = std::process::Command::new("id").arg("-un").output()?;
    let name = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() && !name.is_empty() {
        return Ok(name);
    }
    Err(Error::failed(format!(
        "cannot find the user name for uid {}",
        nix::unistd::getuid()
    )))
}

fn xdg_dir(variable: &str, home: &Path, default: &str) -> PathBuf {
    match std::env::var_os(variable) {
        // The XDG specification says relative paths are invalid and must be ignored.
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        _ => home.join(default),
    }
}

/// The directory holding session records: `$XDG_STATE_HOME/hpc-rstudio`.
pub fn state_dir(user: &User) -> PathBuf {
    xdg_dir("XDG_STATE_HOME", &user.home, ".local/state").join("hpc-rstudio")
}

/// The directory for caches (image probes, pulled images): `$XDG_CACHE_HOME/hpc-rstudio`.
pub fn cache_dir(user: &User) -> PathBuf {
    xdg_dir("XDG_CACHE_HOME", &user.home, ".cache").join("hpc-rstudio")
}

/// The user's configuration file: `$XDG_CONFIG_HOME/hpc-rstudio/config.toml`.
pub fn user_config_file(user: &User) -> PathBuf {
    xdg_dir("XDG_CONFIG_HOME", &user.home, ".config").join("hpc-rstudio/config.toml")
}

/// The site configuration file, owned by the cluster's administrators.
pub fn site_config_file() -> PathBuf {
    match std::env::var_os("HPC_RSTUDIO_SITE_CONFIG") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from("/etc/hpc-rstudio/config.toml"),
    }
}

/// This host's short name, as SLURM and ssh users write it.
pub fn short_hostname() -> String {
    let name = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    name.split('.').next().unwrap_or(&name).to_owned()
}

/// This host's name as the system reports it (fully qualified where the system is set up so).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}
