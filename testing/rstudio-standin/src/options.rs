//! rserver's option table per release, and parsing of argv and `rserver.conf` against it.
//!
//! Parsing follows Boost.Program_options as rserver uses it: `--name=value` or `--name value`,
//! the command line wins over the configuration file, and an option the release does not have
//! ends the program with `unrecognised option '--name'`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::release::Release;

/// Default path of rserver's configuration file.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/rstudio/rserver.conf";

/// The type Boost validates an option's value against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// No value (`--help`).
    Flag,
    /// Any text.
    Text,
    /// `1`, `0`, `true`, `false`, `yes`, `no`, `on` or `off`.
    Bool,
    /// A decimal integer.
    Int,
    /// Any text; the option may be repeated.
    List,
}

/// One rserver option and the releases that have it.
#[derive(Debug)]
pub struct OptionSpec {
    pub name: &'static str,
    /// Section heading in `--help`.
    pub section: &'static str,
    pub value_type: ValueType,
    /// Default shown in `--help` as `(=value)`; empty shows none.
    pub default: &'static str,
    /// First release that accepts the option.
    pub since: Release,
    /// First release whose `--help` leaves the option out, though it still accepts it.
    pub hidden_since: Option<Release>,
    /// Whether `rserver.conf` may set it (`--help` and `--config-file` are command-line only).
    pub in_config_file: bool,
    pub description: &'static str,
}

const fn spec(
    name: &'static str,
    section: &'static str,
    value_type: ValueType,
    default: &'static str,
    since: Release,
    description: &'static str,
) -> OptionSpec {
    OptionSpec {
        name,
        section,
        value_type,
        default,
        since,
        hidden_since: None,
        in_config_file: true,
        description,
    }
}

const fn hidden(mut option: OptionSpec, from: Release) -> OptionSpec {
    option.hidden_since = Some(from);
    option
}

const fn command_line_only(mut option: OptionSpec) -> OptionSpec {
    option.in_config_file = false;
    option
}

use Release::{V1_3, V1_4, V2022_07, V2024_12};
use ValueType::{Bool, Flag, Int, List, Text};

/// Every option any played release accepts, in `--help` order.
///
/// Option names and defaults follow RStudio's `server-options.json` (2022 era) and the 1.x
/// `ServerOptions.cpp`.
///
/// NOTE: the first release is known only for `auth-timeout-minutes` (1.3), `server-data-dir`,
/// `database-config-file`, `www-root-path` (1.4) and `www-socket` (2024.12.0). For the other
/// options it is an estimate.
pub static OPTIONS: &[OptionSpec] = &[
    command_line_only(spec(
        "help",
        "command-line options",
        Flag,
        "",
        V1_3,
        "print help message",
    )),
    command_line_only(spec(
        "config-file",
        "command-line options",
        Text,
        "",
        V1_3,
        "configuration file to read instead of /etc/rstudio/rserver.conf",
    )),
    command_line_only(spec(
        "verify-installation",
        "verify",
        Bool,
        "0",
        V1_3,
        "verify the installation and exit",
    )),
    spec(
        "server-working-dir",
        "server",
        Text,
        "/",
        V1_3,
        "working directory of rserver",
    ),
    spec(
        "server-user",
        "server",
        Text,
        "rstudio-server",
        V1_3,
        "account rserver runs as",
    ),
    spec(
        "server-daemonize",
        "server",
        Bool,
        "",
        V1_3,
        "run rserver as a daemon",
    ),
    spec(
        "server-pid-file",
        "server",
        Text,
        "/var/run/rstudio-server.pid",
        V1_3,
        "file the daemon writes its pid to",
    ),
    hidden(
        spec(
            "server-app-armor-enabled",
            "server",
            Bool,
            "0",
            V1_3,
            "deprecated, ignored",
        ),
        V1_3,
    ),
    spec(
        "server-set-umask",
        "server",
        Bool,
        "1",
        V1_3,
        "set the umask to 022 at start",
    ),
    spec(
        "secure-cookie-key-file",
        "server",
        Text,
        "",
        V1_3,
        "file holding the key that signs cookies",
    ),
    spec(
        "server-data-dir",
        "server",
        Text,
        "/var/run/rstudio-server",
        V1_4,
        "directory for run-time state; must be mode 1777",
    ),
    spec(
        "server-add-header",
        "server",
        List,
        "",
        V2022_07,
        "header added to every response",
    ),
    spec(
        "www-address",
        "www",
        Text,
        "0.0.0.0",
        V1_3,
        "address to listen on",
    ),
    spec(
        "www-port",
        "www",
        Text,
        "",
        V1_3,
        "port to listen on (8787 when empty)",
    ),
    spec(
        "www-socket",
        "www",
        Text,
        "",
        V2024_12,
        "Unix domain socket to listen on instead of a TCP port",
    ),
    spec(
        "www-root-path",
        "www",
        Text,
        "/",
        V1_4,
        "path prefix a proxy adds to the URL",
    ),
    hidden(
        spec(
            "www-local-path",
            "www",
            Text,
            "www",
            V1_3,
            "web assets directory",
        ),
        V1_3,
    ),
    hidden(
        spec(
            "www-symbol-maps-path",
            "www",
            Text,
            "www-symbolmaps",
            V1_3,
            "symbol maps",
        ),
        V1_3,
    ),
    hidden(
        spec(
            "www-use-emulated-stack",
            "www",
            Bool,
            "0",
            V1_3,
            "GWT emulated stack",
        ),
        V1_3,
    ),
    spec(
        "www-thread-pool-size",
        "www",
        Int,
        "2",
        V1_3,
        "threads serving requests",
    ),
    spec(
        "www-proxy-localhost",
        "www",
        Bool,
        "1",
        V1_3,
        "proxy requests to localhost ports",
    ),
    spec(
        "www-verify-user-agent",
        "www",
        Bool,
        "1",
        V1_3,
        "check the browser's user agent",
    ),
    spec(
        "www-same-site",
        "www",
        Text,
        "",
        V1_3,
        "SameSite attribute of cookies",
    ),
    spec(
        "www-frame-origin",
        "www",
        Text,
        "none",
        V1_3,
        "origin allowed to frame RStudio",
    ),
    spec(
        "www-enable-origin-check",
        "www",
        Bool,
        "0",
        V1_3,
        "check request origins",
    ),
    spec(
        "www-allow-origin",
        "www",
        List,
        "",
        V1_3,
        "extra origin allowed by the check",
    ),
    spec(
        "session-use-file-storage",
        "www",
        Bool,
        "1",
        V2022_07,
        "keep session metadata in files, not the database",
    ),
    spec(
        "rsession-which-r",
        "rsession",
        Text,
        "",
        V1_3,
        "path of the main R program",
    ),
    spec(
        "rsession-path",
        "rsession",
        Text,
        "rsession",
        V1_3,
        "rsession program",
    ),
    spec(
        "rldpath-path",
        "rsession",
        Text,
        "r-ldpath",
        V1_3,
        "r-ldpath script",
    ),
    spec(
        "rsession-ld-library-path",
        "rsession",
        Text,
        "",
        V1_3,
        "extra LD_LIBRARY_PATH",
    ),
    spec(
        "rsession-config-file",
        "rsession",
        Text,
        "",
        V1_3,
        "rsession.conf to use",
    ),
    spec(
        "rsession-proxy-max-wait-secs",
        "rsession",
        Int,
        "10",
        V1_4,
        "seconds to wait for rsession when proxying",
    ),
    hidden(
        spec(
            "rsession-memory-limit-mb",
            "rsession",
            Int,
            "0",
            V1_3,
            "deprecated",
        ),
        V1_3,
    ),
    hidden(
        spec(
            "rsession-stack-limit-mb",
            "rsession",
            Int,
            "0",
            V1_3,
            "deprecated",
        ),
        V1_3,
    ),
    hidden(
        spec(
            "rsession-process-limit",
            "rsession",
            Int,
            "0",
            V1_3,
            "deprecated",
        ),
        V1_3,
    ),
    spec(
        "database-config-file",
        "database",
        Text,
        "",
        V1_4,
        "database.conf to use instead of /etc/rstudio/database.conf",
    ),
    hidden(
        spec("db-command", "database", Text, "", V1_4, "database command"),
        V1_4,
    ),
    spec(
        "auth-none",
        "auth",
        Bool,
        "",
        V1_3,
        "sign every request in as $USER",
    ),
    spec(
        "auth-validate-users",
        "auth",
        Bool,
        "",
        V1_3,
        "check that users exist",
    ),
    spec(
        "auth-stay-signed-in-days",
        "auth",
        Int,
        "30",
        V1_3,
        "days a 'stay signed in' cookie lasts when auth-timeout-minutes is 0",
    ),
    spec(
        "auth-timeout-minutes",
        "auth",
        Int,
        "60",
        V1_3,
        "idle minutes before sign-in expires",
    ),
    spec(
        "auth-encrypt-password",
        "auth",
        Bool,
        "1",
        V1_3,
        "encrypt the sign-in password",
    ),
    spec(
        "auth-login-page-html",
        "auth",
        Text,
        "/etc/rstudio/login.html",
        V1_3,
        "extra HTML for the sign-in page",
    ),
    spec(
        "auth-rdp-login-page-html",
        "auth",
        Text,
        "/etc/rstudio/rdplogin.html",
        V1_4,
        "extra HTML for the RDP sign-in page",
    ),
    spec(
        "auth-required-user-group",
        "auth",
        Text,
        "",
        V1_3,
        "group users must belong to",
    ),
    spec(
        "auth-minimum-user-id",
        "auth",
        Text,
        "auto",
        V1_3,
        "lowest uid allowed to sign in",
    ),
    // Listed in 1.3's help; server-options.json (1.4 on) marks it hidden.
    hidden(
        spec(
            "auth-pam-helper-path",
            "auth",
            Text,
            "rserver-pam",
            V1_3,
            "PAM helper program",
        ),
        V1_4,
    ),
    spec(
        "auth-pam-require-password-prompt",
        "auth",
        Bool,
        "1",
        V1_3,
        "wait for PAM's password prompt",
    ),
    hidden(
        spec(
            "auth-pam-requires-priv",
            "auth",
            Bool,
            "1",
            V1_3,
            "deprecated",
        ),
        V1_3,
    ),
    spec(
        "auth-sign-in-throttle-seconds",
        "auth",
        Int,
        "5",
        V1_3,
        "seconds to wait between sign-out and sign-in",
    ),
    spec(
        "auth-revocation-list-dir",
        "auth",
        Text,
        "",
        V1_3,
        "directory of the revoked-cookie list",
    ),
    spec(
        "auth-cookies-force-secure",
        "auth",
        Bool,
        "0",
        V1_4,
        "mark cookies secure",
    ),
    spec(
        "monitor-interval-seconds",
        "monitor",
        Int,
        "60",
        V1_3,
        "monitor probe interval",
    ),
];

/// Returns the options `release` accepts, in `--help` order.
pub fn accepted(release: Release) -> impl Iterator<Item = &'static OptionSpec> {
    OPTIONS.iter().filter(move |option| option.since <= release)
}

fn lookup(release: Release, name: &str) -> Option<&'static OptionSpec> {
    accepted(release).find(|option| option.name == name)
}

fn is_visible(option: &OptionSpec, release: Release) -> bool {
    option.hidden_since.is_none_or(|from| release < from)
}

/// Column where option descriptions start in `--help`.
const HELP_COLUMN: usize = 46;

/// Formats `--help` for `release`: section headings and one `--name` per line, as Boost
/// prints them.
pub fn help_text(release: Release) -> String {
    let mut text = String::new();
    let mut section = "";
    for option in accepted(release).filter(|option| is_visible(option, release)) {
        if option.section != section {
            if !section.is_empty() {
                text.push('\n');
            }
            section = option.section;
            let _ = writeln!(text, "{section}:");
        }
        let mut usage = format!("  --{}", option.name);
        if option.value_type != Flag {
            usage.push_str(" arg");
            if !option.default.is_empty() {
                let _ = write!(usage, " (={})", option.default);
            }
        }
        // Like Boost, a usage column too wide for the description moves it to the next line.
        if usage.len() >= HELP_COLUMN {
            usage.push('\n');
            usage.push_str(&" ".repeat(HELP_COLUMN));
        }
        let _ = writeln!(text, "{usage:<HELP_COLUMN$}{}", option.description);
    }
    text
}

/// Options as read from argv and the configuration file, by name. A name is present only when
/// given; defaults are applied by the getters' callers.
#[derive(Debug, Default)]
pub struct ParsedOptions {
    pub help: bool,
    values: HashMap<&'static str, Vec<String>>,
}

impl ParsedOptions {
    /// Returns the last value given for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|values| values.last())
            .map(String::as_str)
    }

    /// Returns every value given for a repeatable option.
    pub fn all(&self, name: &str) -> &[String] {
        self.values.get(name).map_or(&[], Vec::as_slice)
    }

    /// Returns the boolean value of `name`, or `default` when it was not given.
    pub fn flag(&self, name: &str, default: bool) -> bool {
        self.get(name).and_then(parse_bool).unwrap_or(default)
    }

    /// Returns the integer value of `name`, or `default` when it was not given.
    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name)
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(default)
    }

    /// Returns the value of `name` unless it is missing or empty.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|value| !value.is_empty())
    }

    fn store(
        &mut self,
        option: &'static OptionSpec,
        value: String,
        label: &str,
    ) -> Result<(), String> {
        match option.value_type {
            Bool if parse_bool(&value).is_none() => {
                return Err(invalid_argument(&value, label));
            }
            Int if value.trim().parse::<i64>().is_err() => {
                return Err(invalid_argument(&value, label));
            }
            _ => {}
        }
        let values = self.values.entry(option.name).or_default();
        if !values.is_empty() && option.value_type != List {
            return Err(format!(
                "option '{label}' cannot be specified more than once"
            ));
        }
        values.push(value);
        Ok(())
    }
}

fn invalid_argument(value: &str, label: &str) -> String {
    format!("the argument ('{value}') for option '{label}' is invalid")
}

/// Parses a Boost boolean.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Parses the command line (without the program name). The error is the message rserver prints
/// before exiting with status 1.
pub fn parse_command_line(release: Release, args: &[String]) -> Result<ParsedOptions, String> {
    let mut parsed = ParsedOptions::default();
    let mut index = 0;
    while index < args.len() {
        let arg = &args[index];
        index += 1;
        let Some(body) = arg.strip_prefix("--") else {
            if arg.starts_with('-') && arg.len() > 1 {
                return Err(format!("unrecognised option '{arg}'"));
            }
            return Err(
                "too many positional options have been specified on the command line".into(),
            );
        };
        let (name, inline_value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (body, None),
        };
        let dashed_name = format!("--{name}");
        let option =
            lookup(release, name).ok_or_else(|| format!("unrecognised option '{dashed_name}'"))?;
        if option.value_type == Flag {
            if inline_value.is_some() {
                return Err(format!(
                    "option '{dashed_name}' does not take any arguments"
                ));
            }
            parsed.help = true;
            continue;
        }
        let value = match inline_value {
            Some(value) => value,
            // Boost takes the next token as the value unless it looks like an option.
            None if index < args.len() && !args[index].starts_with('-') => {
                index += 1;
                args[index - 1].clone()
            }
            None => {
                return Err(format!(
                    "the required argument for option '{dashed_name}' is missing"
                ));
            }
        };
        parsed.store(option, value, &dashed_name)?;
    }
    Ok(parsed)
}

/// Merges `name=value` lines of a configuration file into `parsed`; values already given on the
/// command line win. `path` only labels the error message.
pub fn merge_config_text(
    release: Release,
    parsed: &mut ParsedOptions,
    text: &str,
    path: &Path,
) -> Result<(), String> {
    let from_command_line: Vec<&'static str> = parsed.values.keys().copied().collect();
    let mut from_file = ParsedOptions::default();
    for raw_line in text.lines() {
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error = |message: String| format!("Error reading {}: {message}", path.display());
        let Some((name, value)) = line.split_once('=') else {
            return Err(error(format!(
                "the options configuration file contains an invalid line '{line}'"
            )));
        };
        let name = name.trim();
        let option = lookup(release, name)
            .filter(|option| option.in_config_file)
            .ok_or_else(|| error(format!("unrecognised option '{name}'")))?;
        from_file
            .store(option, value.trim().to_string(), name)
            .map_err(error)?;
    }
    for (name, values) in from_file.values {
        if !from_command_line.contains(&name) {
            parsed.values.insert(name, values);
        }
    }
    Ok(())
}

/// Parses argv, then the configuration file named by `--config-file` or, when that is not given
/// and the file exists, [`DEFAULT_CONFIG_FILE`].
pub fn parse(release: Release, args: &[String]) -> Result<ParsedOptions, String> {
    let mut parsed = parse_command_line(release, args)?;
    if parsed.help {
        return Ok(parsed);
    }
    let config_path = parsed
        .text("config-file")
        .unwrap_or(DEFAULT_CONFIG_FILE)
        .to_string();
    let config_path = Path::new(&config_path);
    match std::fs::read_to_string(config_path) {
        Ok(text) => merge_config_text(release, &mut parsed, &text, config_path)?,
        Err(err) if parsed.text("config-file").is_some() => {
            return Err(format!(
                "Error reading {}: {}",
                config_path.display(),
                crate::sys::describe_io_error(&err)
            ));
        }
        Err(_) => {}
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn accepts_both_value_forms() {
        let parsed = parse_command_line(
            Release::V2024_12,
            &args(&["--www-port=8790", "--server-user", "alice", "--auth-none=0"]),
        )
        .unwrap();
        assert_eq!(parsed.get("www-port"), Some("8790"));
        assert_eq!(parsed.get("server-user"), Some("alice"));
        assert!(!parsed.flag("auth-none", true));
        assert!(
            parsed.flag("server-daemonize", true),
            "absent options take the default"
        );
    }

    #[test]
    fn rejects_options_the_release_lacks() {
        let cases = [
            (Release::V1_3, "--server-data-dir=/tmp/x"),
            (Release::V1_3, "--database-config-file=/tmp/db.conf"),
            (Release::V1_3, "--www-root-path=/x/"),
            (Release::V1_4, "--www-socket=/tmp/s"),
            (Release::V2022_07, "--www-socket=/tmp/s"),
            (Release::V2024_12, "--no-such-option=1"),
        ];
        for (release, arg) in cases {
            let name = arg.split('=').next().unwrap();
            let err = parse_command_line(release, &args(&[arg])).unwrap_err();
            assert_eq!(
                err,
                format!("unrecognised option '{name}'"),
                "{release} {arg}"
            );
        }
        assert!(parse_command_line(Release::V2024_12, &args(&["--www-socket=/tmp/s"])).is_ok());
        assert!(parse_command_line(Release::V1_4, &args(&["--server-data-dir=/tmp/x"])).is_ok());
    }

    #[test]
    fn reports_boost_errors() {
        let release = Release::V2024_12;
        assert_eq!(
            parse_command_line(release, &args(&["--www-port"])).unwrap_err(),
            "the required argument for option '--www-port' is missing"
        );
        assert_eq!(
            parse_command_line(release, &args(&["--auth-none=maybe"])).unwrap_err(),
            "the argument ('maybe') for option '--auth-none' is invalid"
        );
        assert_eq!(
            parse_command_line(release, &args(&["--www-port=1", "--www-port=2"])).unwrap_err(),
            "option '--www-port' cannot be specified more than once"
        );
        assert_eq!(
            parse_command_line(release, &args(&["stray"])).unwrap_err(),
            "too many positional options have been specified on the command line"
        );
        assert!(
            parse_command_line(release, &args(&["--help"]))
                .unwrap()
                .help
        );
    }

    #[test]
    fn config_file_fills_in_but_command_line_wins() {
        let release = Release::V2024_12;
        let mut parsed = parse_command_line(release, &args(&["--www-port=9000"])).unwrap();
        let text = "# Rocker\nrsession-which-r=/usr/local/bin/R\n\n www-port = 8787 \n";
        merge_config_text(
            release,
            &mut parsed,
            text,
            Path::new("/etc/rstudio/rserver.conf"),
        )
        .unwrap();
        assert_eq!(parsed.get("rsession-which-r"), Some("/usr/local/bin/R"));
        assert_eq!(parsed.get("www-port"), Some("9000"));
    }

    #[test]
    fn config_file_rejects_unknown_and_command_line_only_options() {
        let path = Path::new("/etc/rstudio/rserver.conf");
        for (release, line, name) in [
            (Release::V1_4, "www-socket=/tmp/s", "www-socket"),
            (Release::V2024_12, "admin-enabled=1", "admin-enabled"),
            (Release::V2024_12, "help=1", "help"),
        ] {
            let mut parsed = ParsedOptions::default();
            let err = merge_config_text(release, &mut parsed, line, path).unwrap_err();
            assert_eq!(
                err,
                format!("Error reading /etc/rstudio/rserver.conf: unrecognised option '{name}'")
            );
        }
    }

    #[test]
    fn help_lists_exactly_the_visible_options() {
        for release in Release::ALL {
            let help = help_text(release);
            let listed: Vec<&str> = help
                .lines()
                .filter_map(|line| line.trim_start().strip_prefix("--"))
                .map(|rest| rest.split_whitespace().next().unwrap())
                .collect();
            let expected: Vec<&str> = accepted(release)
                .filter(|option| is_visible(option, release))
                .map(|option| option.name)
                .collect();
            assert_eq!(listed, expected, "{release}");
            for common in [
                "www-address",
                "www-port",
                "server-user",
                "server-daemonize",
                "secure-cookie-key-file",
                "auth-none",
                "auth-timeout-minutes",
                "auth-stay-signed-in-days",
                "auth-encrypt-password",
                "auth-minimum-user-id",
                "rsession-path",
                "rsession-which-r",
            ] {
                assert!(listed.contains(&common), "{release} lacks --{common}");
            }
            assert_eq!(
                listed.contains(&"www-socket"),
                release.has_www_socket(),
                "{release}"
            );
            assert_eq!(
                listed.contains(&"server-data-dir"),
                release.has_server_data_dir()
            );
            assert_eq!(
                listed.contains(&"database-config-file"),
                release.has_database()
            );
            assert_eq!(listed.contains(&"www-root-path"), release >= Release::V1_4);
            assert_eq!(
                listed.contains(&"auth-pam-helper-path"),
                release == Release::V1_3
            );
        }
    }

    #[test]
    fn hidden_options_are_still_accepted() {
        let parsed = parse_command_line(
            Release::V2024_12,
            &args(&["--auth-pam-helper-path=pam-helper"]),
        )
        .unwrap();
        assert_eq!(parsed.get("auth-pam-helper-path"), Some("pam-helper"));
    }
}
