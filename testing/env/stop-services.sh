#!/bin/bash
# Stop the daemons that start-services.sh started, in reverse order, by their PID files under
# $BASE/run only: a process that some other setup started is never touched. Each daemon gets
# SIGTERM and, if it is still alive after a bound, SIGKILL. Run as root.
#
#   BASE=/opt/hpc-rstudio-ci bash testing/env/stop-services.sh
#
# Jobs that are still running keep running, because slurmd's job step daemons (slurmstepd)
# outlive slurmd. A later start-services.sh reconnects slurmd to them. Cancel jobs with
# scancel before stopping if they must end.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

BASE=${BASE:-/opt/hpc-rstudio-ci}
RUN=$BASE/run
require_root

log "stopping services under $BASE"
stop_by_pidfile sshd "$RUN/sshd.pid" /usr/sbin/sshd
stop_by_pidfile slurmd "$RUN/slurmd.pid" /usr/sbin/slurmd
stop_by_pidfile slurmctld "$RUN/slurmctld.pid" /usr/sbin/slurmctld 30
stop_by_pidfile slurmdbd "$RUN/slurmdbd.pid" /usr/sbin/slurmdbd 30
# MariaDB flushes its buffers on SIGTERM, which can take a while on a slow disk.
stop_by_pidfile mariadbd "$RUN/mysqld/mariadbd.pid" /usr/sbin/mariadbd 60
stop_by_pidfile munged "$RUN/munge/munged.pid" /usr/sbin/munged

steps=$(pgrep -c -x slurmstepd || true)
if [ "${steps:-0}" -gt 0 ]; then
  log "$steps slurmstepd processes are still running their jobs"
fi
log "stopped"
