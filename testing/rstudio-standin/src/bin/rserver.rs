//! rserver stand-in: runs the start-up checks of the release named in
//! `/etc/rstudio-standin/release`, then serves sign-in and sessions over HTTP until SIGTERM,
//! SIGINT or SIGQUIT.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use rstudio_standin::logging::{self, Destination, LOGGING_CONF, Logger};
use rstudio_standin::options::{self, ParsedOptions};
use rstudio_standin::release::{RELEASE_MARKER, Release};
use rstudio_standin::server::{self, Server, ServerSettings};
use rstudio_standin::startup::{self, Failure, Listener};
use rstudio_standin::sys;

fn main() -> ExitCode {
    let release = match Release::from_marker(Path::new(RELEASE_MARKER)) {
        Ok(release) => release,
        Err(message) => {
            eprintln!("rserver (RStudio stand-in): {message}");
            return ExitCode::FAILURE;
        }
    };
    let logger = Arc::new(Logger::new(
        "rserver",
        release,
        logging::load(Path::new(LOGGING_CONF), "rserver"),
    ));
    logger.print_banner();

    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match options::parse(release, &args) {
        Ok(parsed) => parsed,
        Err(message) => {
            // Option errors reach the terminal whatever the logger, then the log file if any.
            eprintln!("{message}");
            if matches!(logger.config().destination, Destination::File(_)) {
                logger.error(&message);
            }
            return ExitCode::FAILURE;
        }
    };
    if parsed.help {
        print!("{}", options::help_text(release));
        return ExitCode::SUCCESS;
    }

    match start(release, &parsed, &logger) {
        Ok((listener, server)) => serve(listener, server, &logger),
        Err(lines) => {
            for line in lines {
                logger.error(&line);
            }
            ExitCode::FAILURE
        }
    }
}

/// Runs the start-up checks in rserver's order and binds the listening socket.
fn start(
    release: Release,
    parsed: &ParsedOptions,
    logger: &Arc<Logger>,
) -> Result<(Listener, Arc<Server>), Failure> {
    let root = sys::euid() == 0;
    startup::check_server_user(
        release,
        parsed.get("server-user").unwrap_or("rstudio-server"),
    )?;
    if parsed.flag("server-set-umask", true) {
        // SAFETY: umask only replaces the process's file creation mask.
        unsafe { libc::umask(0o022) };
    }
    let working_dir = parsed.text("server-working-dir").unwrap_or("/");
    std::env::set_current_dir(working_dir).map_err(|err| {
        vec![format!(
            "{} [path: {working_dir}]; OCCURRED AT rstudio-standin set_current_dir; \
             LOGGED FROM: rserver main",
            sys::system_error(&err)
        )]
    })?;
    if release.has_server_data_dir() {
        let dir = parsed
            .text("server-data-dir")
            .unwrap_or("/var/run/rstudio-server");
        startup::ensure_server_data_dir(Path::new(dir))?;
    }
    if release.has_revocation_list_file() {
        let dir = parsed
            .text("auth-revocation-list-dir")
            .unwrap_or(startup::REVOCATION_LIST_DIR);
        startup::init_revocation_list(Path::new(dir))?;
    }
    if release.has_database() {
        let path = startup::open_database(release, parsed.text("database-config-file"))?;
        logger.info(&format!("Using sqlite database at {}", path.display()));
    }
    if release.has_session_rpc_key() {
        // No option moves this key, so a shared /tmp makes users collide on it.
        startup::read_or_create_key(&startup::default_key_path("session-rpc-key"))?;
    }
    let key_path = parsed.text("secure-cookie-key-file").map_or_else(
        || startup::default_key_path("secure-cookie-key"),
        PathBuf::from,
    );
    let key = startup::read_or_create_key(&key_path)?;

    if parsed.flag("verify-installation", false) {
        // NOTE: the real verification also starts a test session; the stand-in only checks
        // that start-up succeeds.
        std::process::exit(0);
    }

    let listener = match parsed
        .text("www-socket")
        .filter(|_| release.has_www_socket())
    {
        Some(socket) => startup::bind_unix_socket(Path::new(socket))?,
        None => startup::bind_tcp(
            parsed.get("www-address").unwrap_or("0.0.0.0"),
            parsed.get("www-port").unwrap_or(""),
        )?,
    };

    let bin_dir = server::binary_dir();
    let mut root_path = parsed.text("www-root-path").unwrap_or("/").to_string();
    if !root_path.ends_with('/') {
        root_path.push('/');
    }
    let settings = ServerSettings {
        auth_none: parsed.flag("auth-none", !root),
        pam_helper: server::resolve_program(
            &bin_dir,
            parsed.text("auth-pam-helper-path").unwrap_or("rserver-pam"),
        ),
        require_password_prompt: parsed.flag("auth-pam-require-password-prompt", true),
        rsession_path: server::resolve_program(
            &bin_dir,
            parsed.text("rsession-path").unwrap_or("rsession"),
        ),
        root_path,
        auth_timeout_minutes: parsed.int("auth-timeout-minutes", 60),
        stay_signed_in_days: parsed.int("auth-stay-signed-in-days", 30),
    };
    let server = Arc::new(Server::new(settings, key, Arc::clone(logger)));

    if parsed.flag("server-daemonize", root) {
        daemonize(
            parsed
                .text("server-pid-file")
                .unwrap_or("/var/run/rstudio-server.pid"),
            logger,
        );
    }
    Ok((listener, server))
}

/// Forks into the background, as `--server-daemonize=1` requests. The parent exits 0.
fn daemonize(pid_file: &str, logger: &Logger) {
    // SAFETY: no threads exist yet, so the child inherits a consistent process.
    match unsafe { libc::fork() } {
        -1 => logger.error("Could not daemonize: fork failed; continuing in the foreground"),
        0 => {
            // SAFETY: setsid has no preconditions in a fresh child.
            unsafe { libc::setsid() };
            if let Err(err) = std::fs::write(pid_file, format!("{}\n", std::process::id())) {
                logger.warn(&format!(
                    "Could not write pid file {pid_file}: {}",
                    sys::system_error(&err)
                ));
            }
        }
        _ => std::process::exit(0),
    }
}

/// Accepts connections on a background thread, one thread per connection, while the main
/// thread waits for a terminating signal.
fn serve(listener: Listener, server: Arc<Server>, logger: &Logger) -> ExitCode {
    // Blocked before any thread starts, so only the main thread's sigwait receives them.
    let terminating = [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT, libc::SIGHUP];
    let set = match sys::block_signals(&terminating) {
        Ok(set) => set,
        Err(err) => {
            logger.error(&sys::system_error(&err));
            return ExitCode::FAILURE;
        }
    };
    let accept_server = Arc::clone(&server);
    thread::spawn(move || match listener {
        Listener::Tcp(tcp) => {
            for stream in tcp.incoming().flatten() {
                let server = Arc::clone(&accept_server);
                thread::spawn(move || server.serve_connection(stream));
            }
        }
        Listener::Unix(unix) => {
            for stream in unix.incoming().flatten() {
                let server = Arc::clone(&accept_server);
                thread::spawn(move || server.serve_connection(stream));
            }
        }
    });
    loop {
        match sys::wait_for_signal(&set, None) {
            // rserver re-reads its configuration on SIGHUP; the stand-in has nothing to reload.
            Some(libc::SIGHUP) => logger.info("Received SIGHUP; nothing to reload"),
            Some(signal) => {
                server.terminate_sessions();
                sys::die_by_signal(signal);
            }
            None => {}
        }
    }
}
