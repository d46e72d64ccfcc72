#!/bin/bash
# Measures what hpc-rstudio costs: the start-up time of quick commands, and the supervisor's CPU
# time and memory while a session sits idle. Run as root on the test cluster that testing/ci.sh
# starts; results go to stdout, for BENCHMARKS.md.
#
#   sudo bash testing/bench/run-benchmarks.sh
set -euo pipefail
BASE=${BASE:-/opt/hpc-rstudio-ci}
user=${BENCH_USER:-hpctest2}
idle_seconds=${IDLE_SECONDS:-60}
bin=${BENCH_BIN:-$BASE/bin/hpc-rstudio}
image=$BASE/images/rstudio-2024.12.sif
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null

echo "## Start-up"
hyperfine --style basic --shell=none --warmup 5 --runs 100 \
    "$bin --version" "$bin list" "$bin script --image $image"

echo "## Idle supervisor ($idle_seconds s)"
out=$(mktemp)
runuser -u "$user" -- env -i HOME="/home/$user" USER="$user" PATH=/usr/local/bin:/usr/bin:/bin \
    "$bin" run --image "$image" >"$out" 2>&1 &
runuser_pid=$!
for _ in $(seq 600); do
    grep -q "Password:" "$out" && break
    sleep 0.1
done
supervisor=$(pgrep -P "$runuser_pid" | head -n 1)
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
before=$(ticks "$supervisor")
sleep "$idle_seconds"
after=$(ticks "$supervisor")
rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$supervisor/status")
threads=$(awk '/^Threads/ { print $2 }' "/proc/$supervisor/status")
echo "supervisor pid $supervisor: $(( (after - before) * 1000 / hz )) ms CPU in $idle_seconds s," \
    "VmRSS $rss KiB, $threads threads"
kill -TERM "$supervisor"
wait "$runuser_pid" || true
rm -f "$out"
