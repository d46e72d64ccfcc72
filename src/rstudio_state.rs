//! RStudio's saved user state on the host: `$RSTUDIO_DATA_HOME`, else `$XDG_DATA_HOME/rstudio`,
//! else `~/.local/share/rstudio` (RStudio 1.4 and later). Its size, stale lock files, whether
//! sessions were saved at the end, and moving it aside for a fresh start.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::paths::User;

/// A lock file counts as stale past this age even when it names no process.
/// NOTE: RStudio's lock file formats are not documented; age and a dead pid are heuristics.
const STALE_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where RStudio keeps user state inside the container, seen from the host: the session's
/// `--env` values win, since the host's own XDG variables do not reach the container.
pub fn state_root(user: &User, env: &[(String, String)]) -> PathBuf {
    let lookup = |key: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| PathBuf::from(v))
    };
    if let Some(dir) = lookup("RSTUDIO_DATA_HOME") {
        return dir;
    }
    if let Some(dir) = lookup("XDG_DATA_HOME") {
        return dir.join("rstudio");
    }
    user.home.join(".local/share/rstudio")
}

/// Lock files below `root` whose process is gone or which are very old.
pub fn stale_locks(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = path.symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name == "lock" || name.ends_with(".lock") || name.ends_with("-lock")) {
                continue;
            }
            let old = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_some_and(|age| age > STALE_AGE);
            let dead_pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| {
                    text.split(|c: char| !c.is_ascii_digit())
                        .find(|w| !w.is_empty())
                        .and_then(|w| w.parse::<i32>().ok())
                })
                .is_some_and(|pid| pid > 0 && !crate::procs::alive(pid));
            if old || dead_pid {
                found.push(path);
            }
        }
    }
    found
}

/// Counts R sessions whose suspended data was written at or after `since`.
pub fn sessions_saved_since(root: &Path, since: SystemTime) -> u32 {
    let Ok(entries) = std::fs::read_dir(root.join("sessions/active")) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| {
            std::fs::metadata(entry.path().join("suspended-session-data"))
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified >= since)
        })
        .count() as u32
}

/// Moves the state directory aside to `<root>.moved-<UTC time>` so RStudio starts clean; the
/// old state is kept. Returns the new name, or `None` when there was nothing to move.
pub fn move_aside(root: &Path) -> Result<Option<PathBuf>> {
    if !root.exists() {
        return Ok(None);
    }
    let stamp: String = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let target = PathBuf::from(format!("{}.moved-{stamp}", root.display()));
    if target.exists() {
        return Err(
            Error::failed(format!("{} already exists", target.display()))
                .with_hint("wait a second and try again"),
        );
    }
    std::fs::rename(root, &target).map_err(|err| Error::io("move aside", root, err))?;
    Ok(Some(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            name: "u".into(),
            uid: 1000,
            home: "/home/u".into(),
        }
    }

    #[test]
    fn root_follows_env() {
        assert_eq!(
            state_root(&user(), &[]),
            PathBuf::from("/home/u/.local/share/rstudio")
        );
        let env = vec![("XDG_DATA_HOME".to_owned(), "/x".to_owned())];
        assert_eq!(state_root(&user(), &env), PathBuf::from("/x/rstudio"));
        let env = vec![("RSTUDIO_DATA_HOME".to_owned(), "/r".to_owned())];
        assert_eq!(state_root(&user(), &env), PathBuf::from("/r"));
    }

    #[test]
    fn dead_pid_lock_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sessions/active/s1")).unwrap();
        std::fs::write(dir.path().join("sessions/active/s1/lock"), "999999999").unwrap();
        std::fs::write(dir.path().join("live.lock"), std::process::id().to_string()).unwrap();
        let stale = stale_locks(dir.path());
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert!(stale[0].ends_with("s1/lock"));
    }

    #[test]
    fn move_aside_keeps_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rstudio");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("keep"), "x").unwrap();
        let moved = move_aside(&root).unwrap().unwrap();
        assert!(!root.exists());
        assert_eq!(std::fs::read_to_string(moved.join("keep")).unwrap(), "x");
        assert!(move_aside(&root).unwrap().is_none());
    }
}
