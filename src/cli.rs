//! The command-line interface: subcommands, flags, and the environment variables behind them.

use clap::{Args, Parser, Subcommand};

/// Run RStudio Server from a Rocker image under Apptainer or SingularityCE, on this node or as a
/// SLURM batch job on a compute node.
#[derive(Debug, Parser)]
#[command(name = "hpc-rstudio", version, about, max_term_width = 100)]
pub struct Cli {
    /// Print debug messages: every external command and the decisions taken.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start RStudio Server on this node in the foreground; Ctrl-C stops it.
    Run(RunArgs),
    /// Submit a SLURM batch job that starts RStudio Server on a compute node.
    Submit(SubmitArgs),
    /// Print the batch script that `submit` would send, without sending it.
    Script(ScriptArgs),
    /// List the sessions you started.
    List(ListArgs),
    /// Show a session's state and connection details.
    Status(StatusArgs),
    /// Stop a session, letting RStudio save its state first.
    Stop(SessionIdArg),
    /// Print a session's logs.
    Logs(SessionIdArg),
    /// Remove the records of sessions that have ended.
    Clean(CleanArgs),
    /// Fetch a Docker or OCI image into the image cache as a SIF file.
    Pull(PullArgs),
    /// Check everything a launch depends on, on this node or a compute node.
    Doctor(DoctorArgs),
    /// From your own computer: start a session on HOST and open the tunnel to it.
    Connect(crate::connect::ConnectArgs),
    /// Run a session inside a batch job (the batch script calls this).
    #[command(hide = true)]
    Job(JobArgs),
}

/// Options of every command that starts RStudio Server.
#[derive(Debug, Args, Clone, Default)]
pub struct LaunchArgs {
    /// The image: a SIF file or a reference such as docker://rocker/rstudio:4.4.2.
    #[arg(long, env = "HPC_RSTUDIO_IMAGE")]
    pub image: Option<String>,

    /// The container runtime to use: apptainer or singularity [default: apptainer if found].
    #[arg(long, env = "HPC_RSTUDIO_RUNTIME")]
    pub runtime: Option<String>,

    /// Bind a host path into the container: SRC[:DEST[:ro|rw]]. Repeatable.
    #[arg(long = "bind", short = 'B', value_name = "SRC[:DEST[:OPTS]]")]
    pub binds: Vec<String>,

    /// Set an environment variable for R sessions: KEY=VALUE. Repeatable. Variables exported in
    /// the launching shell do not reach R; this is the way to pass them.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Serve on this TCP port instead of a free one from the configured range.
    #[arg(long, env = "HPC_RSTUDIO_PORT")]
    pub port: Option<u16>,

    /// Serve on a Unix socket (mode 0700) instead of a TCP port; needs RStudio 2024.12 or later.
    #[arg(long, conflicts_with = "port")]
    pub socket: bool,

    /// Pass an extra option to rserver: NAME=VALUE, without the leading dashes. Repeatable.
    #[arg(long = "rserver-option", value_name = "NAME=VALUE")]
    pub rserver_options: Vec<String>,

    /// Seconds to wait for the server to respond before the launch counts as failed.
    #[arg(long, value_name = "SECONDS")]
    pub start_timeout: Option<u64>,

    /// Move RStudio's saved state (open files, R environment) aside with a timestamp before
    /// starting, so that RStudio starts clean. Nothing is deleted.
    #[arg(long)]
    pub fresh_session: bool,

    /// Use the host's /tmp instead of a private one. Another user's /tmp/rstudio-server on the
    /// node then stops the launch.
    #[arg(long)]
    pub shared_tmp: bool,
}

/// SLURM resources of a batch job.
#[derive(Debug, Args, Clone, Default)]
pub struct ResourceArgs {
    /// Time limit in a SLURM format, for example 8:00:00 or 1-00:00.
    #[arg(long, env = "HPC_RSTUDIO_TIME")]
    pub time: Option<String>,

    /// CPUs for the session (sbatch --cpus-per-task); R's maths libraries use this many threads.
    #[arg(long, env = "HPC_RSTUDIO_CPUS")]
    pub cpus: Option<u32>,

    /// Memory, for example 16G (sbatch --mem).
    #[arg(long, env = "HPC_RSTUDIO_MEM")]
    pub mem: Option<String>,

    /// SLURM partition.
    #[arg(long, short = 'p', env = "HPC_RSTUDIO_PARTITION")]
    pub partition: Option<String>,

    /// SLURM account to charge.
    #[arg(long, short = 'A', env = "HPC_RSTUDIO_ACCOUNT")]
    pub account: Option<String>,

    /// GPUs: a count, optionally with a type, for example a100:1 (sbatch --gpus).
    #[arg(long)]
    pub gpus: Option<String>,

    /// A further sbatch option, as one argument, for example --sbatch-arg=--qos=long. Repeatable.
    #[arg(long = "sbatch-arg", value_name = "OPTION", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,

    /// Seconds before the time limit at which R sessions are signalled to save their state.
    #[arg(long, value_name = "SECONDS")]
    pub save_lead: Option<u32>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub launch: LaunchArgs,

    /// CPUs R's maths libraries may use [default: the CPUs this process may run on].
    #[arg(long)]
    pub cpus: Option<u32>,

    /// Address to listen on [default: 127.0.0.1].
    #[arg(long)]
    pub address: Option<String>,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub launch: LaunchArgs,

    #[command(flatten)]
    pub resources: ResourceArgs,

    /// The login host users connect to with ssh [default: the site setting, else this host].
    #[arg(long, env = "HPC_RSTUDIO_LOGIN_HOST")]
    pub login_host: Option<String>,

    /// Return right after submission instead of waiting for the server.
    #[arg(long)]
    pub no_wait: bool,

    /// Print progress and the result as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ScriptArgs {
    #[command(flatten)]
    pub launch: LaunchArgs,

    #[command(flatten)]
    pub resources: ResourceArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print the sessions as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The session id, as `list` shows it.
    pub id: String,

    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SessionIdArg {
    /// The session id, as `list` shows it.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image reference, for example docker://rocker/rstudio:4.4.2 or oci-archive:FILE.
    pub image: String,

    /// Replace a cached image of the same name.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// The session id whose record contains the settings.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also check this image: a SIF file or a reference in the image cache.
    #[arg(long, env = "HPC_RSTUDIO_IMAGE")]
    pub image: Option<String>,

    /// The container runtime to check: apptainer or singularity.
    #[arg(long, env = "HPC_RSTUDIO_RUNTIME")]
    pub runtime: Option<String>,

    /// Run the checks on a compute node, as a short SLURM job.
    #[arg(long)]
    pub on_node: bool,

    /// The partition for --on-node.
    #[arg(long, short = 'p')]
    pub partition: Option<String>,

    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Only list what would be removed.
    #[arg(long)]
    pub dry_run: bool,
}
