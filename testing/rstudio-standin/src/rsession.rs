//! The rsession stand-in: where it keeps state, the record it writes for the tests, and how it
//! handles SIGUSR1, SIGUSR2 and SIGTERM.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::sys;

/// Marker file that makes rsession fail as it does when R is newer than the RStudio build.
pub const R_TOO_NEW_MARKER: &str = "/etc/rstudio-standin/r-too-new";
/// Name of the record file in the session directory.
pub const RECORD_FILE: &str = "standin-record.json";
/// Name of the log, under the state root, that lists every session directory.
pub const SESSIONS_LOG: &str = "standin-sessions.log";
/// rsession's `session-timeout-minutes` default.
pub const DEFAULT_TIMEOUT_MINUTES: u64 = 120;

/// Environment variables copied into the record.
pub const RECORDED_ENV: &[&str] = &[
    "USER",
    "HOME",
    "R_LIBS_USER",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "LANG",
    "TZ",
    "RSTUDIO_WHICH_R",
    "RSTUDIO_SESSION_TIMEOUT",
    "PATH",
];

/// Returns the message the dynamic loader prints when the image's R lacks a symbol this
/// rsession build needs, for the program invoked as `program`.
pub fn r_too_new_message(program: &str) -> String {
    format!(
        "{program}: symbol lookup error: /usr/local/lib/R/lib/libR.so: undefined symbol: \
         Rf_countContexts"
    )
}

/// Returns the state root: `$RSTUDIO_DATA_HOME`, else `$XDG_DATA_HOME/rstudio`, else
/// `$HOME/.local/share/rstudio`. Empty variables count as unset.
pub fn state_root(lookup: impl Fn(&str) -> Option<String>) -> PathBuf {
    let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
    if let Some(root) = get("RSTUDIO_DATA_HOME") {
        return PathBuf::from(root);
    }
    if let Some(data) = get("XDG_DATA_HOME") {
        return Path::new(&data).join("rstudio");
    }
    Path::new(&get("HOME").unwrap_or_default()).join(".local/share/rstudio")
}

/// Parses `--session-timeout-minutes=N` or `--session-timeout-minutes N`; the last one wins.
pub fn timeout_minutes(args: &[String]) -> u64 {
    let mut minutes = DEFAULT_TIMEOUT_MINUTES;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let value = match arg.strip_prefix("--session-timeout-minutes") {
            Some(rest) if rest.starts_with('=') => Some(rest[1..].to_string()),
            Some("") => iter.next().cloned(),
            _ => None,
        };
        if let Some(parsed) = value.and_then(|value| value.trim().parse().ok()) {
            minutes = parsed;
        }
    }
    minutes
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ch if (ch as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", ch as u32);
            }
            ch => out.push(ch),
        }
    }
    out.push('"');
    out
}

/// Builds the JSON record: argv, pid, the recorded environment (`null` when unset) and the raw
/// text of `/proc/self/limits`.
pub fn record_json(
    args: &[String],
    pid: u32,
    env: impl Fn(&str) -> Option<String>,
    limits: &str,
) -> String {
    let argv: Vec<String> = args.iter().map(|arg| json_string(arg)).collect();
    let mut json = format!(
        "{{\n  \"argv\": [{}],\n  \"pid\": {pid},\n  \"env\": {{\n",
        argv.join(", ")
    );
    for (index, name) in RECORDED_ENV.iter().enumerate() {
        let value = env(name).map_or_else(|| "null".to_string(), |value| json_string(&value));
        let comma = if index + 1 < RECORDED_ENV.len() {
            ","
        } else {
            ""
        };
        let _ = writeln!(json, "    {}: {value}{comma}", json_string(name));
    }
    let _ = write!(json, "  }},\n  \"limits\": {}\n}}\n", json_string(limits));
    json
}

/// Writes `contents` to `path` through a temporary file and a rename, so readers never see a
/// partial file.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let temporary = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = fs::File::create(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&temporary, path)
}

/// Creates `sessions/active/session-<8 hex>/` under `root` and returns it.
pub fn create_session_dir(root: &Path) -> io::Result<PathBuf> {
    let active = root.join("sessions/active");
    fs::create_dir_all(&active)?;
    loop {
        let id = sys::hex(&sys::random_bytes(4)?);
        let dir = active.join(format!("session-{id}"));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
    }
}

/// Appends the session directory to `<root>/standin-sessions.log`, one per line.
pub fn log_session(root: &Path, session_dir: &Path) -> io::Result<()> {
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join(SESSIONS_LOG))?;
    writeln!(log, "{}", session_dir.display())
}

/// Writes `suspended-session-data/suspended` holding the current time (RFC 3339).
pub fn write_suspended_marker(session_dir: &Path) -> io::Result<PathBuf> {
    let data = session_dir.join("suspended-session-data");
    fs::create_dir_all(&data)?;
    let marker = data.join("suspended");
    write_atomically(
        &marker,
        format!("{}\n", sys::rfc3339(sys::now().0)).as_bytes(),
    )?;
    Ok(marker)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            owned
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        }
    }

    #[test]
    fn state_root_follows_rstudio_precedence() {
        let all = [
            ("RSTUDIO_DATA_HOME", "/d"),
            ("XDG_DATA_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(state_root(env_of(&all)), PathBuf::from("/d"));
        assert_eq!(state_root(env_of(&all[1..])), PathBuf::from("/x/rstudio"));
        assert_eq!(
            state_root(env_of(&all[2..])),
            PathBuf::from("/h/.local/share/rstudio")
        );
        let empty = [("RSTUDIO_DATA_HOME", ""), ("HOME", "/h")];
        assert_eq!(
            state_root(env_of(&empty)),
            PathBuf::from("/h/.local/share/rstudio")
        );
    }

    #[test]
    fn parses_the_session_timeout() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            timeout_minutes(&args(&["-u", "alice"])),
            DEFAULT_TIMEOUT_MINUTES
        );
        assert_eq!(
            timeout_minutes(&args(&["-u", "a", "--session-timeout-minutes=0"])),
            0
        );
        assert_eq!(
            timeout_minutes(&args(&["--session-timeout-minutes", "5"])),
            5
        );
    }

    #[test]
    fn record_is_json_with_nulls_for_unset_variables() {
        let json = record_json(
            &["-u".into(), "al\"ice".into()],
            42,
            env_of(&[("USER", "alice"), ("LANG", "en_US.UTF-8")]),
            "Limit\tSoft\n",
        );
        assert!(json.contains("\"argv\": [\"-u\", \"al\\\"ice\"]"), "{json}");
        assert!(json.contains("\"pid\": 42"));
        assert!(json.contains("\"USER\": \"alice\""));
        assert!(json.contains("\"TZ\": null"));
        assert!(json.contains("\"limits\": \"Limit\\tSoft\\n\""));
    }

    #[test]
    fn r_too_new_names_the_missing_symbol() {
        assert_eq!(
            r_too_new_message("/usr/lib/rstudio-server/bin/rsession"),
            "/usr/lib/rstudio-server/bin/rsession: symbol lookup error: \
             /usr/local/lib/R/lib/libR.so: undefined symbol: Rf_countContexts"
        );
    }
}
