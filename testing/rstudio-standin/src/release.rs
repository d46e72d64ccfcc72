//! The RStudio releases the stand-in can play, and what differs between them.
//!
//! The image selects one with the marker file `/etc/rstudio-standin/release`, so one pair of
//! binaries serves every test image.

use std::fmt;
use std::path::Path;

/// Path of the marker file that names the release an image plays.
pub const RELEASE_MARKER: &str = "/etc/rstudio-standin/release";

/// An RStudio Server release whose command-line contract the stand-in reproduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Release {
    /// 1.3 (e.g. 1.3.1093): no database, revocation list under `/var/run/rstudio-server`.
    V1_3,
    /// 1.4 (e.g. 1.4.1717): SQLite database and `--server-data-dir`; no server-user check.
    V1_4,
    /// 2022.07: rejects a different server user without privilege; adds the session RPC key.
    V2022_07,
    /// 2024.12: adds `--www-socket`.
    V2024_12,
}

impl Release {
    /// Every release, oldest first.
    pub const ALL: [Release; 4] = [
        Release::V1_3,
        Release::V1_4,
        Release::V2022_07,
        Release::V2024_12,
    ];

    /// Parses the marker's text (`1.3`, `1.4`, `2022.07` or `2024.12`, surrounding blanks
    /// ignored).
    pub fn parse(text: &str) -> Option<Release> {
        match text.trim() {
            "1.3" => Some(Release::V1_3),
            "1.4" => Some(Release::V1_4),
            "2022.07" => Some(Release::V2022_07),
            "2024.12" => Some(Release::V2024_12),
            _ => None,
        }
    }

    /// Reads the release from the marker file at `path`.
    pub fn from_marker(path: &Path) -> Result<Release, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read the release marker {}: {err}", path.display()))?;
        Release::parse(&text).ok_or_else(|| {
            format!(
                "the release marker {} holds '{}', expected one of 1.3, 1.4, 2022.07, 2024.12",
                path.display(),
                text.trim()
            )
        })
    }

    /// Returns the marker text for this release.
    pub fn name(self) -> &'static str {
        match self {
            Release::V1_3 => "1.3",
            Release::V1_4 => "1.4",
            Release::V2022_07 => "2022.07",
            Release::V2024_12 => "2024.12",
        }
    }

    /// Returns whether rserver keeps its state in a SQLite database (1.4 and later).
    pub fn has_database(self) -> bool {
        self >= Release::V1_4
    }

    /// Returns whether rserver has `--server-data-dir` and insists on mode 1777 for it (1.4 and later).
    pub fn has_server_data_dir(self) -> bool {
        self >= Release::V1_4
    }

    /// Returns whether rserver keeps its cookie revocation list in a file under
    /// `/var/run/rstudio-server` (1.3 only; later releases moved it into the database).
    pub fn has_revocation_list_file(self) -> bool {
        self == Release::V1_3
    }

    /// Returns whether an unprivileged rserver rejects a `--server-user` other than its own account.
    /// RStudio 2022.07 and later refuse to start as another server user without privilege.
    pub fn checks_server_user(self) -> bool {
        self >= Release::V2022_07
    }

    /// Returns whether rserver also creates `session-rpc-key` beside the secure cookie key.
    pub fn has_session_rpc_key(self) -> bool {
        self >= Release::V2022_07
    }

    /// Returns whether `--www-socket` exists (2024.12.0 and later).
    pub fn has_www_socket(self) -> bool {
        self >= Release::V2024_12
    }

    /// File name of the SQLite database: 2021.09 renamed `rstudio.sqlite` to
    /// `rstudio-os.sqlite`.
    pub fn database_file_name(self) -> &'static str {
        if self >= Release::V2022_07 {
            "rstudio-os.sqlite"
        } else {
            "rstudio.sqlite"
        }
    }

    /// Returns whether log lines carry ISO 8601 timestamps (`2021-12-03T11:07:59.337534Z`), as from
    /// 2021.09 on, rather than the older `27 Jan 2021 20:45:00`.
    pub fn iso_log_timestamps(self) -> bool {
        self >= Release::V2022_07
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_marker_and_rejects_others() {
        for release in Release::ALL {
            assert_eq!(Release::parse(release.name()), Some(release));
            assert_eq!(
                Release::parse(&format!(" {}\n", release.name())),
                Some(release)
            );
        }
        assert_eq!(Release::parse("2023.03"), None);
        assert_eq!(Release::parse(""), None);
    }

    #[test]
    fn behaviour_table_matches_the_contract() {
        use Release::*;
        let rows = [
            // (release, database, server-user check, www-socket, revocation file, rpc key)
            (V1_3, false, false, false, true, false),
            (V1_4, true, false, false, false, false),
            (V2022_07, true, true, false, false, true),
            (V2024_12, true, true, true, false, true),
        ];
        for (release, database, user_check, socket, revocation, rpc_key) in rows {
            assert_eq!(release.has_database(), database, "{release} database");
            assert_eq!(
                release.has_server_data_dir(),
                database,
                "{release} server-data-dir"
            );
            assert_eq!(
                release.checks_server_user(),
                user_check,
                "{release} server-user"
            );
            assert_eq!(release.has_www_socket(), socket, "{release} www-socket");
            assert_eq!(
                release.has_revocation_list_file(),
                revocation,
                "{release} revocation"
            );
            assert_eq!(
                release.has_session_rpc_key(),
                rpc_key,
                "{release} session-rpc-key"
            );
        }
    }

    #[test]
    fn database_file_was_renamed_after_1_4() {
        assert_eq!(Release::V1_4.database_file_name(), "rstudio.sqlite");
        assert_eq!(Release::V2024_12.database_file_name(), "rstudio-os.sqlite");
    }
}
