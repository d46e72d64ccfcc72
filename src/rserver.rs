//! rserver's arguments and the files it reads, built from what the image's rserver supports
//! (its probe) and the session's settings. All paths are absolute paths inside the container.

use crate::error::{Error, Result};
use crate::probe::{self, Probe};
use crate::settings::Settings;
use crate::shell::quote;

// The session's generated files lie in /run/hpc-rstudio inside the container, which is in the
// private /run that each session gets.
pub const DATABASE_CONF: &str = "/run/hpc-rstudio/database.conf";
pub const COOKIE_KEY: &str = "/run/hpc-rstudio/secure-cookie-key";
pub const RSESSION_WRAPPER: &str = "/run/hpc-rstudio/rsession.sh";
pub const SOCKET: &str = "/run/hpc-rstudio/rserver.sock";
pub const SERVER_DATA_DIR: &str = "/run/rstudio-server";
pub const LOGGING_CONF: &str = "/etc/rstudio/logging.conf";

/// How rserver listens.
#[derive(Debug, Clone)]
pub enum Listen {
    Tcp { address: String, port: u16 },
    Socket,
}

/// Builds rserver's argument list.
///
/// Options that only some releases know are passed where the probe lists them; an option the
/// session cannot work without is an error naming the release.
pub fn arguments(
    probe: &Probe,
    settings: &Settings,
    user: &str,
    uid: u32,
    listen: &Listen,
) -> Result<Vec<String>> {
    let mut args = Vec::new();
    let mut push = |name: &str, value: &str| args.push(format!("--{name}={value}"));

    // RStudio 2021.09 and later refuse to run as their default server user without root.
    if probe.supports("server-user") {
        push("server-user", user);
    }
    if probe.supports("server-daemonize") {
        push("server-daemonize", "0");
    }
    match listen {
        Listen::Tcp { address, port } => {
            push("www-address", address);
            push("www-port", &port.to_string());
        }
        Listen::Socket => {
            if !probe.supports("www-socket") {
                return Err(probe::unsupported(
                    "www-socket",
                    probe,
                    "serving on a Unix socket needs RStudio 2024.12 or later; leave --socket out to use a TCP port",
                ));
            }
            push("www-socket", SOCKET);
        }
    }

    // Password sign-in through Rocker's pam-helper, which compares USER and PASSWORD from the
    // environment; a non-root rserver would otherwise let anyone who reaches the port in.
    if !probe.has_pam_helper {
        return Err(Error::usage(format!(
            "the image has no {} ({}), so password sign-in is not possible",
            probe::PAM_HELPER,
            probe.describe()
        ))
        .with_hint(
            "use a Rocker image (rocker/rstudio, rocker/verse, ...), which ships that helper",
        ));
    }
    push("auth-none", "0");
    push("auth-pam-helper-path", probe::PAM_HELPER);
    if probe.supports("auth-timeout-minutes") {
        push(
            "auth-timeout-minutes",
            &settings.auth_timeout_minutes.to_string(),
        );
    }
    if probe.supports("auth-stay-signed-in-days") {
        push(
            "auth-stay-signed-in-days",
            &settings.auth_stay_signed_in_days.to_string(),
        );
    }
    if uid < 1000 && probe.supports("auth-minimum-user-id") {
        push("auth-minimum-user-id", &uid.to_string());
    }

    // Files that must be private and writable: without these options rserver falls back to
    // /tmp/rstudio-server and /var/lib/rstudio-server, which the private mounts also cover.
    if probe.supports("secure-cookie-key-file") {
        push("secure-cookie-key-file", COOKIE_KEY);
    }
    if probe.supports("database-config-file") {
        push("database-config-file", DATABASE_CONF);
    }
    if probe.supports("server-data-dir") {
        push("server-data-dir", SERVER_DATA_DIR);
    }
    push("rsession-path", RSESSION_WRAPPER);

    for (name, value) in &settings.rserver_options {
        if !probe.supports(name) {
            return Err(probe::unsupported(
                name,
                probe,
                "remove that --rserver-option, or use an image whose RStudio lists it in `rserver --help`",
            ));
        }
        push(name, value);
    }
    Ok(args)
}

/// The database configuration: SQLite in the private `/var/lib/rstudio-server`, which lies on
/// node-local storage.
pub fn database_conf() -> String {
    "provider=sqlite\ndirectory=/var/lib/rstudio-server\n".to_owned()
}

/// The logging configuration bound over the image's: errors go to stderr, which the supervisor
/// writes to the session's log, because the image's default (syslog) is invisible to users.
pub fn logging_conf() -> String {
    "[*]\nlog-level=info\nlogger-type=stderr\n".to_owned()
}

/// The rsession wrapper: sets an image-specific R_LIBS_USER and starts the image's rsession.
/// Every value is single-quoted, so no character in it can change the script.
pub fn rsession_wrapper(session_id: &str, r_libs_user: &str) -> String {
    format!(
        "#!/bin/sh\n\
         # Generated by hpc-rstudio for session {id}.\n\
         R_LIBS_USER={libs}\n\
         export R_LIBS_USER\n\
         # rserver needs PASSWORD for sign-in; R sessions do not.\n\
         unset PASSWORD\n\
         exec {rsession} \"$@\"\n",
        id = session_id,
        libs = quote(r_libs_user),
        rsession = quote(probe::RSESSION),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn probe(options: &[&str]) -> Probe {
        Probe {
            format: 1,
            options: options
                .iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<_>>(),
            rstudio_version: Some("2024.12.1+563".into()),
            r_version: Some("4.4.2".into()),
            has_pam_helper: true,
        }
    }

    fn settings() -> Settings {
        let user = crate::paths::User {
            name: "u".into(),
            uid: 1000,
            home: "/home/u".into(),
        };
        let files = crate::settings::Files {
            site: Default::default(),
            user: Default::default(),
        };
        crate::settings::resolve(&user, &files, &Default::default(), None).unwrap()
    }

    const MODERN: &[&str] = &[
        "server-user",
        "www-port",
        "www-address",
        "www-socket",
        "auth-none",
        "auth-pam-helper-path",
        "auth-timeout-minutes",
        "auth-stay-signed-in-days",
        "secure-cookie-key-file",
        "database-config-file",
        "server-data-dir",
        "rsession-path",
        "server-daemonize",
    ];

    #[test]
    fn modern_release_gets_every_option() {
        let listen = Listen::Tcp {
            address: "0.0.0.0".into(),
            port: 8800,
        };
        let args = arguments(&probe(MODERN), &settings(), "alice", 1234, &listen).unwrap();
        for expected in [
            "--server-user=alice",
            "--www-port=8800",
            "--auth-none=0",
            "--auth-pam-helper-path=/usr/lib/rstudio-server/bin/pam-helper",
            "--auth-timeout-minutes=0",
            "--auth-stay-signed-in-days=30",
            "--secure-cookie-key-file=/run/hpc-rstudio/secure-cookie-key",
            "--database-config-file=/run/hpc-rstudio/database.conf",
            "--rsession-path=/run/hpc-rstudio/rsession.sh",
        ] {
            assert!(
                args.contains(&expected.to_string()),
                "missing {expected} in {args:?}"
            );
        }
    }

    #[test]
    fn old_release_gets_only_known_options() {
        let listen = Listen::Tcp {
            address: "0.0.0.0".into(),
            port: 8800,
        };
        let args = arguments(
            &probe(&["www-port", "www-address"]),
            &settings(),
            "alice",
            1234,
            &listen,
        )
        .unwrap();
        assert!(!args.iter().any(|a| a.starts_with("--server-user")));
        assert!(!args.iter().any(|a| a.starts_with("--database-config-file")));
        assert!(
            !args
                .iter()
                .any(|a| a.starts_with("--secure-cookie-key-file"))
        );
    }

    #[test]
    fn socket_needs_support() {
        let err = arguments(
            &probe(&["www-port"]),
            &settings(),
            "a",
            1234,
            &Listen::Socket,
        )
        .unwrap_err();
        assert!(err.message.contains("www-socket"));
        assert!(err.message.contains("2024.12.1+563"));
    }

    #[test]
    fn unknown_extra_option_is_rejected() {
        let mut settings = settings();
        settings
            .rserver_options
            .push(("www-frame-origin".into(), "same".into()));
        let listen = Listen::Tcp {
            address: "0.0.0.0".into(),
            port: 8800,
        };
        let err = arguments(&probe(MODERN), &settings, "a", 1234, &listen).unwrap_err();
        assert!(err.message.contains("--www-frame-origin"));
    }

    #[test]
    fn wrapper_quotes_values() {
        let script = rsession_wrapper("s1", "/home/o'brien (x)/R/$lib");
        assert!(script.contains(r"R_LIBS_USER='/home/o'\''brien (x)/R/$lib'"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.sh");
        std::fs::write(&path, &script).unwrap();
        crate::shell::check_syntax(&path).unwrap();
    }
}
