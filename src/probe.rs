//! What an image's RStudio supports: the options its `rserver --help` lists, and the R and
//! RStudio versions. Probed once per image (by identity) and cached, because starting a
//! container costs a second or more.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::image::Image;
use crate::runtime::Runtime;

/// Where Rocker images (and RStudio's .deb packages) install the server's programs.
pub const RSERVER: &str = "/usr/lib/rstudio-server/bin/rserver";
pub const RSESSION: &str = "/usr/lib/rstudio-server/bin/rsession";
pub const PAM_HELPER: &str = "/usr/lib/rstudio-server/bin/pam-helper";

/// Bumped when the probe's content changes, so that old cache entries are not used.
const PROBE_FORMAT: u32 = 1;

/// The result of probing one image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    pub format: u32,
    pub options: BTreeSet<String>,
    pub rstudio_version: Option<String>,
    pub r_version: Option<String>,
    pub has_pam_helper: bool,
}

impl Probe {
    pub fn supports(&self, option: &str) -> bool {
        self.options.contains(option)
    }

    /// A short description for messages, for example "RStudio 2024.12.1+563 with R 4.4.2".
    pub fn describe(&self) -> String {
        format!(
            "RStudio {} with R {}",
            self.rstudio_version
                .as_deref()
                .unwrap_or("(version unknown)"),
            self.r_version.as_deref().unwrap_or("(version unknown)")
        )
    }
}

/// Returns the cached probe of `image`, probing it when there is none.
pub fn probe_cached(image: &Image, runtime: &Runtime, cache_dir: &Path) -> Result<Probe> {
    let path = cache_dir
        .join("probes")
        .join(format!("{}.json", image.identity()));
    if let Ok(text) = std::fs::read_to_string(&path) {
        match serde_json::from_str::<Probe>(&text) {
            Ok(probe) if probe.format == PROBE_FORMAT => {
                tracing::debug!(path = %path.display(), "using cached image probe");
                return Ok(probe);
            }
            _ => tracing::debug!(path = %path.display(), "ignoring an outdated image probe"),
        }
    }
    let probe = probe(image, runtime)?;
    let dir = path.parent().expect("probe path has a parent");
    crate::private_fs::create_private_dir(dir)?;
    let text = serde_json::to_string_pretty(&probe).expect("probe serializes");
    if let Err(err) = crate::private_fs::write_atomic(&path, text.as_bytes(), 0o600) {
        tracing::warn!("cannot cache the image probe: {err}");
    }
    Ok(probe)
}

/// Runs `rserver --help` and a short shell snippet inside the image.
pub fn probe(image: &Image, runtime: &Runtime) -> Result<Probe> {
    let timeout = Duration::from_secs(120);
    let mut cmd = runtime.command();
    cmd.args(["exec", "--cleanenv", "--no-home"])
        .arg(&image.path)
        .args([RSERVER, "--help"]);
    let output = crate::process::run(&mut cmd, None, timeout)?;
    let options = parse_help(&format!("{}\n{}", output.stdout, output.stderr));
    if options.is_empty() {
        return Err(crate::process::failure(&cmd, &output)
            .with_hint(format!(
                "the image does not look like a Rocker RStudio image: {RSERVER} did not list its options; use an image such as docker://rocker/rstudio:4.4.2"
            )));
    }

    // The image's environment (from its Docker ENV) contains the versions in Rocker images.
    let mut cmd = runtime.command();
    cmd.args(["exec", "--cleanenv", "--no-home"]).arg(&image.path).args([
        "/bin/sh",
        "-c",
        "env; test -x /usr/lib/rstudio-server/bin/pam-helper && echo HPC_RSTUDIO_HAS_PAM_HELPER=1",
    ]);
    let output = crate::process::run(&mut cmd, None, timeout)?;
    let value = |key: &str| {
        output
            .stdout
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
    };
    let probe = Probe {
        format: PROBE_FORMAT,
        options,
        rstudio_version: value("RSTUDIO_VERSION"),
        r_version: value("R_VERSION"),
        has_pam_helper: value("HPC_RSTUDIO_HAS_PAM_HELPER").is_some(),
    };
    tracing::info!(image = %image.path.display(), "probed image: {}", probe.describe());
    Ok(probe)
}

/// Collects every `--name` that `rserver --help` lists.
pub fn parse_help(text: &str) -> BTreeSet<String> {
    let mut options = BTreeSet::new();
    for word in text.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']') {
        let Some(name) = word.strip_prefix("--") else {
            continue;
        };
        let name = name.split('=').next().unwrap_or_default();
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            options.insert(name.to_owned());
        }
    }
    options
}

/// Runs the image's pam-helper as rserver does (`<user> rstudio 1`, the password on stdin) and
/// returns its output. `set_env` adds the variables that carry USER and PASSWORD into the
/// container, so a caller checks exactly the way its sessions pass them.
pub fn run_pam_helper(
    image: &Image,
    runtime: &Runtime,
    user: &str,
    password: &str,
    set_env: impl FnOnce(&mut std::process::Command),
) -> Result<crate::process::Output> {
    let mut cmd = runtime.command();
    cmd.args(["exec", "--cleanenv", "--no-home"])
        .arg(&image.path)
        .args([PAM_HELPER, user, "rstudio", "1"]);
    set_env(&mut cmd);
    let input = format!("{password}\n");
    crate::process::run(&mut cmd, Some(input.as_bytes()), Duration::from_secs(120))
}

/// Builds the error for an option the image's rserver does not know.
pub fn unsupported(option: &str, probe: &Probe, why: &str) -> Error {
    Error::usage(format!(
        "this image's rserver ({}) does not support --{option}",
        probe.describe()
    ))
    .with_hint(why.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_options() {
        let help = "  --www-port arg (=8787)    port\n  --server-user arg\n  --www-socket=PATH\n  --help\n";
        let options = parse_help(help);
        assert!(options.contains("www-port"));
        assert!(options.contains("server-user"));
        assert!(options.contains("www-socket"));
        assert!(!options.contains("auth-none"));
    }
}
