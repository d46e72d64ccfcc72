#!/bin/bash
# Sets up the test cluster on this machine and runs the whole test suite: SLURM (with slurmdbd
# and MariaDB), munge, OpenSSH on 127.0.0.1:2222 and Apptainer, two non-root test users, the
# test images with the RStudio stand-in, then every unit and cluster test.
#
# Run as root on Debian 12:   sudo bash testing/ci.sh
#
# APPTAINER_DEB may name a pinned Apptainer package to install (see testing/env/install-apptainer.sh).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export BASE=${BASE:-/opt/hpc-rstudio-ci}
started=$(date +%s)
step() { echo "==> [$(( $(date +%s) - started )) s] $*"; }

step "installing packages and Apptainer"
bash testing/env/install-deps.sh
step "starting SLURM, munge, slurmdbd and sshd"
bash testing/env/start-services.sh
step "building the test images"
bash testing/images/build-images.sh "$BASE/images"

step "building hpc-rstudio"
cargo build --locked
# The test users run the binary from a directory they can read; a checkout under /root is not.
install -m 0755 target/debug/hpc-rstudio "$BASE/bin/hpc-rstudio"

step "running the tests"
log=$(mktemp)
status=0
HPCRS_CI_ENV="$BASE/env.sh" cargo test --locked --workspace --all-targets -- --include-ignored 2>&1 \
    | tee "$log" || status=$?
step "done"
# cargo prints one "test result:" line per test binary, and some binaries hold no tests; one
# total line says what the whole run did.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i - 1); if ($(i) ~ /^failed/) f += $(i - 1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
