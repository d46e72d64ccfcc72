//! Test double for RStudio Server's `rserver` and `rsession`, built into the hpc-rstudio test
//! images in place of the real programs, which cannot be installed on the test machines.
//!
//! It reproduces the command-line contract the launcher depends on, release by release: the
//! options each release accepts, where it writes, how it fails and with which messages, the
//! sign-in flow and how rsession handles signals. It is never part of the shipped binary.

pub mod cookie;
pub mod http;
pub mod logging;
pub mod options;
pub mod release;
pub mod rsession;
pub mod server;
pub mod startup;
pub mod sys;
