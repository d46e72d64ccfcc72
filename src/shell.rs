//! POSIX shell quoting for the few files we generate as shell (the batch script and the rsession
//! wrapper), and a syntax check for them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};

/// Quotes `value` so that a POSIX shell reads it back as exactly one word with the same bytes.
///
/// Single quotes make every character literal, so the only character to handle is the single
/// quote itself, written as `'\''`.
pub fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if plain {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Checks a generated script with `sh -n` before it is used, so that a broken file is reported
/// here and not as a cryptic failure inside the job or the container.
pub fn check_syntax(path: &Path) -> Result<()> {
    let mut cmd = Command::new("sh");
    cmd.arg("-n").arg(path);
    let output = crate::process::run(&mut cmd, None, Duration::from_secs(10))?;
    if output.success() {
        return Ok(());
    }
    Err(Error::failed(format!(
        "generated script {} has a syntax error",
        path.display()
    ))
    .with_details(output.stderr.lines().map(str::to_owned).collect())
    .with_hint("this is a bug in hpc-rstudio; please report it with the script attached"))
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quote_leaves_plain_words() {
        assert_eq!(
            quote("/usr/lib/rstudio-server/bin/rsession"),
            "/usr/lib/rstudio-server/bin/rsession"
        );
    }

    #[test]
    fn quote_wraps_special_characters() {
        assert_eq!(quote("8(x2)"), "'8(x2)'");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn quote_escapes_single_quote() {
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn quoted_values_survive_sh() {
        for value in [
            "8(x2)",
            "it's \"quoted\"",
            "$(touch /x)",
            "a\nb",
            "`x`; rm -rf /",
            "\\",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(value)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), value);
        }
    }
}
