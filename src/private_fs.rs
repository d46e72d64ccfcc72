//! Private files and directories: directories 0700 owned by the user, files 0600, written
//! atomically so that a reader never sees half a file and two writers never mix their bytes.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// Creates `dir` and its missing parents with mode 0700, then checks that `dir` is a real
/// directory (not a symbolic link) owned by this user and closed to others.
///
/// A directory that another user created in a shared place such as `/tmp` is rejected, because
/// its owner could read or replace what we put there.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|err| Error::io("create directory", dir, err))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|err| Error::io("inspect", dir, err))?;
    let uid = nix::unistd::getuid().as_raw();
    if !meta.is_dir() {
        return Err(
            Error::failed(format!("{} is not a directory", dir.display()))
                .with_hint("remove it or choose another directory"),
        );
    }
    if meta.uid() != uid {
        return Err(Error::failed(format!(
            "directory {} belongs to uid {}, not to you (uid {uid})",
            dir.display(),
            meta.uid()
        ))
        .with_hint("another user created it; ask them or an administrator to remove it, or set node_tmp to another directory"));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|err| Error::io("restrict permissions of", dir, err))?;
    }
    Ok(())
}

/// Writes `contents` to `path` with mode `mode`, atomically: a temporary file in the same
/// directory is written, synced and renamed over `path`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::failed(format!("{} has no parent", path.display())))?;
    let mut file = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(|err| Error::io("create a temporary file in", dir, err))?;
    file.write_all(contents)
        .map_err(|err| Error::io("write", file.path(), err))?;
    file.as_file()
        .sync_all()
        .map_err(|err| Error::io("sync", file.path(), err))?;
    file.persist(path)
        .map_err(|err| Error::io("replace", path, err.error))?;
    Ok(())
}

/// Writes a file only the user can read (0600), atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    write_atomic(path, contents, 0o600)
}

/// Reads the last `count` lines of a text file, or none when it cannot be read.
pub fn tail_lines(path: &Path, count: usize) -> Vec<String> {
    let Ok(text) = std::fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(count);
    lines[start..].iter().map(|l| (*l).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_is_0700() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a/b");
        create_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn private_dir_rejects_symlink() {
        let base = tempfile::tempdir().unwrap();
        let target = base.path().join("target");
        std::fs::create_dir(&target).unwrap();
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create_private_dir(&link).is_err());
    }

    #[test]
    fn private_dir_tightens_mode() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("open");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn atomic_write_sets_mode() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("secret");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn tail_skips_blank_lines() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("log");
        std::fs::write(&path, "a\n\nb\nc\n\n").unwrap();
        assert_eq!(tail_lines(&path, 2), vec!["b", "c"]);
    }
}
