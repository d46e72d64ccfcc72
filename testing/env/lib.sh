# Helpers sourced by the scripts in testing/env. Not meant to be run on its own.
# shellcheck shell=bash

# Wall-clock start of the sourcing script, in microseconds.
_log_start_us=${EPOCHREALTIME//[!0-9]/}
_log_last_us=$_log_start_us

# Print a message to stderr with the time since the script started and since the previous log line.
log() {
  local now_us=${EPOCHREALTIME//[!0-9]/}
  local total_ms=$(((now_us - _log_start_us) / 1000))
  local step_ms=$(((now_us - _log_last_us) / 1000))
  _log_last_us=$now_us
  printf '[%4d.%01ds +%3d.%01ds] %s\n' \
    $((total_ms / 1000)) $((total_ms % 1000 / 100)) \
    $((step_ms / 1000)) $((step_ms % 1000 / 100)) "$*" >&2
}

die() {
  log "ERROR: $*"
  exit 1
}

require_root() {
  [ "$(id -u)" = 0 ] || die "$(basename "$0") must run as root"
}

# Print the PID stored in PIDFILE if that process is alive and runs EXECUTABLE (an absolute
# path, resolved through symlinks such as Debian's /usr/sbin/slurmctld -> slurmctld-wlm), and
# return 1 otherwise. The check keeps a stale PID file, whose number the kernel may have
# reused, from pointing at an unrelated process.
pid_from_file() { # PIDFILE EXECUTABLE
  local pidfile=$1 executable pid exe
  executable=$(readlink -f "$2")
  [ -s "$pidfile" ] || return 1
  pid=$(tr -dc '0-9' <"$pidfile")
  [ -n "$pid" ] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  # A binary replaced by a package upgrade shows as "/usr/sbin/NAME (deleted)".
  [ "${exe% (deleted)}" = "$executable" ] || return 1
  echo "$pid"
}

# Return 0 if process PID exists and has not exited. An exited process stays a zombie
# until its parent reaps it, and an init process that reaps only every second or two
# would otherwise make every stop wait that long.
process_alive() { # PID
  local state
  state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# Stop the process recorded in PIDFILE with SIGTERM, and SIGKILL it if it is still alive after
# TIMEOUT seconds. Does nothing when the PID file is missing or names no live EXECUTABLE.
stop_by_pidfile() { # NAME PIDFILE EXECUTABLE [TIMEOUT]
  local name=$1 pidfile=$2 executable=$3 timeout=${4:-15} pid i
  if ! pid=$(pid_from_file "$pidfile" "$executable"); then
    log "$name: not running"
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do
    if ! process_alive "$pid"; then
      log "$name: stopped (PID $pid)"
      rm -f "$pidfile"
      return 0
    fi
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  log "$name: did not stop within ${timeout}s of SIGTERM, sent SIGKILL (PID $pid)"
  rm -f "$pidfile"
}

# Run COMMAND every 0.2 s until it succeeds. After TIMEOUT seconds, print the last lines of
# LOGFILE and exit with an error naming WHAT.
wait_until() { # TIMEOUT WHAT LOGFILE COMMAND...
  local timeout=$1 what=$2 logfile=$3 i
  shift 3
  for ((i = 0; i < timeout * 5; i++)); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  log "ERROR: $what not ready after ${timeout}s; last lines of $logfile:"
  tail -n 30 "$logfile" >&2 2>/dev/null || echo "($logfile is missing)" >&2
  exit 1
}
