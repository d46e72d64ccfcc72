//! RStudio's logging: `/etc/rstudio/logging.conf`, the start-up banner and the log line format.
//!
//! With `logger-type=syslog` (Rocker's setting) nothing but the banner reaches the terminal,
//! which is why real start-up failures look silent on a compute node. The stand-in drops
//! syslog messages instead of sending them, so tests never write to the host's log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::release::Release;
use crate::sys;

/// Path of the logging configuration every RStudio program reads at start.
pub const LOGGING_CONF: &str = "/etc/rstudio/logging.conf";

/// Destination of log messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Syslog,
    Stderr,
    /// A file `<log-dir>/<program>.log`.
    File(PathBuf),
}

/// Message severity, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    fn parse(text: &str) -> Option<Level> {
        match text.trim().to_ascii_lowercase().as_str() {
            "err" | "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARNING",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

/// The logging settings that apply to one program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggingConfig {
    pub destination: Destination,
    pub level: Level,
    /// The file the settings came from; `None` when it did not exist.
    pub loaded_from: Option<PathBuf>,
}

/// Returns the default `log-dir`: `/var/log/rstudio/rstudio-server` for root, otherwise
/// `$XDG_DATA_HOME/rstudio/log` or `~/.local/share/rstudio/log`.
pub fn default_log_dir() -> PathBuf {
    if sys::euid() == 0 {
        return PathBuf::from("/var/log/rstudio/rstudio-server");
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|value| !value.is_empty()) {
        return PathBuf::from(data).join("rstudio/log");
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".local/share/rstudio/log")
}

/// Parses logging.conf text for `program`: the `[*]` section applies to every program and an
/// `[@program]` section overrides it. Unknown keys are ignored.
pub fn parse_logging_conf(text: &str, program: &str, default_dir: &Path) -> LoggingConfig {
    let own_section = format!("[@{program}]");
    let mut general: Vec<(String, String)> = Vec::new();
    let mut specific: Vec<(String, String)> = Vec::new();
    let mut section = String::new();
    for raw_line in text.lines() {
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let pair = (key.trim().to_string(), value.trim().to_string());
        if section == "[*]" {
            general.push(pair);
        } else if section == own_section {
            specific.push(pair);
        }
    }
    let lookup = |key: &str| {
        specific
            .iter()
            .chain(general.iter())
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
    };
    let level = lookup("log-level")
        .and_then(|value| Level::parse(&value))
        .unwrap_or(Level::Warn);
    let destination = match lookup("logger-type").as_deref().map(str::trim) {
        Some("stderr") => Destination::Stderr,
        Some("file") => {
            let dir = lookup("log-dir").map_or_else(|| default_dir.to_path_buf(), PathBuf::from);
            Destination::File(dir.join(format!("{program}.log")))
        }
        _ => Destination::Syslog,
    };
    LoggingConfig {
        destination,
        level,
        loaded_from: None,
    }
}

/// Reads `path`; a missing file means syslog at level warn, RStudio's default.
pub fn load(path: &Path, program: &str) -> LoggingConfig {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut config = parse_logging_conf(&text, program, &default_log_dir());
            config.loaded_from = Some(path.to_path_buf());
            config
        }
        Err(_) => LoggingConfig {
            destination: Destination::Syslog,
            level: Level::Warn,
            loaded_from: None,
        },
    }
}

/// Writes log lines in RStudio's format: `<time> [<program>] <LEVEL> <message>`.
pub struct Logger {
    program: String,
    config: LoggingConfig,
    iso_timestamps: bool,
    /// Whether syslog messages are echoed to stderr, as RStudio does when stderr is a terminal.
    echo_to_terminal: bool,
    file: Option<Mutex<File>>,
}

impl Logger {
    /// Creates the logger, creating the log directory for file logging. When the log file cannot
    /// be opened, messages go to stderr instead and the reason is printed there.
    pub fn new(program: &str, release: Release, mut config: LoggingConfig) -> Logger {
        let mut file = None;
        if let Destination::File(path) = &config.destination {
            let opened = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| OpenOptions::new().create(true).append(true).open(path));
            match opened {
                Ok(handle) => file = Some(Mutex::new(handle)),
                Err(err) => {
                    eprintln!(
                        "Could not open log file {}: {}; logging to stderr",
                        path.display(),
                        sys::system_error(&err)
                    );
                    config.destination = Destination::Stderr;
                }
            }
        }
        Logger {
            program: program.to_string(),
            iso_timestamps: release.iso_log_timestamps(),
            echo_to_terminal: sys::is_terminal(2),
            config,
            file,
        }
    }

    /// Returns the configuration in use.
    pub fn config(&self) -> &LoggingConfig {
        &self.config
    }

    /// Returns the informational line RStudio prints after reading logging.conf, or `None` when
    /// there was no file.
    pub fn banner(&self) -> Option<String> {
        let path = self.config.loaded_from.as_ref()?;
        let target = match &self.config.destination {
            Destination::Syslog => "syslog".to_string(),
            Destination::Stderr => "stderr".to_string(),
            Destination::File(file) => file.display().to_string(),
        };
        let tty_note = if self.echo_to_terminal {
            "TTY detected. Printing informational message about logging configuration. "
        } else {
            ""
        };
        Some(format!(
            "{tty_note}Logging configuration loaded from '{}'. Logging to '{target}'.",
            path.display()
        ))
    }

    /// Prints the banner to stderr, if there is one.
    pub fn print_banner(&self) {
        if let Some(banner) = self.banner() {
            eprintln!("{banner}");
        }
    }

    /// Formats one log line without the trailing newline.
    pub fn format_line(&self, level: Level, message: &str) -> String {
        let (seconds, micros) = sys::now();
        let time = if self.iso_timestamps {
            sys::iso_timestamp(seconds, micros)
        } else {
            sys::legacy_timestamp(seconds)
        };
        format!("{time} [{}] {} {message}", self.program, level.label())
    }

    /// Logs `message` at `level` if the configured level lets it through.
    pub fn log(&self, level: Level, message: &str) {
        if level > self.config.level {
            return;
        }
        let line = self.format_line(level, message);
        match &self.config.destination {
            Destination::Stderr => eprintln!("{line}"),
            Destination::File(_) => {
                if let Some(file) = &self.file {
                    let mut handle = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    let _ = writeln!(handle, "{line}");
                }
            }
            Destination::Syslog => {
                if self.echo_to_terminal {
                    eprintln!("{line}");
                }
            }
        }
    }

    pub fn error(&self, message: &str) {
        self.log(Level::Error, message);
    }

    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocker_default_is_syslog_at_warn() {
        let text = "[*]\nlog-level=warn\nlogger-type=syslog\n";
        let config = parse_logging_conf(text, "rserver", Path::new("/logs"));
        assert_eq!(config.destination, Destination::Syslog);
        assert_eq!(config.level, Level::Warn);
    }

    #[test]
    fn program_section_overrides_general() {
        let text = "[*]\nlogger-type=syslog\n[@rserver]\nlogger-type=file\nlog-dir=/x\n\
                    log-level=info\n[@rsession]\nlogger-type=stderr\n";
        let config = parse_logging_conf(text, "rserver", Path::new("/logs"));
        assert_eq!(
            config.destination,
            Destination::File(PathBuf::from("/x/rserver.log"))
        );
        assert_eq!(config.level, Level::Info);
        let session = parse_logging_conf(text, "rsession", Path::new("/logs"));
        assert_eq!(session.destination, Destination::Stderr);
    }

    #[test]
    fn file_logging_defaults_its_directory() {
        let config = parse_logging_conf(
            "[*]\nlogger-type=file\n",
            "rserver",
            Path::new("/home/u/log"),
        );
        assert_eq!(
            config.destination,
            Destination::File(PathBuf::from("/home/u/log/rserver.log"))
        );
    }

    #[test]
    fn banner_names_the_destination() {
        let config = LoggingConfig {
            destination: Destination::Syslog,
            level: Level::Warn,
            loaded_from: Some(PathBuf::from(LOGGING_CONF)),
        };
        let mut logger = Logger::new("rserver", Release::V2024_12, config);
        logger.echo_to_terminal = false;
        assert_eq!(
            logger.banner().unwrap(),
            "Logging configuration loaded from '/etc/rstudio/logging.conf'. Logging to 'syslog'."
        );
    }
}
