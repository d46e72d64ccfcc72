//! Session records under `$XDG_STATE_HOME/hpc-rstudio/sessions/<id>/`, one directory (0700) per
//! session. Each file in it has a single writer, and every write is atomic:
//!
//! - `session.json`: the resolved settings, image and runtime, and the job id; written by the
//!   command that starts the session.
//! - `server.json`: the server's state, node, port and exit details; written by the supervisor.
//! - `connection.json` (0600): URL, user name and password; written by the supervisor once the
//!   server answers.
//! - `rserver.log`: rserver's output; `job.out`: the batch job's output; `batch.sh`: the script.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::image::Image;
use crate::private_fs;
use crate::probe::Probe;
use crate::runtime::Runtime;
use crate::settings::Settings;

/// The file `stop` leaves in a session's directory before it signals the supervisor.
pub const STOP_MARKER: &str = "stop-requested";

/// How a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// In the foreground of `hpc-rstudio run`.
    Local,
    /// In a SLURM batch job.
    Batch,
}

/// What the launching command records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: String,
    pub created: String,
    pub mode: Mode,
    pub user: String,
    pub submit_host: String,
    pub login_host: Option<String>,
    pub settings: Settings,
    pub runtime: Runtime,
    pub image: Image,
    pub probe: Probe,
    pub job_id: Option<String>,
}

/// The server's lifecycle as the supervisor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    Starting,
    Ready,
    Stopping,
    Stopped,
    Failed,
}

impl ServerState {
    pub fn is_final(self) -> bool {
        matches!(self, ServerState::Stopped | ServerState::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Starting => "starting",
            ServerState::Ready => "ready",
            ServerState::Stopping => "stopping",
            ServerState::Stopped => "stopped",
            ServerState::Failed => "failed",
        }
    }
}

/// What the supervisor records about the running server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerRecord {
    pub state: ServerState,
    pub updated: String,
    pub node: String,
    pub supervisor_pid: u32,
    pub port: Option<u16>,
    /// The Unix socket's path on the node, in socket mode.
    pub socket: Option<PathBuf>,
    /// Why the server stopped or failed, in one line.
    pub message: Option<String>,
    /// Log lines that show the cause of a failure.
    #[serde(default)]
    pub log_lines: Vec<String>,
    pub hint: Option<String>,
    /// The number of R sessions signalled to save their state at the end.
    #[serde(default)]
    pub sessions_suspended: u32,
    /// How many R sessions wrote their suspended state at the end.
    #[serde(default)]
    pub sessions_saved: u32,
    /// How many R sessions ended with the supervisor's own stop signal, before they could save.
    #[serde(default)]
    pub sessions_lost: u32,
    /// Known errors rserver logged while the session ran.
    #[serde(default)]
    pub problems: Vec<Problem>,
    /// Effective limits at start: cgroup memory, ulimits and SLURM's memory variables.
    #[serde(default)]
    pub limits: Vec<String>,
}

/// A known error found in rserver's log while the session ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Problem {
    pub line: String,
    /// Cause and fix.
    pub hint: String,
}

/// The details a user needs to connect, kept in a 0600 file because they include the password.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connection {
    pub url: String,
    pub node: String,
    pub port: Option<u16>,
    pub socket: Option<PathBuf>,
    pub user: String,
    pub password: String,
}

/// The directory of one session and the files in it.
#[derive(Debug, Clone)]
pub struct SessionDir {
    pub id: String,
    pub path: PathBuf,
}

/// The root of all session records.
pub fn sessions_root(state_dir: &Path) -> PathBuf {
    state_dir.join("sessions")
}

/// Makes a new session id: the UTC time of creation and a random suffix, for example
/// `20261204-163432-7f3a`.
pub fn new_id() -> String {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let compact: String = stamp
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    let compact = compact.replace('T', "-");
    let mut random = [0u8; 2];
    getrandom::fill(&mut random).expect("the system random source works");
    format!("{compact}-{:02x}{:02x}", random[0], random[1])
}

pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl SessionDir {
    /// Creates the directory of a new session.
    pub fn create(state_dir: &Path, id: &str) -> Result<SessionDir> {
        let path = sessions_root(state_dir).join(id);
        private_fs::create_private_dir(&path)?;
        Ok(SessionDir {
            id: id.to_owned(),
            path,
        })
    }

    /// Opens the directory of an existing session.
    pub fn open(state_dir: &Path, id: &str) -> Result<SessionDir> {
        let valid = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let path = sessions_root(state_dir).join(id);
        if !valid || !path.join("session.json").exists() {
            return Err(Error::usage(format!("no session with id '{id}'"))
                .with_hint("`hpc-rstudio list` shows your sessions and their ids"));
        }
        Ok(SessionDir {
            id: id.to_owned(),
            path,
        })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn write_session(&self, record: &SessionRecord) -> Result<()> {
        write_json(&self.file("session.json"), record)
    }

    pub fn read_session(&self) -> Result<SessionRecord> {
        read_json(&self.file("session.json"))?.ok_or_else(|| {
            Error::failed(format!(
                "session record {} is missing",
                self.file("session.json").display()
            ))
        })
    }

    pub fn write_server(&self, record: &ServerRecord) -> Result<()> {
        write_json(&self.file("server.json"), record)
    }

    pub fn read_server(&self) -> Result<Option<ServerRecord>> {
        read_json(&self.file("server.json"))
    }

    pub fn write_connection(&self, connection: &Connection) -> Result<()> {
        write_json(&self.file("connection.json"), connection)
    }

    pub fn read_connection(&self) -> Result<Option<Connection>> {
        read_json(&self.file("connection.json"))
    }

    pub fn log_path(&self) -> PathBuf {
        self.file("rserver.log")
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(value).expect("records serialize");
    text.push(b'\n');
    private_fs::write_private(path, &text)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(Error::io("read", path, err)),
    };
    serde_json::from_slice(&text).map(Some).map_err(|err| {
        Error::failed(format!("session file {} is damaged: {err}", path.display()))
            .with_hint("remove the session's directory if it is no longer needed")
    })
}

/// Lists the ids of all sessions, oldest first (ids begin with their creation time).
pub fn list_ids(state_dir: &Path) -> Result<Vec<String>> {
    let root = sessions_root(state_dir);
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(Error::io("read", &root, err)),
    };
    let mut ids: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("session.json").exists())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_sortable() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), "20261204-163432-7f3a".len(), "{a}");
        assert!(a[..15] <= b[..15]);
    }

    #[test]
    fn open_rejects_path_tricks() {
        let dir = tempfile::tempdir().unwrap();
        assert!(SessionDir::open(dir.path(), "../x").is_err());
        assert!(SessionDir::open(dir.path(), "").is_err());
    }
}
