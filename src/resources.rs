//! Validation of the SLURM resource values a user gives (`--time`, `--mem`, `--cpus`, `--gpus`,
//! partition and account names), so that a mistake is reported before anything is submitted.

use crate::error::{Error, Result};

/// Parses a SLURM time limit and returns it in seconds, or `None` for no limit.
///
/// Accepts the formats sbatch documents: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`, and `0`,
/// `UNLIMITED` or `INFINITE` for no limit.
pub fn parse_time(value: &str) -> Result<Option<u64>> {
    let invalid = || {
        Error::usage(format!("invalid time limit '{value}'"))
            .with_hint("use one of SLURM's --time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (for example 8:00:00 or 1-12:00)")
    };
    let value = value.trim();
    if value.eq_ignore_ascii_case("unlimited") || value.eq_ignore_ascii_case("infinite") {
        return Ok(None);
    }
    let number = |part: &str| -> Result<u64> {
        if part.is_empty() || part.len() > 6 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        part.parse::<u64>().map_err(|_| invalid())
    };

    let (days, rest) = match value.split_once('-') {
        Some((days, rest)) => (Some(number(days)?), rest),
        None => (None, value),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let numbers = parts
        .iter()
        .map(|p| number(p))
        .collect::<Result<Vec<u64>>>()?;
    let seconds = match (days, numbers.as_slice()) {
        (None, [minutes]) => minutes * 60,
        (None, [minutes, seconds]) => minutes * 60 + seconds,
        (None, [hours, minutes, seconds]) => hours * 3600 + minutes * 60 + seconds,
        (Some(d), [hours]) => d * 86400 + hours * 3600,
        (Some(d), [hours, minutes]) => d * 86400 + hours * 3600 + minutes * 60,
        (Some(d), [hours, minutes, seconds]) => d * 86400 + hours * 3600 + minutes * 60 + seconds,
        _ => return Err(invalid()),
    };
    if seconds == 0 {
        return Ok(None);
    }
    Ok(Some(seconds))
}

/// Checks a SLURM memory size: a whole number with an optional unit K, M, G or T (megabytes
/// when there is none, as sbatch reads it).
pub fn check_mem(value: &str) -> Result<()> {
    let digits = value.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    let unit_len = value.len() - digits.len();
    let valid = !digits.is_empty()
        && digits.len() <= 12
        && digits.bytes().all(|b| b.is_ascii_digit())
        && unit_len <= 1;
    if valid {
        return Ok(());
    }
    Err(
        Error::usage(format!("invalid memory size '{value}'")).with_hint(
            "give a whole number with an optional unit K, M, G or T, for example 16G or 4000M",
        ),
    )
}

/// Checks a CPU count: a whole number from 1 to 100000.
pub fn check_cpus(value: u32) -> Result<()> {
    if (1..=100_000).contains(&value) {
        return Ok(());
    }
    Err(Error::usage(format!("invalid CPU count '{value}'"))
        .with_hint("give a whole number of CPUs of at least 1, for example --cpus 4"))
}

/// Checks a GPU request in sbatch's `--gpus` form: `[type:]count`.
pub fn check_gpus(value: &str) -> Result<()> {
    let count = value.rsplit(':').next().unwrap_or_default();
    let kind_ok = value
        .rsplit_once(':')
        .map(|(kind, _)| is_slurm_name(kind))
        .unwrap_or(true);
    let count_ok =
        !count.is_empty() && count.len() <= 5 && count.bytes().all(|b| b.is_ascii_digit());
    if kind_ok && count_ok {
        return Ok(());
    }
    Err(Error::usage(format!("invalid GPU request '{value}'"))
        .with_hint("give a count, optionally with a type: --gpus 1 or --gpus a100:2"))
}

/// Checks a partition, account or similar name: letters, digits and `_.-,` only.
pub fn check_name(what: &str, value: &str) -> Result<()> {
    if is_slurm_name(value) {
        return Ok(());
    }
    Err(
        Error::usage(format!("invalid {what} name '{value}'")).with_hint(format!(
            "a {what} name contains only letters, digits and the characters _ . - ,"
        )),
    )
}

fn is_slurm_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 200
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-,".contains(&b))
}

/// Formats seconds as SLURM's `D-HH:MM:SS`, the form sbatch always accepts.
pub fn format_time(seconds: u64) -> String {
    let days = seconds / 86400;
    let hours = seconds % 86400 / 3600;
    let minutes = seconds % 3600 / 60;
    let secs = seconds % 60;
    if days > 0 {
        format!("{days}-{hours:02}:{minutes:02}:{secs:02}")
    } else {
        format!("{hours:02}:{minutes:02}:{secs:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_accepts_slurm_formats() {
        assert_eq!(parse_time("30").unwrap(), Some(1800));
        assert_eq!(parse_time("30:15").unwrap(), Some(1815));
        assert_eq!(parse_time("8:00:00").unwrap(), Some(28800));
        assert_eq!(parse_time("1-12").unwrap(), Some(129600));
        assert_eq!(parse_time("1-00:30").unwrap(), Some(88200));
        assert_eq!(parse_time("2-01:02:03").unwrap(), Some(176523));
        assert_eq!(parse_time("0").unwrap(), None);
        assert_eq!(parse_time("UNLIMITED").unwrap(), None);
    }

    #[test]
    fn time_rejects_other_forms() {
        for bad in [
            "2h", "", "1:2:3:4", "-5", "1-", "a:b", "1.5", "1-2-3", "99999999",
        ] {
            let err = parse_time(bad).unwrap_err();
            assert!(err.message.contains(bad), "{bad}: {}", err.message);
            assert!(err.hint.is_some());
        }
    }

    #[test]
    fn mem_accepts_units() {
        for good in ["4000", "16G", "512M", "1T", "100k"] {
            assert!(check_mem(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn mem_rejects_bad_values() {
        for bad in ["", "G", "16GB", "1.5G", "-1G", "lots"] {
            assert!(check_mem(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpus_bounds() {
        assert!(check_cpus(0).is_err());
        assert!(check_cpus(1).is_ok());
        assert!(check_cpus(128).is_ok());
    }

    #[test]
    fn gpus_forms() {
        assert!(check_gpus("1").is_ok());
        assert!(check_gpus("a100:2").is_ok());
        assert!(check_gpus("two").is_err());
        assert!(check_gpus("a100:").is_err());
        assert!(check_gpus("a b:1").is_err());
    }

    #[test]
    fn names() {
        assert!(check_name("partition", "gpu-short").is_ok());
        assert!(check_name("partition", "bad name").is_err());
        assert!(check_name("account", "x;rm").is_err());
    }

    #[test]
    fn time_round_trip() {
        assert_eq!(format_time(28800), "08:00:00");
        assert_eq!(format_time(176523), "2-01:02:03");
    }
}
