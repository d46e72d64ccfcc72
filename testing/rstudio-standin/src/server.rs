//! rserver's HTTP side: sign-in through the PAM helper, the signed cookie, and starting one
//! rsession per user.
//!
//! rsession reports its session id on file descriptor 3, a pipe rserver passes it, so rserver
//! finds the session even when a wrapper script changes where rsession keeps its state.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::cookie::{self, USER_COOKIE};
use crate::http::{self, Request, Response, escape_html, percent_encode};
use crate::logging::Logger;
use crate::sys;

/// Directory relative program paths (`--rsession-path`, `--auth-pam-helper-path`) are resolved
/// in when rserver's own location is unknown.
pub const DEFAULT_BINARY_DIR: &str = "/usr/lib/rstudio-server/bin";
/// File descriptor on which rsession reports its session id.
pub const READY_FD: i32 = 3;
/// How long a request waits for a new rsession to report its session id.
const SESSION_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Error code in `/auth-sign-in?error=` for a rejected sign-in.
const ERROR_INVALID_LOGIN: &str = "2";

/// Returns the directory of rserver's own executable (the install `bin` directory), resolving
/// links such as `/usr/local/bin/rserver`.
pub fn binary_dir() -> PathBuf {
    std::fs::read_link("/proc/self/exe")
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BINARY_DIR))
}

/// Resolves a program path the way rserver does: absolute paths stay, relative ones are taken
/// from the install `bin` directory, never from `PATH`.
pub fn resolve_program(bin_dir: &Path, program: &str) -> PathBuf {
    let path = Path::new(program);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        bin_dir.join(path)
    }
}

/// Settings of the HTTP side, taken from the options.
pub struct ServerSettings {
    pub auth_none: bool,
    pub pam_helper: PathBuf,
    pub require_password_prompt: bool,
    pub rsession_path: PathBuf,
    /// `--www-root-path`, always ending in `/`.
    pub root_path: String,
    pub auth_timeout_minutes: i64,
    pub stay_signed_in_days: i64,
}

/// A started rsession.
struct Session {
    pid: i32,
    id: String,
    status: Arc<Mutex<Option<ExitStatus>>>,
}

impl Session {
    fn has_exited(&self) -> bool {
        self.status
            .lock()
            .map(|status| status.is_some())
            .unwrap_or(true)
    }
}

/// State shared by the connection threads.
pub struct Server {
    settings: ServerSettings,
    key: Vec<u8>,
    logger: Arc<Logger>,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Server {
    pub fn new(settings: ServerSettings, key: Vec<u8>, logger: Arc<Logger>) -> Server {
        Server {
            settings,
            key,
            logger,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Reads one request from `stream`, writes the response and closes the connection.
    pub fn serve_connection<S: Read + Write>(&self, mut stream: S) {
        let request = match http::read_request(&mut stream) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(_) => {
                let _ = Response::text(400, "Bad Request\n").write_to(&mut stream, false);
                return;
            }
        };
        let response = self.route(&request);
        let _ = response.write_to(&mut stream, request.method == "HEAD");
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}{}",
            self.settings.root_path,
            path.trim_start_matches('/')
        )
    }

    fn route(&self, request: &Request) -> Response {
        let is_get = request.method == "GET" || request.method == "HEAD";
        match (request.path.as_str(), is_get) {
            ("/auth-sign-in", true) => self.sign_in_page(request),
            ("/auth-do-sign-in", false) if request.method == "POST" => self.do_sign_in(request),
            ("/auth-sign-out", _) => Response::redirect(&self.url("auth-sign-in"))
                .with_header("Set-Cookie", format!("{USER_COOKIE}=; path=/; Max-Age=0")),
            ("/" | "/index.htm", true) => self.main_page(request),
            (_, true) => Response::text(404, "Not Found\n"),
            _ => Response::text(405, "Method Not Allowed\n"),
        }
    }

    /// Returns the signed-in user: `$USER` with `--auth-none=1`, else the cookie's user.
    fn signed_in_user(&self, request: &Request) -> Option<String> {
        if self.settings.auth_none {
            return std::env::var("USER").ok().filter(|user| !user.is_empty());
        }
        let value = request.cookie(USER_COOKIE)?;
        cookie::verify(&self.key, &value, sys::now().0)
    }

    fn sign_in_page(&self, request: &Request) -> Response {
        if self.settings.auth_none {
            // Signed in or not, there is no form: with no $USER this bounces back to `/`,
            // which sends the browser here again, as the real server does.
            return Response::redirect(&self.url("/"));
        }
        let error = request.query.get("error").map(String::as_str).unwrap_or("");
        let app_uri = request
            .query
            .get("appUri")
            .map(String::as_str)
            .unwrap_or("");
        Response::html(200, sign_in_html(error, app_uri))
            .with_header("Set-Cookie", format!("{USER_COOKIE}=; path=/; Max-Age=0"))
    }

    fn do_sign_in(&self, request: &Request) -> Response {
        if self.settings.auth_none {
            return Response::redirect(&self.url("/"));
        }
        let form = request.form();
        let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
        let (username, password) = (field("username").trim(), field("password"));
        let app_uri = match field("appUri") {
            "" => "/".to_string(),
            uri if uri.starts_with('/') => uri.to_string(),
            uri => format!("/{uri}"),
        };

        let failed = || {
            let mut location = format!("{}?error={ERROR_INVALID_LOGIN}", self.url("auth-sign-in"));
            if app_uri != "/" {
                location.push_str(&format!("&appUri={}", percent_encode(&app_uri)));
            }
            Response::redirect(&location)
        };
        // RStudio refuses empty credentials before running the helper.
        if username.is_empty() || password.is_empty() || !self.pam_login(username, password) {
            return failed();
        }

        let minutes = if self.settings.auth_timeout_minutes > 0 {
            self.settings.auth_timeout_minutes
        } else {
            self.settings.stay_signed_in_days.max(1) * 24 * 60
        };
        let expires = sys::now().0 + minutes * 60;
        let value = cookie::sign(&self.key, username, expires);
        Response::redirect(&self.url(&app_uri)).with_header(
            "Set-Cookie",
            format!("{USER_COOKIE}={value}; path=/; HttpOnly"),
        )
    }

    /// Runs the PAM helper with argv `<user> rstudio <1|0>` and the password on stdin; exit
    /// status 0 accepts the sign-in.
    fn pam_login(&self, username: &str, password: &str) -> bool {
        let helper = &self.settings.pam_helper;
        if !helper.exists() {
            self.logger.error(&format!(
                "PAM helper binary does not exist at {}",
                helper.display()
            ));
            return false;
        }
        let prompt = if self.settings.require_password_prompt {
            "1"
        } else {
            "0"
        };
        let child = Command::new(helper)
            .args([username, "rstudio", prompt])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(err) => {
                self.logger.error(&format!(
                    "{} [child-path: {}]; LOGGED FROM: pam_auth::pam_login",
                    sys::system_error(&err),
                    helper.display()
                ));
                return false;
            }
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(password.as_bytes());
        }
        matches!(child.wait(), Ok(status) if status.success())
    }

    fn main_page(&self, request: &Request) -> Response {
        let Some(user) = self.signed_in_user(request) else {
            let mut location = self.url("auth-sign-in");
            if request.path != "/" {
                location.push_str(&format!("?appUri={}", percent_encode(&request.path)));
            }
            return Response::redirect(&location);
        };
        match self.session_for(&user) {
            Ok((id, pid)) => Response::html(200, session_html(&user, &id, pid)),
            Err(reason) => {
                self.logger.error(&format!(
                    "Could not connect to the R session for user '{user}': {reason}; \
                     LOGGED FROM: session_proxy::handle_content_request"
                ));
                Response::html(200, connect_error_html())
            }
        }
    }

    /// Returns the user's running session, starting one when there is none.
    fn session_for(&self, user: &str) -> Result<(String, i32), String> {
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(session) = sessions.get(user).filter(|session| !session.has_exited()) {
            return Ok((session.id.clone(), session.pid));
        }
        let session = self.start_session(user)?;
        let found = (session.id.clone(), session.pid);
        sessions.insert(user.to_string(), session);
        Ok(found)
    }

    /// Starts `--rsession-path -u <user>` with rserver's environment and waits for its session
    /// id on the ready pipe.
    fn start_session(&self, user: &str) -> Result<Session, String> {
        let path = &self.settings.rsession_path;
        let (read_fd, write_fd) = pipe()?;
        // SAFETY: pipe() returned a fresh descriptor that only this File owns.
        let mut ready = unsafe { File::from_raw_fd(read_fd) };
        // SAFETY: as above; dropping the File closes rserver's copy of the write end.
        let write_end = unsafe { File::from_raw_fd(write_fd) };

        let mut command = Command::new(path);
        command.arg("-u").arg(user).stdin(Stdio::null());
        if let Some(timeout) = std::env::var("RSTUDIO_SESSION_TIMEOUT")
            .ok()
            .filter(|value| !value.is_empty())
        {
            command.arg(format!("--session-timeout-minutes={timeout}"));
        }
        if let Some(home) = std::env::var_os("HOME").filter(|home| Path::new(home).is_dir()) {
            command.current_dir(home);
        }
        // SAFETY: the closure calls only dup2 and fcntl, which are async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                if write_fd == READY_FD {
                    // dup2 onto itself would keep close-on-exec set.
                    if libc::fcntl(READY_FD, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(write_fd, READY_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|err| {
            format!(
                "{} [child-path: {}]",
                sys::system_error(&err),
                path.display()
            )
        })?;
        drop(write_end);
        let pid = child.id() as i32;
        let status = Arc::new(Mutex::new(None));
        let status_for_waiter = Arc::clone(&status);
        thread::spawn(move || {
            if let Ok(exit) = child.wait() {
                if let Ok(mut slot) = status_for_waiter.lock() {
                    *slot = Some(exit);
                }
            }
        });

        let id = read_ready_line(&mut ready, SESSION_START_TIMEOUT);
        match id {
            Some(id) if !id.is_empty() => Ok(Session { pid, id, status }),
            _ => {
                // Give an rsession that is exiting a moment to be reaped, to report its status.
                let deadline = Instant::now() + Duration::from_secs(1);
                while Instant::now() < deadline && status.lock().is_ok_and(|s| s.is_none()) {
                    thread::sleep(Duration::from_millis(20));
                }
                let exit = *status
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                Err(match exit {
                    Some(exit) => format!("rsession ({}) {}", path.display(), describe_exit(exit)),
                    None => format!(
                        "rsession ({}) did not report a session within {} seconds",
                        path.display(),
                        SESSION_START_TIMEOUT.as_secs()
                    ),
                })
            }
        }
    }

    /// Sends SIGTERM to every rsession still running, as rserver does when it shuts down.
    pub fn terminate_sessions(&self) {
        let sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for session in sessions.values().filter(|session| !session.has_exited()) {
            // SAFETY: kill only sends a signal; the pid is our unreaped child.
            unsafe { libc::kill(session.pid, libc::SIGTERM) };
        }
    }
}

fn pipe() -> Result<(i32, i32), String> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(sys::system_error(&io::Error::last_os_error()));
    }
    Ok((fds[0], fds[1]))
}

/// Reads up to the first newline or end of file from `ready`, for at most `timeout`. Returns
/// `None` on timeout or when nothing but end of file arrived.
fn read_ready_line(ready: &mut File, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return None;
        }
        let mut poll_fd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(ready),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll reads and writes the one pollfd passed.
        let ready_count = unsafe { libc::poll(&mut poll_fd, 1, remaining.as_millis() as i32) };
        if ready_count < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
        if ready_count == 0 {
            return None;
        }
        let mut buffer = [0u8; 256];
        match ready.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => {
                line.extend_from_slice(&buffer[..count]);
                if line.contains(&b'\n') {
                    break;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&line);
    let first = text.lines().next().unwrap_or("").trim().to_string();
    (!first.is_empty()).then_some(first)
}

fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".to_string(),
    }
}

fn sign_in_html(error: &str, app_uri: &str) -> String {
    let message = match error {
        "" => String::new(),
        "1" => "Temporary server error, please try again".to_string(),
        ERROR_INVALID_LOGIN => "Incorrect or invalid username/password".to_string(),
        other => format!("Error {}", escape_html(other)),
    };
    let error_panel = if message.is_empty() {
        String::new()
    } else {
        format!("<p id=\"errorpanel\" class=\"error\">{message}</p>\n")
    };
    format!(
        "<!DOCTYPE html>\n<html>\n<head><title>RStudio Sign In</title></head>\n<body>\n\
         <h1>Sign in to RStudio</h1>\n{error_panel}\
         <form action=\"auth-do-sign-in\" method=\"POST\">\n\
         <label for=\"username\">Username:</label>\n\
         <input type=\"text\" name=\"username\" id=\"username\">\n\
         <label for=\"password\">Password:</label>\n\
         <input type=\"password\" name=\"password\" id=\"password\">\n\
         <input type=\"hidden\" name=\"appUri\" value=\"{}\">\n\
         <label><input type=\"checkbox\" name=\"persist\" value=\"1\"> Stay signed in</label>\n\
         <button type=\"submit\">Sign In</button>\n</form>\n</body>\n</html>\n",
        escape_html(app_uri)
    )
}

fn session_html(user: &str, session_id: &str, pid: i32) -> String {
    let (user, session_id) = (escape_html(user), escape_html(session_id));
    format!(
        "<!DOCTYPE html>\n<html>\n<head><title>RStudio Server</title></head>\n<body>\n\
         <h1>RStudio</h1>\n<p id=\"session\" data-session-id=\"{session_id}\" \
         data-user=\"{user}\" data-pid=\"{pid}\">R session {session_id} for {user} is running \
         (pid {pid}).</p>\n</body>\n</html>\n"
    )
}

fn connect_error_html() -> String {
    "<!DOCTYPE html>\n<html>\n<head><title>RStudio Initialization Error</title></head>\n\
     <body>\n<h1>RStudio Initialization Error</h1>\n\
     <p>Could not connect to the R session on RStudio Server</p>\n</body>\n</html>\n"
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_programs_resolve_in_the_install_dir_not_path() {
        let bin = Path::new("/usr/lib/rstudio-server/bin");
        assert_eq!(
            resolve_program(bin, "pam-helper"),
            PathBuf::from("/usr/lib/rstudio-server/bin/pam-helper")
        );
        assert_eq!(
            resolve_program(bin, "/etc/rstudio/rsession.sh"),
            PathBuf::from("/etc/rstudio/rsession.sh")
        );
    }

    #[test]
    fn sign_in_page_shows_the_login_error() {
        assert!(sign_in_html("2", "").contains("Incorrect or invalid username/password"));
        assert!(!sign_in_html("", "").contains("Incorrect"));
        assert!(sign_in_html("", "").contains("name=\"password\""));
    }
}
