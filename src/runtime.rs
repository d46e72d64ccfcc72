//! The container runtime: Apptainer or SingularityCE, found on PATH, with its version and the
//! way it carries environment variables into a container.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which runtime family a program belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Flavor {
    Apptainer,
    SingularityCe,
}

/// A container runtime found on this host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Runtime {
    pub program: PathBuf,
    pub flavor: Flavor,
    /// The version as the program prints it, for example "1.4.5-2~bookworm".
    pub version: String,
}

impl Runtime {
    /// Finds the runtime: the one `requested` names, else `apptainer`, else `singularity`.
    pub fn detect(requested: Option<&str>) -> Result<Runtime> {
        let candidates: Vec<&str> = match requested {
            Some(name) => vec![name],
            None => vec!["apptainer", "singularity"],
        };
        for name in &candidates {
            if let Some(program) = find_program(name) {
                return Runtime::inspect(program);
            }
        }
        Err(Error::failed(format!(
            "no container runtime found: looked for {} on PATH",
            candidates.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(" and ")
        ))
        .with_hint("on clusters the runtime usually comes from a module: try `module load apptainer` (or `module load singularity`), then run this again"))
    }

    /// Reads the version of the runtime at `program` and works out its flavor.
    pub fn inspect(program: PathBuf) -> Result<Runtime> {
        let mut cmd = Command::new(&program);
        cmd.arg("--version");
        let output = crate::process::run_checked(&mut cmd, Duration::from_secs(30))?;
        let (flavor, version) = parse_version(&output.stdout).ok_or_else(|| {
            Error::failed(format!(
                "cannot read the version of {}: it printed '{}'",
                program.display(),
                output.stdout.trim()
            ))
            .with_hint("use --runtime with the path of apptainer or singularity (SingularityCE)")
        })?;
        tracing::debug!(program = %program.display(), ?flavor, %version, "container runtime");
        Ok(Runtime {
            program,
            flavor,
            version,
        })
    }

    /// The prefix that sets a variable inside the container. Apptainer reads `APPTAINERENV_`
    /// (its `SINGULARITYENV_` support is deprecated and warns); SingularityCE reads
    /// `SINGULARITYENV_`.
    pub fn env_prefix(&self) -> &'static str {
        match self.flavor {
            Flavor::Apptainer => "APPTAINERENV_",
            Flavor::SingularityCe => "SINGULARITYENV_",
        }
    }

    pub fn command(&self) -> Command {
        Command::new(&self.program)
    }
}

/// Parses `apptainer version 1.4.5` or `singularity-ce version 4.1.0` into flavor and version.
pub fn parse_version(text: &str) -> Option<(Flavor, String)> {
    let line = text.lines().find(|l| l.contains("version"))?.trim();
    let (name, version) = line.split_once(" version ")?;
    let flavor = match name.trim() {
        "apptainer" => Flavor::Apptainer,
        "singularity-ce" | "singularity" => Flavor::SingularityCe,
        _ => return None,
    };
    let version = version.trim().to_owned();
    leading_triple(&version)?;
    Some((flavor, version))
}

fn leading_triple(version: &str) -> Option<(u32, u32, u32)> {
    let end = version
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(version.len());
    let mut parts = version[..end].split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Looks `name` up on PATH; a name with a slash is taken as a path.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return is_executable(&path).then_some(path);
    }
    let path_var = std::env::var_os("PATH")?;
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apptainer_version() {
        let (flavor, version) =
            parse_version("apptainer version 1.4.5-2~bookworm.compat1\n").unwrap();
        assert_eq!(flavor, Flavor::Apptainer);
        assert_eq!(version, "1.4.5-2~bookworm.compat1");
        assert_eq!(leading_triple(&version), Some((1, 4, 5)));
    }

    #[test]
    fn singularity_ce_version() {
        let (flavor, version) =
            parse_version("singularity-ce version 4.5.0-64-gec0433152\n").unwrap();
        assert_eq!(flavor, Flavor::SingularityCe);
        assert_eq!(leading_triple(&version), Some((4, 5, 0)));
    }

    #[test]
    fn unknown_output() {
        assert!(parse_version("podman version 4.3.1").is_none());
        assert!(parse_version("").is_none());
    }

    #[test]
    fn missing_runtime_names_programs() {
        let err = Runtime::detect(Some("no-such-runtime-xyz")).unwrap_err();
        assert!(
            err.message.contains("`no-such-runtime-xyz`"),
            "{}",
            err.message
        );
        assert!(err.hint.unwrap().contains("module load apptainer"));
    }
}
