//! `hpc-rstudio connect`: from the user's own machine, submit a session on a cluster through one
//! shared SSH connection, open the tunnel to it, and keep the tunnel alive.

use clap::Args;

use crate::error::{Error, Result};

/// Options of `connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The host as you write it for `ssh HOST`; your ~/.ssh/config applies.
    pub host: String,
}

pub fn run(args: &ConnectArgs) -> Result<()> {
    Err(Error::failed(format!("connect to {} is not available yet", args.host)))
}
