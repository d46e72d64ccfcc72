//! Small system helpers: user identity without NSS, clocks and date formats, randomness,
//! error texts and signal masks.
//!
//! The binaries are linked statically against glibc, so nothing here may call NSS functions
//! such as `getpwuid`. Accounts are read from `/etc/passwd` instead, which Apptainer writes for
//! the calling user at run time.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

/// Returns the real user id.
pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Returns the effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// An `/etc/passwd` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub home: String,
}

/// Parses `/etc/passwd` text into accounts, skipping malformed lines.
pub fn parse_passwd(text: &str) -> Vec<Account> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 7 {
                return None;
            }
            Some(Account {
                name: fields[0].to_string(),
                uid: fields[2].parse().ok()?,
                home: fields[5].to_string(),
            })
        })
        .collect()
}

fn accounts() -> Vec<Account> {
    std::fs::read_to_string("/etc/passwd")
        .map(|text| parse_passwd(&text))
        .unwrap_or_default()
}

/// Looks up an account by name, or by number when `name` is all digits (as rserver accepts a
/// numeric `--server-user`).
pub fn account_by_name(name: &str) -> Option<Account> {
    let all = accounts();
    if let Some(account) = all.iter().find(|account| account.name == name) {
        return Some(account.clone());
    }
    let uid: u32 = name.parse().ok()?;
    all.into_iter().find(|account| account.uid == uid)
}

/// Returns the name of the account running this process: its `/etc/passwd` entry, else `$USER`,
/// else the uid as text.
pub fn current_account_name() -> String {
    let uid = uid();
    if let Some(account) = accounts().into_iter().find(|account| account.uid == uid) {
        return account.name;
    }
    std::env::var("USER")
        .ok()
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| uid.to_string())
}

/// Returns the text of an OS error without Rust's ` (os error N)` suffix, e.g.
/// `Permission denied`.
pub fn describe_io_error(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Formats an error as RStudio logs system errors: `system error 13 (Permission denied)`.
pub fn system_error(err: &io::Error) -> String {
    format!(
        "system error {} ({})",
        err.raw_os_error().unwrap_or(0),
        describe_io_error(err)
    )
}

/// Returns the current time as seconds and microseconds since the Unix epoch.
pub fn now() -> (i64, u32) {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (since.as_secs() as i64, since.subsec_micros())
}

/// A UTC calendar time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 is Sunday.
    pub weekday: u32,
}

/// Converts seconds since the epoch to UTC calendar time (Howard Hinnant's civil-from-days).
pub fn civil(seconds: i64) -> CivilTime {
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    CivilTime {
        year,
        month,
        day,
        hour: (of_day / 3600) as u32,
        minute: (of_day % 3600 / 60) as u32,
        second: (of_day % 60) as u32,
        weekday: (days + 4).rem_euclid(7) as u32,
    }
}

/// Converts a UTC calendar date and time of day to seconds since the epoch.
pub fn seconds_from_civil(year: i64, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = i64::from(if month > 2 { month - 3 } else { month + 9 });
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    days * 86_400 + i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// Formats `2026-12-04T16:00:00.123456Z`, the log timestamp of RStudio 2021.09 and later.
pub fn iso_timestamp(seconds: i64, micros: u32) -> String {
    let t = civil(seconds);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// Formats `04 Dec 2026 16:00:00`, the log timestamp of RStudio 1.3 and 1.4.
pub fn legacy_timestamp(seconds: i64) -> String {
    let t = civil(seconds);
    format!(
        "{:02} {} {:04} {:02}:{:02}:{:02}",
        t.day,
        MONTHS[t.month as usize - 1],
        t.year,
        t.hour,
        t.minute,
        t.second
    )
}

/// Formats RFC 3339 with second precision: `2026-12-04T16:00:00Z`.
pub fn rfc3339(seconds: i64) -> String {
    let t = civil(seconds);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// Formats an HTTP date: `Fri, 04 Dec 2026 16:00:00 GMT`.
pub fn http_date(seconds: i64) -> String {
    let t = civil(seconds);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[t.weekday as usize],
        t.day,
        MONTHS[t.month as usize - 1],
        t.year,
        t.hour,
        t.minute,
        t.second
    )
}

/// Parses an HTTP date made by [`http_date`]; the weekday is not checked.
pub fn parse_http_date(text: &str) -> Option<i64> {
    let rest = text.split_once(", ")?.1;
    let parts: Vec<&str> = rest.split([' ', ':']).collect();
    if parts.len() != 7 || parts[6] != "GMT" {
        return None;
    }
    let month = MONTHS.iter().position(|name| *name == parts[1])? as u32 + 1;
    Some(seconds_from_civil(
        parts[2].parse().ok()?,
        month,
        parts[0].parse().ok()?,
        parts[3].parse().ok()?,
        parts[4].parse().ok()?,
        parts[5].parse().ok()?,
    ))
}

/// Returns `count` random bytes from the kernel.
pub fn random_bytes(count: usize) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = vec![0; count];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Formats bytes as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Returns whether file descriptor `fd` is a terminal.
pub fn is_terminal(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Blocks `signals` in the calling thread; threads it starts later inherit the mask.
pub fn block_signals(signals: &[i32]) -> io::Result<libc::sigset_t> {
    // SAFETY: the set is initialised by sigemptyset before use, and pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

/// Waits for one of the blocked signals in `set`, for at most `timeout_seconds` when given.
/// Returns `None` when the time ran out.
pub fn wait_for_signal(set: &libc::sigset_t, timeout_seconds: Option<u64>) -> Option<i32> {
    loop {
        // SAFETY: `set` is an initialised signal set; the info and timeout structs are owned
        // locals.
        let result = unsafe {
            match timeout_seconds {
                Some(seconds) => {
                    let timeout = libc::timespec {
                        tv_sec: seconds.min(i64::MAX as u64) as libc::time_t,
                        tv_nsec: 0,
                    };
                    libc::sigtimedwait(set, std::ptr::null_mut(), &timeout)
                }
                None => libc::sigwaitinfo(set, std::ptr::null_mut()),
            }
        };
        if result > 0 {
            return Some(result);
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            _ => return None,
        }
    }
}

/// Ends the process by `signal` with its default action, as RStudio's programs do after their
/// own clean-up, so the parent sees death by that signal.
pub fn die_by_signal(signal: i32) -> ! {
    // SAFETY: resetting a disposition and unblocking a signal have no memory-safety
    // preconditions.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    std::process::exit(128 + signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        // 2021-12-03T11:07:59Z was a Friday.
        let seconds = 1_638_529_679;
        assert_eq!(
            iso_timestamp(seconds, 337_534),
            "2021-12-03T11:07:59.337534Z"
        );
        assert_eq!(legacy_timestamp(seconds), "03 Dec 2021 11:07:59");
        assert_eq!(rfc3339(seconds), "2021-12-03T11:07:59Z");
        assert_eq!(http_date(seconds), "Fri, 03 Dec 2021 11:07:59 GMT");
        assert_eq!(parse_http_date(&http_date(seconds)), Some(seconds));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn parses_passwd_lines() {
        let text = "root:x:0:0:root:/root:/bin/sh\nbroken\nrstudio-server:x:999:999::/home/rs:\n";
        let accounts = parse_passwd(text);
        assert_eq!(accounts.len(), 2);
        assert_eq!(accounts[1].name, "rstudio-server");
        assert_eq!(accounts[1].uid, 999);
        assert_eq!(accounts[1].home, "/home/rs");
    }

    #[test]
    fn describes_errors_like_rstudio() {
        let err = io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert_eq!(
            system_error(&err),
            "system error 98 (Address already in use)"
        );
    }
}
