//! rsession stand-in: records how it was started, then waits for a signal or its idle timeout.
//!
//! rserver starts it as `rsession -u <user> [--session-timeout-minutes=N]`. SIGUSR2 (forced)
//! and SIGUSR1 (cooperative) suspend it: it writes the suspended marker and exits 0. SIGTERM
//! ends it without saving. The idle timeout (120 minutes unless given; 0 means never) suspends
//! it like SIGUSR1.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::Path;
use std::process::ExitCode;

use rstudio_standin::rsession::{self, R_TOO_NEW_MARKER, RECORD_FILE};
use rstudio_standin::server::READY_FD;
use rstudio_standin::sys;

fn main() -> ExitCode {
    let mut argv = std::env::args();
    let program = argv.next().unwrap_or_else(|| "rsession".to_string());
    let args: Vec<String> = argv.collect();

    if Path::new(R_TOO_NEW_MARKER).exists() {
        // The loader fails before main when libR lacks a symbol this build links against.
        eprintln!("{}", rsession::r_too_new_message(&program));
        return ExitCode::from(127);
    }

    // Block before anything else so a signal sent right after start-up is not lost.
    let signals = [libc::SIGUSR1, libc::SIGUSR2, libc::SIGTERM];
    let set = match sys::block_signals(&signals) {
        Ok(set) => set,
        Err(err) => {
            eprintln!(
                "rsession: cannot block signals: {}",
                sys::system_error(&err)
            );
            return ExitCode::FAILURE;
        }
    };

    let root = rsession::state_root(|name| std::env::var(name).ok());
    let session_dir = match rsession::create_session_dir(&root) {
        Ok(dir) => dir,
        Err(err) => {
            eprintln!(
                "rsession: {} [path: {}]",
                sys::system_error(&err),
                root.join("sessions/active").display()
            );
            return ExitCode::FAILURE;
        }
    };
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let record = rsession::record_json(
        &args,
        std::process::id(),
        |name| std::env::var(name).ok(),
        &limits,
    );
    // The whole environment too, one KEY=VALUE per line, so tests can check what reached R.
    // PASSWORD's value is left out, because the record is a file in the user's home; only
    // whether it was set is recorded.
    let mut environ: Vec<String> = std::env::vars()
        .map(|(key, value)| match key.as_str() {
            "PASSWORD" => "PASSWORD=(set)\n".to_owned(),
            _ => format!("{key}={value}\n"),
        })
        .collect();
    environ.sort();
    let recorded = rsession::write_atomically(&session_dir.join(RECORD_FILE), record.as_bytes())
        .and_then(|()| {
            rsession::write_atomically(
                &session_dir.join("standin-environ"),
                environ.concat().as_bytes(),
            )
        })
        .and_then(|()| rsession::log_session(&root, &session_dir));
    if let Err(err) = recorded {
        eprintln!(
            "rsession: {} [path: {}]",
            sys::system_error(&err),
            session_dir.display()
        );
        return ExitCode::FAILURE;
    }
    report_ready(&session_dir);
    // Lets tests make an R session use memory, as a large data set would: STANDIN_ALLOCATE_MB
    // megabytes are allocated and touched, then kept.
    let _ballast: Vec<u8> = std::env::var("STANDIN_ALLOCATE_MB")
        .ok()
        .and_then(|mb| mb.parse::<usize>().ok())
        .map(|mb| vec![1u8; mb << 20])
        .unwrap_or_default();

    let minutes = rsession::timeout_minutes(&args);
    let timeout = (minutes > 0).then_some(minutes * 60);
    match sys::wait_for_signal(&set, timeout) {
        Some(libc::SIGTERM) => sys::die_by_signal(libc::SIGTERM),
        // SIGUSR1, SIGUSR2 or the idle timeout: suspend.
        _ => match rsession::write_suspended_marker(&session_dir) {
            Ok(_) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("rsession: could not suspend: {}", sys::system_error(&err));
                ExitCode::FAILURE
            }
        },
    }
}

/// Writes the session id to descriptor 3 when rserver passed a pipe there.
fn report_ready(session_dir: &Path) {
    // SAFETY: fstat only fills the stat struct for the descriptor.
    let is_pipe = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        libc::fstat(READY_FD, &mut stat) == 0 && (stat.st_mode & libc::S_IFMT) == libc::S_IFIFO
    };
    if !is_pipe {
        return;
    }
    // SAFETY: descriptor 3 is an open pipe inherited from rserver, owned from here on.
    let mut pipe = unsafe { File::from_raw_fd(READY_FD) };
    let id = session_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned());
    let _ = writeln!(pipe, "{}", id.unwrap_or_default());
}
