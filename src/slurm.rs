//! SLURM's commands: sbatch to submit, squeue and sacct to read a job's state, scancel to signal
//! or cancel it. Output is parsed by pure functions tested on the real programs' output.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A job's state as the scheduler reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    /// The long state name, such as PENDING, RUNNING or TIMEOUT.
    pub state: String,
    /// Why a pending job waits, or `None`.
    pub reason: Option<String>,
    /// Time used so far, as squeue prints it.
    pub elapsed: Option<String>,
    pub node: Option<String>,
    /// `exit:signal`, from sacct.
    pub exit_code: Option<String>,
}

impl JobState {
    pub fn is_pending(&self) -> bool {
        matches!(
            self.state.as_str(),
            "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "RESV_DEL_HOLD"
        )
    }

    pub fn is_finished(&self) -> bool {
        !self.is_pending()
            && !matches!(
                self.state.as_str(),
                "RUNNING" | "COMPLETING" | "SUSPENDED" | "STAGE_OUT" | "SIGNALING" | "RESIZING"
            )
    }
}

/// Submits `script` and returns the job id.
pub fn submit(script: &Path) -> Result<String> {
    let mut cmd = Command::new("sbatch");
    cmd.arg("--parsable").arg(script);
    let output = process::run(&mut cmd, None, TIMEOUT)?;
    if !output.success() {
        let message = output
            .stderr
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or(output.stderr.trim())
            .to_owned();
        let hint = if message.contains("invalid partition") {
            "`sinfo -s` lists the partitions you can use"
        } else if message.contains("account") {
            "`sacctmgr show assoc user=$USER` lists your accounts"
        } else {
            "fix the value sbatch names above; nothing was submitted"
        };
        return Err(Error::usage(format!(
            "sbatch rejected the job: {}",
            message.trim_start_matches("sbatch: error: ")
        ))
        .with_details(output.stderr.lines().map(str::to_owned).collect())
        .with_hint(hint));
    }
    parse_sbatch(&output.stdout).ok_or_else(|| {
        Error::failed(format!(
            "cannot read the job id from sbatch's output '{}'",
            output.stdout.trim()
        ))
    })
}

/// Reads `jobid[;cluster]` from `sbatch --parsable`.
pub fn parse_sbatch(stdout: &str) -> Option<String> {
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty())?.trim();
    let id = line.split(';').next()?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit() || b == b'_')).then(|| id.to_owned())
}

/// Asks squeue about one job; `None` when squeue no longer knows it.
pub fn squeue(job: &str) -> Result<Option<JobState>> {
    let mut cmd = Command::new("squeue");
    cmd.args(["-h", "-j", job, "-o", "%T|%r|%M|%N"]);
    let output = process::run(&mut cmd, None, TIMEOUT)?;
    if !output.success() {
        if output.stderr.contains("Invalid job id") {
            return Ok(None);
        }
        return Err(process::failure(&cmd, &output));
    }
    Ok(parse_squeue(&output.stdout))
}

/// Parses a `%T|%r|%M|%N` line.
pub fn parse_squeue(stdout: &str) -> Option<JobState> {
    let line = stdout.lines().find(|l| !l.trim().is_empty())?;
    let fields: Vec<&str> = line.trim().split('|').collect();
    if fields.len() < 4 {
        return None;
    }
    let optional = |s: &str| (!s.is_empty() && s != "None" && s != "(null)").then(|| s.to_owned());
    Some(JobState {
        state: fields[0].to_owned(),
        reason: optional(fields[1]),
        elapsed: optional(fields[2]),
        node: optional(fields[3]),
        exit_code: None,
    })
}

/// Asks the accounting database about a job squeue has forgotten.
pub fn sacct(job: &str) -> Result<Option<JobState>> {
    let mut cmd = Command::new("sacct");
    cmd.args([
        "-X",
        "-n",
        "-P",
        "-j",
        job,
        "-o",
        "JobID,State,ExitCode,NodeList,Elapsed",
    ]);
    let output = process::run(&mut cmd, None, TIMEOUT)?;
    if !output.success() {
        return Err(process::failure(&cmd, &output));
    }
    Ok(parse_sacct(&output.stdout, job))
}

/// Parses `sacct -X -n -P -o JobID,State,ExitCode,NodeList,Elapsed`. The state may read
/// `CANCELLED by 1001`; the first word is the state.
pub fn parse_sacct(stdout: &str, job: &str) -> Option<JobState> {
    let line = stdout.lines().find(|l| l.split('|').next() == Some(job))?;
    let fields: Vec<&str> = line.split('|').collect();
    if fields.len() < 5 {
        return None;
    }
    Some(JobState {
        state: fields[1]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned(),
        reason: fields[1].split_once(' ').map(|(_, r)| r.to_owned()),
        elapsed: Some(fields[4].to_owned()),
        node: (!fields[3].is_empty() && fields[3] != "None assigned").then(|| fields[3].to_owned()),
        exit_code: Some(fields[2].to_owned()),
    })
}

/// The job's state from squeue, or from sacct once squeue has forgotten it.
pub fn job_state(job: &str) -> Result<Option<JobState>> {
    match squeue(job)? {
        Some(state) => Ok(Some(state)),
        None => sacct(job),
    }
}

/// Sends `signal` to the batch script only (the supervisor), as `scancel --batch --signal`.
pub fn signal_batch(job: &str, signal: &str) -> Result<()> {
    let mut cmd = Command::new("scancel");
    cmd.args(["--batch", &format!("--signal={signal}"), job]);
    process::run_checked(&mut cmd, TIMEOUT).map(|_| ())
}

/// Cancels the job.
pub fn cancel(job: &str) -> Result<()> {
    let mut cmd = Command::new("scancel");
    cmd.arg(job);
    process::run_checked(&mut cmd, TIMEOUT).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbatch_output() {
        assert_eq!(parse_sbatch("42\n").as_deref(), Some("42"));
        assert_eq!(parse_sbatch("42;cluster\n").as_deref(), Some("42"));
        assert_eq!(parse_sbatch("").as_deref(), None);
        assert_eq!(parse_sbatch("Submitted batch job 42").as_deref(), None);
    }

    #[test]
    fn squeue_pending_and_running() {
        let pending = parse_squeue("PENDING|Resources|0:00|\n").unwrap();
        assert!(pending.is_pending());
        assert_eq!(pending.reason.as_deref(), Some("Resources"));
        assert_eq!(pending.node, None);
        let running = parse_squeue("RUNNING|None|1:02|vm\n").unwrap();
        assert!(!running.is_pending());
        assert!(!running.is_finished());
        assert_eq!(running.node.as_deref(), Some("vm"));
        assert_eq!(running.reason, None);
        assert!(parse_squeue("").is_none());
    }

    #[test]
    fn sacct_states() {
        let text = "17|CANCELLED by 1001|0:15|vm|00:00:12\n";
        let state = parse_sacct(text, "17").unwrap();
        assert_eq!(state.state, "CANCELLED");
        assert_eq!(state.reason.as_deref(), Some("by 1001"));
        assert!(state.is_finished());
        let text = "18|TIMEOUT|0:0|vm|00:01:00\n";
        assert_eq!(parse_sacct(text, "18").unwrap().state, "TIMEOUT");
        assert!(parse_sacct(text, "19").is_none());
    }
}
