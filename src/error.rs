//! The error the user sees: what failed, on which value, why, and what to do.

use std::fmt;
use std::process::ExitCode;

/// How a failure maps to the process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Invalid input: a flag, a configuration value, an image path. Nothing was started.
    Usage,
    /// The launch or an external program failed.
    Failed,
}

impl Kind {
    pub fn exit_code(self) -> ExitCode {
        match self {
            Kind::Usage => ExitCode::from(2),
            Kind::Failed => ExitCode::from(1),
        }
    }
}

/// A failure with its message, an optional fix, and the log lines that explain it.
#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    pub hint: Option<String>,
    /// Lines from a log or from a program's output that show the cause.
    pub details: Vec<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn usage(message: impl Into<String>) -> Error {
        Error {
            kind: Kind::Usage,
            message: message.into(),
            hint: None,
            details: Vec::new(),
        }
    }

    pub fn failed(message: impl Into<String>) -> Error {
        Error {
            kind: Kind::Failed,
            message: message.into(),
            hint: None,
            details: Vec::new(),
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_details(mut self, details: Vec<String>) -> Error {
        self.details = details;
        self
    }

    /// Wraps an I/O error on `path` as a failure naming the action and the path.
    pub fn io(action: &str, path: &std::path::Path, err: std::io::Error) -> Error {
        Error::failed(format!("failed to {action} {}: {err}", path.display()))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Error {
        // fs-err puts the path into the message, so the text alone names the file.
        Error::failed(err.to_string())
    }
}

/// Prints the error to stderr in the `error:` / `hint:` form.
pub fn report(err: &Error) {
    eprintln!("error: {}", err.message);
    for line in &err.details {
        eprintln!("  | {line}");
    }
    if let Some(hint) = &err.hint {
        eprintln!("hint: {hint}");
    }
}
