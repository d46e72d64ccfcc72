#!/bin/bash
# Check that the services from start-services.sh work the way the integration tests use them:
# SLURM jobs, accounting, signals to batch scripts, ssh logins and tunnels, and Apptainer, as
# the non-root test users. Run as root. Prints one PASS or FAIL line per check, then
# "N passed, N failed", and exits 1 if any check failed. Takes 10 to 40 s on a 2-core VM,
# depending on when slurmctld's 30 s check sends the USR2 warning to the --signal job.
#
#   BASE=/opt/hpc-rstudio-ci bash testing/env/smoke-test.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

BASE=${BASE:-/opt/hpc-rstudio-ci}
require_root
[ -f "$BASE/env.sh" ] || die "$BASE/env.sh not found; run testing/env/start-services.sh first"
# shellcheck disable=SC1091
. "$BASE/env.sh"
read -r -a test_users <<<"$HPCRS_TEST_USERS"
user=${test_users[0]}

passed=0
failed=0
finished=0
job_ids=()
background_pids=()
work=$(mktemp -d /tmp/hpcrs-smoke.XXXXXX)
chown "$user:$user" "$work"
chmod 0700 "$work"

# On an unexpected error, count it as a failure so the summary line still appears.
cleanup() {
  local status=$? pid
  if [ "$finished" = 0 ]; then
    echo "FAIL smoke test stopped early with exit status $status"
    echo "$passed passed, $((failed + 1)) failed"
  fi
  # A process that already exited, or a job that already ended, is not an error here.
  for pid in "${background_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  if [ ${#job_ids[@]} -gt 0 ]; then
    scancel "${job_ids[@]}" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

pass() {
  echo "PASS $1"
  passed=$((passed + 1))
}

fail() {
  echo "FAIL $1"
  failed=$((failed + 1))
}

# Record a PASS for NAME if COMMAND succeeds, else a FAIL with the command's output.
check() { # NAME COMMAND...
  local name=$1 output
  shift
  if output=$("$@" 2>&1); then
    pass "$name"
  else
    fail "$name"
    if [ -n "$output" ]; then
      printf '%s\n' "$output" | tail -n 20 | sed 's/^/    /'
    fi
  fi
}

# Run COMMAND every 0.2 s until it succeeds, for at most TIMEOUT seconds. Returns 1 on timeout.
poll() { # TIMEOUT COMMAND...
  local timeout=$1 i
  shift
  for ((i = 0; i < timeout * 5; i++)); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

as_user() {
  (cd "$work" && runuser -u "$user" -- "$@")
}

# Submit a batch job as the test user and print its id, or "none" if sbatch failed, so that
# the checks on that job fail. The job runs in the work directory.
submit() { # SBATCH_ARGS...
  local job_id
  if job_id=$(as_user sbatch --parsable --chdir="$work" --output="$work/slurm-%j.out" "$@"); then
    job_ids+=("${job_id%%;*}")
    echo "${job_id%%;*}"
  else
    echo none
  fi
}

squeue_state() { # JOB_ID
  squeue --noheader --jobs="$1" --format=%T 2>/dev/null
}

job_is_running() { # JOB_ID
  [ "$(squeue_state "$1")" = RUNNING ]
}

# sacct's state of the job allocation, without its steps: COMPLETED, CANCELLED, FAILED, ...
sacct_state() { # JOB_ID
  as_user sacct --noheader --allocations --jobs="$1" --format=State%30 | awk '{ print $1 }'
}

sacct_state_is() { # JOB_ID STATE
  [ "$(sacct_state "$1")" = "$2" ]
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Start COMMAND as the test user in the background, recording its PID for cleanup. setpriv
# replaces itself with COMMAND, so the recorded PID is COMMAND's own.
start_as_user() { # COMMAND...
  (cd "$work" && exec setpriv --reuid="$user" --regid="$user" --init-groups --reset-env "$@") \
    >>"$work/background.log" 2>&1 &
  background_pids+=($!)
}

# ---- cluster shape ----
check "partition $HPCRS_PARTITION is the default" \
  bash -c "sinfo --noheader --format=%P | grep -qx '$HPCRS_PARTITION\*'"
check "partition $HPCRS_SHORT_PARTITION has a 30 minute limit" \
  bash -c "[ \"\$(sinfo --noheader --partition='$HPCRS_SHORT_PARTITION' --format=%l)\" = 30:00 ]"
check "node $HPCRS_NODE accepts jobs" \
  bash -c "sinfo --noheader --Node --nodes='$HPCRS_NODE' --format=%t | grep -qxE 'idle|mix|alloc'"

# ---- signals to the batch script ----
# The trap writes how many seconds after the start USR2 arrived. "sleep & wait" keeps bash in the
# wait builtin, which returns as soon as a signal arrives, so the trap runs at once.
cat >"$work/trap-usr2.sh" <<'EOF'
#!/bin/bash
trap 'echo "USR2 after ${SECONDS}s" > "usr2-$SLURM_JOB_ID.txt"; exit 0' USR2
sleep 300 &
wait
EOF
chmod 0755 "$work/trap-usr2.sh"
# slurmctld sends --signal warnings from its periodic check, every 30 s, so with a warning time
# equal to the time limit the signal arrives within about 30 s of the start. This job is
# submitted first and checked last, so the other checks run while it waits.
signal_job=$(submit --time=00:01:00 --signal=B:USR2@60 "$work/trap-usr2.sh")
signal_job_submitted=$SECONDS

# ---- sbatch, squeue, sacct ----
hello_job=$(submit --wrap 'id -un > hello.txt; sleep 2')
check "sbatch job reaches RUNNING in squeue" poll 15 job_is_running "$hello_job"
check "job runs as $user" poll 15 grep -qx "$user" "$work/hello.txt"
check "sacct shows COMPLETED" poll 20 sacct_state_is "$hello_job" COMPLETED

short_job=$(submit --partition="$HPCRS_SHORT_PARTITION" --time=00:05:00 --wrap true)
check "job in partition $HPCRS_SHORT_PARTITION completes" poll 20 sacct_state_is "$short_job" COMPLETED

sleep_job=$(submit --wrap 'sleep 300')
poll 15 job_is_running "$sleep_job" || true
as_user scancel "$sleep_job" || true
check "scancel ends a running job (CANCELLED)" poll 20 sacct_state_is "$sleep_job" CANCELLED

usr2_job=$(submit "$work/trap-usr2.sh")
poll 15 job_is_running "$usr2_job" || true
# The first line of the script installs the trap, so give bash a moment to reach it.
sleep 1
as_user scancel --batch --signal=USR2 "$usr2_job" || true
check "scancel --batch --signal=USR2 reaches the trap" poll 10 test -s "$work/usr2-$usr2_job.txt"

# ---- ssh ----
for login_user in "${test_users[@]}"; do
  check "ssh $HPCRS_SSH_HOST as $login_user" \
    bash -c "[ \"\$(runuser -u '$login_user' -- timeout 20 ssh '$HPCRS_SSH_HOST' id -un)\" = '$login_user' ]"
done

# A web server on the "compute node" (here the same machine), reached through ssh -L, the way
# users reach RStudio Server: once on a TCP port and once on a Unix socket.
echo tunnel-ok >"$work/index.html"
server_port=$(free_port)
start_as_user python3 -m http.server "$server_port" --bind 127.0.0.1 --directory "$work"
cat >"$work/unix_http.py" <<'EOF'
import http.server
import os
import socketserver
import sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"unix-ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self):
        return "unix"

class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

server = Server(sys.argv[1], Handler)
os.chmod(sys.argv[1], 0o600)
server.serve_forever()
EOF
start_as_user python3 "$work/unix_http.py" "$work/http.sock"
poll 10 curl -sf "http://127.0.0.1:$server_port/" || true
poll 10 test -S "$work/http.sock" || true
tcp_local_port=$(free_port)
unix_local_port=$(free_port)
start_as_user ssh -N -o ExitOnForwardFailure=yes \
  -L "127.0.0.1:$tcp_local_port:127.0.0.1:$server_port" \
  -L "127.0.0.1:$unix_local_port:$work/http.sock" "$HPCRS_SSH_HOST"
check "ssh -L to a TCP port" \
  poll 15 bash -c "curl -sf http://127.0.0.1:$tcp_local_port/ | grep -qx tunnel-ok"
check "ssh -L to a Unix socket" \
  poll 15 bash -c "curl -sf http://127.0.0.1:$unix_local_port/ | grep -qx unix-ok"

# ---- Apptainer ----
# A SIF with only busybox, built from a directory: no registry or network needed.
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev,home}
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh id cat echo; do
  ln -s busybox "$rootfs/bin/$applet"
done
# Apptainer adds the calling user to these files when the image has them.
touch "$rootfs/etc/passwd" "$rootfs/etc/group"
echo image-ok >"$rootfs/etc/smoke-test"
if apptainer build --force "$work/busybox.sif" "$rootfs" >"$work/apptainer-build.log" 2>&1; then
  pass "apptainer build from a directory (root)"
  chmod 0644 "$work/busybox.sif"
  check "apptainer exec as $user" \
    bash -c "[ \"\$(cd '$work' && runuser -u '$user' -- apptainer exec '$work/busybox.sif' id -un)\" = '$user' ]"
  apptainer_job=$(submit --wrap "apptainer exec '$work/busybox.sif' cat /etc/smoke-test > apptainer-job.txt")
  check "apptainer exec in a SLURM job" poll 30 grep -qx image-ok "$work/apptainer-job.txt"
  poll 10 sacct_state_is "$apptainer_job" COMPLETED || true
else
  fail "apptainer build from a directory (root)"
  sed 's/^/    /' "$work/apptainer-build.log" | tail -n 20
fi

# ---- the --signal=B:USR2@60 job submitted at the start ----
remaining=$((50 - (SECONDS - signal_job_submitted)))
check "--signal=B:USR2@60 reaches the batch script" poll $((remaining > 1 ? remaining : 1)) test -s "$work/usr2-$signal_job.txt"
if [ -s "$work/usr2-$signal_job.txt" ]; then
  echo "    $(cat "$work/usr2-$signal_job.txt")"
fi
check "sacct shows COMPLETED after the trap exits 0" poll 15 sacct_state_is "$signal_job" COMPLETED

finished=1
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
