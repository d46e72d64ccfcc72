//! Runs external programs (the container runtime, SLURM's commands, ssh) in one way: the argv is
//! logged at debug level, both pipes are drained, a timeout applies, and a failure carries the
//! argv, the exit status and stderr.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};

/// What a finished program printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Formats an argv for messages, quoting arguments that contain spaces or quotes.
pub fn display_argv(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    for arg in cmd.get_args() {
        parts.push(crate::shell::quote(&arg.to_string_lossy()));
    }
    parts.join(" ")
}

/// Runs `cmd` to completion with `stdin` as its input, killing it after `timeout`.
///
/// Returns the output whatever the exit status; only a program that cannot be started or does not
/// finish in time is an error.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    let shown = display_argv(cmd);
    tracing::debug!(command = %shown, "running");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|err| {
        let program = cmd.get_program().to_string_lossy().into_owned();
        if err.kind() == std::io::ErrorKind::NotFound {
            Error::failed(format!("program not found: {program}"))
                .with_hint(format!("check that `{program}` is installed and on PATH"))
        } else {
            Error::failed(format!("failed to start `{shown}`: {err}"))
        }
    })?;

    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    // Each pipe is drained on its own thread so that a chatty program cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().expect("stdout is piped");
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });

    let status = match wait_timeout::ChildExt::wait_timeout(&mut child, timeout)? {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::failed(format!(
                "`{shown}` did not finish within {} s and was killed",
                timeout.as_secs()
            )));
        }
    };
    let stdout = String::from_utf8_lossy(&out_thread.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_thread.join().unwrap_or_default()).into_owned();
    tracing::debug!(command = %shown, %status, stdout = %stdout.trim_end(), stderr = %stderr.trim_end(), "finished");
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Runs `cmd` like [`run`] and turns a non-zero exit into an error that shows stderr.
pub fn run_checked(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let output = run(cmd, None, timeout)?;
    if output.success() {
        return Ok(output);
    }
    Err(failure(cmd, &output))
}

/// Builds the error for a program that exited with a failure status.
pub fn failure(cmd: &Command, output: &Output) -> Error {
    let details: Vec<String> = output
        .stderr
        .lines()
        .chain(output.stdout.lines())
        .filter(|line| !line.trim().is_empty())
        .take(20)
        .map(str::to_owned)
        .collect();
    Error::failed(format!(
        "`{}` failed ({})",
        display_argv(cmd),
        output.status
    ))
    .with_details(details)
}
