//! Cluster tests: hpc-rstudio against a real single-node SLURM, real Apptainer and a real
//! OpenSSH server, run as non-root test users. The RStudio programs in the test images are a
//! stand-in (testing/rstudio-standin); everything else is real. `testing/ci.sh` sets the
//! machine up and runs these with `--include-ignored`.

mod harness;

mod batch;
mod connect;
mod field;
mod images;
mod inputs;
mod local;
