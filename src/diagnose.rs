//! Known error messages from rserver, rsession and the container runtime, mapped to their cause
//! and fix. One table, matched against log lines; add a row to teach hpc-rstudio a new failure.

/// One known failure.
pub struct KnownError {
    /// Text that appears in the log line (matched case-sensitively).
    pub pattern: &'static str,
    pub cause: &'static str,
    pub fix: &'static str,
}

pub const KNOWN_ERRORS: &[KnownError] = &[
    KnownError {
        pattern: "Address already in use",
        cause: "the port is taken by another program on the node",
        fix: "choose another --port, or leave --port out so a free one is chosen",
    },
    KnownError {
        pattern: "attempt to write a readonly database",
        cause: "RStudio's database directory is read-only (inside the image)",
        fix: "let hpc-rstudio bind its private /var/lib/rstudio-server; do not override it with --bind",
    },
    KnownError {
        pattern: "unable to open database file",
        cause: "RStudio cannot create its database",
        fix: "check that node_tmp points to a writable node-local directory with free space",
    },
    KnownError {
        pattern: "Could not acquire revocation list file lock",
        cause: "RStudio 1.3 needs a writable /run",
        fix: "let hpc-rstudio bind its private /run; do not override it with --bind",
    },
    KnownError {
        pattern: "Attempt to run server as user",
        cause: "this RStudio release refuses to run as its default server user without root",
        fix: "pass --server-user (hpc-rstudio does when the image's rserver lists it); report the image if you see this",
    },
    KnownError {
        pattern: "must be writeable by all users and have the sticky bit set",
        cause: "rserver's server data directory has the wrong mode",
        fix: "let hpc-rstudio choose --server-data-dir; remove an rserver-option that sets it",
    },
    KnownError {
        pattern: "system error 13 (Permission denied)",
        cause: "rserver cannot read or create one of its files, often another user's /tmp/rstudio-server",
        fix: "keep the private /tmp that hpc-rstudio binds; ask the owner of the named file to remove it",
    },
    KnownError {
        pattern: "unrecognised option",
        cause: "rserver was given an option its release does not know (on the command line or in the image's /etc/rstudio/rserver.conf)",
        fix: "remove that option, or use an image with a newer RStudio",
    },
    KnownError {
        pattern: "No locks available",
        cause: "RStudio's state directory is on a network file system without working locks",
        fix: "set RSTUDIO_DATA_HOME to node-local storage with --env, or ask the admins about locking on HOME",
    },
    KnownError {
        pattern: "Incorrect or invalid username/password",
        cause: "the sign-in did not match the session's user name and password",
        fix: "type exactly the user name and password that hpc-rstudio printed (`hpc-rstudio status ID` shows them)",
    },
    KnownError {
        pattern: "Could not connect to the R session",
        cause: "the R session could not start",
        fix: "read the log lines above; a library in ~/R built for another system or an image whose RStudio is older than its R are common causes",
    },
    KnownError {
        pattern: "Rf_countContexts",
        cause: "this image's RStudio is too old for its R",
        fix: "use a newer image, where RStudio and R were built together",
    },
    KnownError {
        pattern: "Unable to determine real path of R script",
        cause: "a host R (for example from conda) leaked into the container",
        fix: "remove RSTUDIO_WHICH_R and conda from the environment you pass with --env",
    },
    KnownError {
        pattern: "cannot open shared object file",
        cause: "an R package in your library was built for another system",
        fix: "hpc-rstudio keeps a separate library per image under ~/R/hpc-rstudio; reinstall the package there",
    },
    KnownError {
        pattern: "user namespace disabled",
        cause: "user namespaces are disabled on this node and the runtime is not installed setuid",
        fix: "ask the admins to enable user namespaces (user.max_user_namespaces) or install the runtime setuid",
    },
    KnownError {
        pattern: "maximum number of user namespaces exceeded",
        cause: "the node's limit on user namespaces is reached or set to 0, and the runtime is not installed setuid",
        fix: "ask the admins to raise user.max_user_namespaces (sysctl) or to install the runtime setuid",
    },
    KnownError {
        pattern: "Failed to create user namespace",
        cause: "the runtime could not create a user namespace on this node",
        fix: "ask the admins to enable user namespaces (user.max_user_namespaces) or install the runtime setuid",
    },
    KnownError {
        pattern: "doesn't exist in container",
        cause: "a bind destination is missing in the image and the runtime cannot create it",
        fix: "bind to a path that exists in the image, or enable overlay or underlay in the runtime's configuration",
    },
    KnownError {
        pattern: "mount source",
        cause: "a bind source does not exist on the node",
        fix: "create the directory on the node's file systems or remove the --bind",
    },
    KnownError {
        pattern: "/opt/TinyTeX",
        cause: "the image's TinyTeX is read-only, so TeX packages cannot be installed into it",
        fix: "install TinyTeX under HOME with tinytex::install_tinytex() in R, or use an image that has the TeX packages",
    },
    KnownError {
        pattern: "Exceeded job memory limit",
        cause: "SLURM killed the job for using more memory than it asked for",
        fix: "ask for more memory with --mem; `hpc-rstudio status ID` shows the limits the session started with",
    },
    KnownError {
        pattern: "Syntax error: \"(\" unexpected",
        cause: "a generated shell script took a value with parentheses unquoted (a job script or rsession wrapper of another tool)",
        fix: "hpc-rstudio quotes every generated value and checks its scripts with sh -n; if this comes from hpc-rstudio, report it with the script",
    },
    KnownError {
        pattern: "DEPRECATED",
        cause: "the runtime warns about a deprecated variable prefix (SINGULARITYENV_ or SINGULARITY_ under Apptainer) set in your environment",
        fix: "use APPTAINERENV_ and APPTAINER_ names, or remove the variable; hpc-rstudio passes its own settings with the runtime's current prefix",
    },
    KnownError {
        pattern: "OUT_OF_MEMORY",
        cause: "the job was killed for using more memory than it asked for",
        fix: "ask for more memory with --mem; `hpc-rstudio status ID` shows the limits the session started with",
    },
    KnownError {
        pattern: "oom-kill",
        cause: "the kernel killed a process of the job for using more memory than its limit",
        fix: "ask for more memory with --mem; `hpc-rstudio status ID` shows the limits the session started with",
    },
    KnownError {
        pattern: "Out Of Memory",
        cause: "the job ran out of its memory limit",
        fix: "ask for more memory with --mem",
    },
];

/// A known error found in a log: the line and its table entry.
pub struct Finding<'a> {
    pub line: &'a str,
    pub known: &'static KnownError,
}

/// Finds the first line in `lines` that matches a known error.
pub fn find<'a>(lines: &'a [String]) -> Option<Finding<'a>> {
    for line in lines {
        if let Some(known) = KNOWN_ERRORS.iter().find(|k| line.contains(k.pattern)) {
            return Some(Finding { line, known });
        }
    }
    None
}

/// Returns the cause and fix of the first known error in `lines`, if any.
pub fn hint_for(lines: &[String]) -> Option<String> {
    find(lines).map(|f| format!("{}; {}", f.known.cause, f.known.fix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_port_error() {
        let lines = vec![
            "starting".to_owned(),
            "ERROR system error 98 (Address already in use); OCCURRED AT ...".to_owned(),
        ];
        let finding = find(&lines).unwrap();
        assert!(finding.line.contains("98"));
        assert!(hint_for(&lines).unwrap().contains("port"));
    }

    #[test]
    fn every_known_pattern_is_found() {
        for known in KNOWN_ERRORS {
            let lines = vec![format!("ERROR something: {} happened", known.pattern)];
            let finding = find(&lines).unwrap_or_else(|| panic!("{} not found", known.pattern));
            assert!(finding.line.contains(known.pattern));
        }
    }

    #[test]
    fn nothing_known() {
        assert!(find(&["all fine".to_owned()]).is_none());
    }
}
