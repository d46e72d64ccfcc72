//! rserver's start-up checks, each failing with the log messages the real rserver writes: the
//! server user, the server data directory, the 1.3 revocation list, the database, the secure
//! keys and the listening socket.
//!
//! Each check returns the error lines to log; the caller logs them and exits with status 1.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use crate::release::Release;
use crate::sys;

/// Log lines describing why start-up failed.
pub type Failure = Vec<String>;

/// Default database configuration file.
pub const DEFAULT_DATABASE_CONF: &str = "/etc/rstudio/database.conf";
/// Default SQLite directory.
pub const DEFAULT_DATABASE_DIR: &str = "/var/lib/rstudio-server";
/// Directory of the revocation list in 1.3 (`/var/run` is a link to `/run` in Rocker images).
pub const REVOCATION_LIST_DIR: &str = "/var/run/rstudio-server";
/// Default port of the open-source server.
pub const DEFAULT_PORT: u16 = 8787;

fn located(message: String, function: &str) -> String {
    format!("{message}; OCCURRED AT rstudio-standin {function}; LOGGED FROM: rserver main")
}

fn path_error(err: &io::Error, path: &Path, function: &str) -> String {
    located(
        format!("{} [path: {}]", sys::system_error(err), path.display()),
        function,
    )
}

/// Rejects a start without privilege whose `--server-user` is not the calling account
/// (2022.07 and later).
pub fn check_server_user(release: Release, server_user: &str) -> Result<(), Failure> {
    if !release.checks_server_user() || server_user.is_empty() || sys::euid() == 0 {
        return Ok(());
    }
    let Some(account) = sys::account_by_name(server_user) else {
        return Err(vec![format!(
            "Could not find details for server user '{server_user}'"
        )]);
    };
    let uid = sys::uid();
    if account.uid != uid {
        return Err(vec![format!(
            "Attempt to run server as user '{server_user}' (uid {}) from account '{}' (uid {uid}) \
             without privilege, which is required to run as a different uid",
            account.uid,
            sys::current_account_name()
        )]);
    }
    Ok(())
}

/// Creates the server data directory if missing and makes it mode 1777 (1.4 and later).
pub fn ensure_server_data_dir(path: &Path) -> Result<(), Failure> {
    if !path.is_dir() {
        fs::create_dir_all(path)
            .map_err(|err| vec![path_error(&err, path, "ensure_server_data_dir")])?;
    }
    let mode = fs::metadata(path)
        .map_err(|err| vec![path_error(&err, path, "ensure_server_data_dir")])?
        .permissions()
        .mode();
    if mode & 0o7777 == 0o1777 {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o1777)).map_err(|err| {
        vec![
            format!(
                "Could not change permissions for specified 'server-data-dir' - the directory \
                 ({}) must be writeable by all users and have the sticky bit set; \
                 LOGGED FROM: rserver main",
                path.display()
            ),
            path_error(&err, path, "change_file_mode"),
        ]
    })
}

/// Creates the 1.3 revocation list and takes its lock once, as 1.3 does at start.
pub fn init_revocation_list(dir: &Path) -> Result<(), Failure> {
    let fail = |err: io::Error, path: &Path| {
        vec![
            path_error(&err, path, "revocation_list::initialize"),
            "Could not acquire revocation list file lock; LOGGED FROM: rserver main".to_string(),
        ]
    };
    fs::create_dir_all(dir).map_err(|err| fail(err, dir))?;
    let lock_path = dir.join("revocation-list.lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|err| fail(err, &lock_path))?;
    // SAFETY: flock only operates on the descriptor, which `lock` keeps open.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err(fail(io::Error::last_os_error(), &lock_path));
    }
    let list = dir.join("revocation-list");
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&list)
        .map_err(|err| fail(err, &list))?;
    Ok(())
}

/// Settings read from database.conf.
#[derive(Debug, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub provider: String,
    pub directory: PathBuf,
}

/// Parses database.conf text (`key=value`, `#` comments).
pub fn parse_database_conf(text: &str) -> DatabaseConfig {
    let mut config = DatabaseConfig {
        provider: "sqlite".into(),
        directory: PathBuf::from(DEFAULT_DATABASE_DIR),
    };
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        match line
            .split_once('=')
            .map(|(key, value)| (key.trim(), value.trim()))
        {
            Some(("provider", value)) => config.provider = value.to_ascii_lowercase(),
            Some(("directory", value)) if !value.is_empty() => {
                config.directory = PathBuf::from(value)
            }
            _ => {}
        }
    }
    config
}

const UNABLE_TO_OPEN: &str =
    "database error 7 (Cannot establish connection to the database. unable to open database file)";
const READONLY: &str = "database error 7 (sqlite3_statement_backend::loadOne: attempt to write a \
                        readonly database) [description: Could not delete expired revoked cookies \
                        from the database, description: Could not read revoked cookies from the \
                        database]";

fn database_error(message: &str) -> Failure {
    vec![located(message.to_string(), "database::Connection")]
}

/// Opens (creates) the SQLite database named by the database configuration file, failing as
/// SQLite does when the file or its directory cannot be written. Returns the database path.
///
/// An empty file is a valid empty SQLite database, so the stand-in creates one and never writes
/// SQLite pages itself.
pub fn open_database(release: Release, config_file: Option<&str>) -> Result<PathBuf, Failure> {
    let conf_path = config_file.unwrap_or(DEFAULT_DATABASE_CONF);
    let config = parse_database_conf(&fs::read_to_string(conf_path).unwrap_or_default());
    if config.provider != "sqlite" {
        return Err(vec![format!(
            "Unsupported database provider '{}': the RStudio stand-in implements only sqlite",
            config.provider
        )]);
    }
    let file = config.directory.join(release.database_file_name());
    if fs::create_dir_all(&config.directory).is_err() {
        return Err(database_error(UNABLE_TO_OPEN));
    }
    if file.exists() {
        if OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file)
            .is_err()
        {
            // SQLite falls back to a read-only connection, and the first write fails.
            return Err(database_error(READONLY));
        }
        // A write also needs the rollback journal beside the file.
        if !directory_writable(&config.directory) {
            return Err(database_error(UNABLE_TO_OPEN));
        }
        return Ok(file);
    }
    match OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o644)
        .open(&file)
    {
        Ok(_) => Ok(file),
        Err(_) => Err(database_error(UNABLE_TO_OPEN)),
    }
}

fn directory_writable(dir: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access reads the NUL-terminated path only.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK) == 0 }
}

/// Returns the default path of a key file (`secure-cookie-key` or `session-rpc-key`):
/// `/tmp/rstudio-server/<name>` without privilege; for root `/etc/rstudio/<name>` when it
/// exists, else `/var/lib/rstudio-server/<name>`.
pub fn default_key_path(name: &str) -> PathBuf {
    if sys::euid() != 0 {
        return Path::new("/tmp/rstudio-server").join(name);
    }
    let etc = Path::new("/etc/rstudio").join(name);
    if etc.exists() {
        etc
    } else {
        Path::new("/var/lib/rstudio-server").join(name)
    }
}

/// Reads a key file, or creates it (mode 0600, in a new directory of mode 0700) with a random
/// key. A key this account cannot read, or one another uid made, fails with system error 13.
pub fn read_or_create_key(path: &Path) -> Result<Vec<u8>, Failure> {
    let function = "key_file::read_secure_key_file";
    match fs::metadata(path) {
        Ok(meta) => {
            let uid = sys::uid();
            if uid != 0 && meta.uid() != uid {
                let err = io::Error::from_raw_os_error(libc::EACCES);
                return Err(vec![path_error(&err, path, function)]);
            }
            let key = fs::read(path).map_err(|err| vec![path_error(&err, path, function)])?;
            if key.is_empty() {
                let err = io::Error::from_raw_os_error(libc::ENOENT);
                return Err(vec![path_error(&err, path, function)]);
            }
            Ok(key)
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|parent| !parent.is_dir()) {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(|err| vec![path_error(&err, parent, function)])?;
            }
            let key = new_uuid().into_bytes();
            let write = || -> io::Result<()> {
                let mut file = OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .mode(0o600)
                    .open(path)?;
                file.write_all(&key)?;
                fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            };
            write().map_err(|err| vec![path_error(&err, path, function)])?;
            Ok(key)
        }
        Err(err) => Err(vec![path_error(&err, path, function)]),
    }
}

/// Returns a random version 4 UUID, the form of RStudio's generated keys.
fn new_uuid() -> String {
    let mut bytes = sys::random_bytes(16).unwrap_or_else(|_| {
        // Without /dev/urandom, time and pid still give distinct test keys.
        let (seconds, micros) = sys::now();
        let seed = (seconds as u64) << 20 ^ u64::from(micros) ^ u64::from(std::process::id());
        seed.to_le_bytes().repeat(2)
    });
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = sys::hex(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The socket rserver accepts connections on.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Binds the Unix domain socket of `--www-socket` (2024.12): removes any file at the path,
/// creates a missing parent directory (mode 0777) and leaves the socket at mode 0700.
pub fn bind_unix_socket(path: &Path) -> Result<Listener, Failure> {
    let function = "http::LocalStreamAsyncServer::init";
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(vec![path_error(&err, path, function)]),
    }
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        if !parent.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o777)
                .create(parent)
                .map_err(|err| vec![path_error(&err, parent, function)])?;
        }
    }
    let listener =
        UnixListener::bind(path).map_err(|err| vec![path_error(&err, path, function)])?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(|err| vec![path_error(&err, path, function)])?;
    Ok(Listener::Unix(listener))
}

/// Binds `address:port` over TCP. `address` must be an IP address or `localhost`, because a
/// static binary cannot resolve names through NSS.
pub fn bind_tcp(address: &str, port: &str) -> Result<Listener, Failure> {
    let function = "http::init_tcp_ip_acceptor";
    let ip: IpAddr = match address.trim() {
        "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other.parse().map_err(|_| {
            vec![located(
                format!("Invalid www-address '{other}' (use an IP address)"),
                function,
            )]
        })?,
    };
    let port: u16 = if port.trim().is_empty() {
        DEFAULT_PORT
    } else {
        port.trim()
            .parse()
            .map_err(|_| vec![located(format!("Invalid www-port '{port}'"), function)])?
    };
    TcpListener::bind((ip, port))
        .map(Listener::Tcp)
        .map_err(|err| vec![located(sys::system_error(&err), function)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_conf_defaults_and_overrides() {
        let defaults = parse_database_conf("");
        assert_eq!(defaults.provider, "sqlite");
        assert_eq!(defaults.directory, PathBuf::from(DEFAULT_DATABASE_DIR));
        let custom = parse_database_conf("# x\nprovider=SQLite\ndirectory = /scratch/db\n");
        assert_eq!(custom.provider, "sqlite");
        assert_eq!(custom.directory, PathBuf::from("/scratch/db"));
    }

    #[test]
    fn uuid_has_version_4_form() {
        let uuid = new_uuid();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
    }

    #[test]
    fn taken_port_reports_system_error_98() {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port().to_string();
        let Err(lines) = bind_tcp("127.0.0.1", &port) else {
            panic!("second bind succeeded")
        };
        assert!(
            lines[0].starts_with("system error 98 (Address already in use)"),
            "{lines:?}"
        );
    }

    #[test]
    fn key_is_created_private_then_reread() {
        let dir = std::env::temp_dir().join(format!("standin-key-test-{}", std::process::id()));
        let path = dir.join("nested/secure-cookie-key");
        let created = read_or_create_key(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let parent_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(parent_mode & 0o777, 0o700);
        assert_eq!(read_or_create_key(&path).unwrap(), created);
        fs::write(&path, "").unwrap();
        let err = read_or_create_key(&path).unwrap_err();
        assert!(err[0].starts_with("system error 2 (No such file or directory) [path: "));
        fs::remove_dir_all(&dir).unwrap();
    }
}
