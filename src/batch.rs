//! The batch script `submit` sends: `#SBATCH` lines for the resources, and one command that runs
//! hpc-rstudio itself on the compute node, where the supervisor does the real work.

use std::path::Path;

use crate::error::{Error, Result};
use crate::settings::Resources;
use crate::shell::quote;

/// Builds the batch script. A pure function of its inputs, so `script` prints exactly what
/// `submit` sends.
pub fn script(
    binary: &Path,
    session_id: &str,
    session_dir: &Path,
    resources: &Resources,
) -> Result<String> {
    let output = session_dir.join("job.out");
    let output = output.to_string_lossy();
    if output.contains(['"', '\n', '\r', '%']) {
        return Err(Error::usage(format!(
            "the session directory {} contains a character sbatch cannot take in a path (\", % or a line break)",
            session_dir.display()
        ))
        .with_hint("set XDG_STATE_HOME to a directory without those characters"));
    }

    let mut lines = vec![
        "#!/bin/bash".to_owned(),
        format!("#SBATCH --job-name=rstudio-{session_id}"),
        format!("#SBATCH --output=\"{output}\""),
        // B: sends the signal to the batch script itself, where the supervisor runs; without it
        // SLURM signals job steps only, and this job has none.
        format!("#SBATCH --signal=B:USR2@{}", resources.save_lead),
    ];
    if let Some(seconds) = resources.time_seconds {
        lines.push(format!(
            "#SBATCH --time={}",
            crate::resources::format_time(seconds)
        ));
    } else if resources.time.is_some() {
        lines.push("#SBATCH --time=UNLIMITED".to_owned());
    }
    if let Some(cpus) = resources.cpus {
        lines.push(format!("#SBATCH --cpus-per-task={cpus}"));
    }
    if let Some(mem) = &resources.mem {
        lines.push(format!("#SBATCH --mem={mem}"));
    }
    if let Some(partition) = &resources.partition {
        lines.push(format!("#SBATCH --partition={partition}"));
    }
    if let Some(account) = &resources.account {
        lines.push(format!("#SBATCH --account={account}"));
    }
    if let Some(gpus) = &resources.gpus {
        lines.push(format!("#SBATCH --gpus={gpus}"));
    }
    for arg in &resources.sbatch_args {
        lines.push(format!("#SBATCH {arg}"));
    }
    lines.push(String::new());
    lines.push(
        "# The supervisor replaces this shell, so it receives the signal above directly."
            .to_owned(),
    );
    lines.push(format!(
        "exec {} job {}",
        quote(&binary.to_string_lossy()),
        quote(session_id)
    ));
    let mut text = lines.join("\n");
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources() -> Resources {
        Resources {
            time: Some("1:00:00".into()),
            time_seconds: Some(3600),
            cpus: Some(4),
            mem: Some("8G".into()),
            partition: Some("short".into()),
            account: None,
            gpus: None,
            sbatch_args: vec!["--qos=long".into()],
            save_lead: 120,
        }
    }

    #[test]
    fn script_has_resources_and_signal() {
        let text = script(
            Path::new("/opt/bin/hpc-rstudio"),
            "s1",
            Path::new("/home/u/st/s1"),
            &resources(),
        )
        .unwrap();
        for expected in [
            "#SBATCH --signal=B:USR2@120",
            "#SBATCH --time=01:00:00",
            "#SBATCH --cpus-per-task=4",
            "#SBATCH --mem=8G",
            "#SBATCH --partition=short",
            "#SBATCH --qos=long",
            "#SBATCH --output=\"/home/u/st/s1/job.out\"",
            "exec /opt/bin/hpc-rstudio job s1",
        ] {
            assert!(text.contains(expected), "missing {expected}:\n{text}");
        }
    }

    #[test]
    fn odd_binary_path_is_quoted() {
        let text = script(
            Path::new("/opt/my tools (v2)/hpc-rstudio"),
            "s1",
            Path::new("/h"),
            &resources(),
        )
        .unwrap();
        assert!(text.contains("exec '/opt/my tools (v2)/hpc-rstudio' job s1"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sh");
        std::fs::write(&path, &text).unwrap();
        crate::shell::check_syntax(&path).unwrap();
    }

    #[test]
    fn percent_in_output_path_is_rejected() {
        assert!(script(Path::new("/b"), "s1", Path::new("/home/100%"), &resources()).is_err());
    }
}
