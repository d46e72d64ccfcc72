//! Local state of `connect` under `$XDG_STATE_HOME/hpc-rstudio/connect/` (0700): one record
//! per attached session (0600) that names the ssh process carrying its tunnel, and the ssh
//! master's messages. No password is written here.

use std::path::PathBuf;

use serde::Serialize;

use crate::error::Result;
use crate::paths::{self, User};
use crate::private_fs;

/// Creates and returns the private state directory of `connect`.
pub fn dir(user: &User) -> Result<PathBuf> {
    let dir = paths::state_dir(user).join("connect");
    private_fs::create_private_dir(&dir)?;
    Ok(dir)
}

/// Record of one running `connect` and its tunnel.
#[derive(Debug, Serialize)]
pub struct Attached<'a> {
    pub host: &'a str,
    pub session: &'a str,
    pub job: Option<&'a str>,
    pub node: &'a str,
    pub url: &'a str,
    pub local_port: u16,
    /// The ssh master that carries the tunnel.
    pub ssh_pid: u32,
    pub control_socket: &'a std::path::Path,
    /// The `connect` process itself.
    pub pid: u32,
    pub updated: String,
}

/// Returns the path of one session's record file.
pub fn record_path(user: &User, session: &str) -> Result<PathBuf> {
    Ok(dir(user)?.join(format!("{session}.json")))
}

pub fn write(user: &User, record: &Attached) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(record).expect("records serialize");
    text.push(b'\n');
    private_fs::write_private(&record_path(user, record.session)?, &text)
}

pub fn remove(user: &User, session: &str) {
    if let Ok(path) = record_path(user, session) {
        let _ = std::fs::remove_file(path);
    }
}
