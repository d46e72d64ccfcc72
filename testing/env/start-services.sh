#!/bin/bash
# Start the services the integration tests run against, on one Debian 12 machine, as root:
#   - munged, MariaDB and slurmdbd (job accounting, so sacct works),
#   - slurmctld and slurmd for a single node named after `hostname -s`,
#     with partitions debug (default, no time limit) and short (30 minutes),
#   - sshd on 127.0.0.1:2222, key login only, with TCP and Unix socket forwarding,
# and set up the non-root test users hpctest1 and hpctest2, each of which can run
# `ssh cluster-login` to reach that sshd as itself.
#
#   BASE=/opt/hpc-rstudio-ci bash testing/env/start-services.sh
#
# Run install-deps.sh first. Daemons are started by hand, not through systemd or
# invoke-rc.d (Debian images often block service starts with policy-rc.d), and write
# PID files under $BASE/run and logs under $BASE/log. A daemon that is already running
# is left alone unless its configuration file changed, in which case it is restarted.
# stop-services.sh stops them. $BASE/env.sh lists the settings tests need, as KEY='value' lines.
#
# SLURM reads /etc/slurm/slurm.conf, so only one BASE can be in use at a time: stop the
# services before starting them with another BASE.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

BASE=${BASE:-/opt/hpc-rstudio-ci}
TEST_USERS=(hpctest1 hpctest2)
SSH_HOST_ALIAS=cluster-login
SSH_PORT=2222
CLUSTER=hpcrs
PARTITION=debug
SHORT_PARTITION=short
NODE=$(hostname -s)
RUN=$BASE/run
LOG=$BASE/log
SLURM_CONF=/etc/slurm/slurm.conf
SLURMDBD_CONF=/etc/slurm/slurmdbd.conf
MARIADB_SOCKET=$RUN/mysqld/mysqld.sock
# MariaDB listens on this port of 127.0.0.1 for slurmdbd. slurmdbd.conf has no setting for a
# Unix socket path, and the socket here is not at the client library's default path.
MARIADB_PORT=3306

require_root
case $BASE in
  /*) ;;
  *) die "BASE must be an absolute path, got '$BASE'" ;;
esac
# env.sh quotes values in single quotes, and paths with spaces break the daemons' config files.
[[ $BASE != *[\'[:space:]]* ]] || die "BASE must not contain quotes or whitespace: '$BASE'"
for command in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sacctmgr sshd ssh-keygen; do
  command -v "$command" >/dev/null || [ -x "/usr/sbin/$command" ] ||
    die "$command not found; run testing/env/install-deps.sh first"
done

# Write stdin to FILE with MODE. Returns 0 if the content changed and 1 if it was already the same.
write_config() { # FILE MODE
  local file=$1 mode=$2 tmp
  tmp=$(mktemp "$file.XXXXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [ -f "$file" ] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
    chmod "$mode" "$file"
    return 1
  fi
  mv -f "$tmp" "$file"
}

# Return 0 if the daemon recorded in PIDFILE is running. If it runs but CHANGED is 1, stop it
# first so that it restarts with its new configuration.
is_running() { # NAME PIDFILE EXECUTABLE CHANGED
  local name=$1 pidfile=$2 executable=$3 changed=$4 pid
  pid=$(pid_from_file "$pidfile" "$executable") || return 1
  if [ "$changed" = 1 ]; then
    log "$name: configuration changed, restarting"
    stop_by_pidfile "$name" "$pidfile" "$executable" 30
    return 1
  fi
  log "$name: already running (PID $pid)"
}

log "starting services under $BASE for node $NODE"
install -d -m 0755 "$BASE" "$RUN" "$LOG" "$BASE/images" "$BASE/bin" "$BASE/ssh"
install -d -m 0700 "$BASE/state" "$BASE/state/slurmctld"
# The job's user executes its batch script from the spool directory, so the directories above
# each job's own (0700, owned by the user) must be searchable by everyone.
install -d -m 0755 "$BASE/spool" "$BASE/spool/slurmd"

# squashfuse, run by apptainer for a non-root user, opens /dev/fuse. /dev is rebuilt on every
# boot, and some machines create it with mode 0600.
if [ -e /dev/fuse ]; then
  chmod 0666 /dev/fuse
else
  log "WARNING: /dev/fuse is missing, so non-root apptainer cannot mount SIF images"
fi

# slurmd finds its node entry by the short host name, and the SLURM clients resolve it.
if ! getent hosts "$NODE" >/dev/null; then
  echo "127.0.0.1 $NODE" >>/etc/hosts
  log "added $NODE to /etc/hosts"
fi

# ---- munged: authenticates every SLURM message ----
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key
  log "created /etc/munge/munge.key"
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
# The SLURM daemons and clients connect to munged's default socket in /run/munge.
install -d -o munge -g munge -m 0755 /run/munge "$RUN/munge"
install -d -o munge -g munge -m 0700 /var/lib/munge
touch "$LOG/munged.log"
chown munge:munge "$LOG/munged.log"
if ! is_running munged "$RUN/munge/munged.pid" /usr/sbin/munged 0; then
  runuser -u munge -- /usr/sbin/munged --pid-file="$RUN/munge/munged.pid" --log-file="$LOG/munged.log"
  wait_until 10 munged "$LOG/munged.log" bash -c 'munge -n | unmunge'
  log "munged: started"
fi

# ---- slurm.conf: read by slurmctld, slurmd, slurmdbd's clients and every SLURM command ----
slurm_conf_changed=0
write_config "$SLURM_CONF" 0644 <<EOF && slurm_conf_changed=1
# Written by testing/env/start-services.sh, which rewrites it on every start.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# No cgroups: this machine may not delegate them, and the tests need no resource isolation.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
# Memory is a consumable resource, so each job gets a memory limit that OverMemoryKill enforces.
SelectTypeParameters=CR_Core_Memory
DefMemPerNode=2048
SchedulerType=sched/backfill
# Without these, slurmctld batches job starts and a new job starts about 3 s late.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
# Keep finished jobs in squeue and scontrol for 5 minutes. After that they are gone, and
# "scontrol show job ID" fails with "Invalid job id specified".
MinJobAge=300
# Seconds between SIGTERM and SIGKILL when a job is cancelled or reaches its time limit.
KillWait=5
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
# Sample memory every second and kill a job that uses more than it asked for, so that tests can
# see a real OUT_OF_MEMORY job without cgroups.
JobAcctGatherParams=OverMemoryKill
JobAcctGatherFrequency=task=1
JobCompType=jobcomp/none
# This machine sends no mail, and the default /usr/bin/mail is usually missing.
MailProg=/bin/true
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
StateSaveLocation=$BASE/state/slurmctld
SlurmdSpoolDir=$BASE/spool/slurmd
# config_overrides makes slurmd trust the node line below over the hardware it detects, so the
# node offers 16 CPUs and 64 GiB even on a 2-core machine and several test jobs run at once.
SlurmdParameters=config_overrides
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=16 RealMemory=65536 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=$SHORT_PARTITION Nodes=$NODE MaxTime=00:30:00 State=UP
EOF

# ---- MariaDB: the database behind slurmdbd ----
install -d -o mysql -g mysql -m 0700 "$BASE/mysql"
install -d -o mysql -g mysql -m 0755 "$RUN/mysqld"
if [ ! -d "$BASE/mysql/mysql" ]; then
  log "mariadb: initializing $BASE/mysql"
  # --no-defaults keeps /etc/mysql out, so a system MariaDB's settings do not apply.
  mariadb-install-db --no-defaults --user=mysql --datadir="$BASE/mysql" \
    --auth-root-authentication-method=socket >"$LOG/mariadb-install.log" 2>&1 ||
    {
      tail -n 30 "$LOG/mariadb-install.log" >&2
      die "mariadb-install-db failed"
    }
fi
if ! is_running mariadbd "$RUN/mysqld/mariadbd.pid" /usr/sbin/mariadbd 0; then
  # mariadbd does not detach itself, so setsid runs it in its own session, away from this
  # script's terminal and process group. It writes its own PID file. slurmdbd logs
  # "Database settings not recommended values: innodb_buffer_pool_size" because it expects a
  # pool sized for a production cluster, but the default 128 MiB is plenty for test jobs.
  setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$BASE/mysql" \
    --socket="$MARIADB_SOCKET" --pid-file="$RUN/mysqld/mariadbd.pid" \
    --bind-address=127.0.0.1 --port="$MARIADB_PORT" --skip-name-resolve \
    --innodb-lock-wait-timeout=900 \
    --log-error="$LOG/mariadb.log" </dev/null >>"$LOG/mariadb.log" 2>&1 &
  wait_until 30 mariadbd "$LOG/mariadb.log" mariadb --socket="$MARIADB_SOCKET" -e 'SELECT 1'
  log "mariadbd: started"
fi
password_file=$BASE/state/slurmdbd-db-password
if [ ! -s "$password_file" ]; then
  (umask 077 && head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$password_file")
fi
db_password=$(cat "$password_file")
mariadb --socket="$MARIADB_SOCKET" <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$db_password';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$db_password';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF

# ---- slurmdbd: job accounting, which sacct reads ----
slurmdbd_conf_changed=0
# slurmdbd refuses a configuration file that others can read, because it contains the password.
write_config "$SLURMDBD_CONF" 0600 <<EOF && slurmdbd_conf_changed=1
# Written by testing/env/start-services.sh, which rewrites it on every start.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MARIADB_PORT
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$db_password
EOF
if ! is_running slurmdbd "$RUN/slurmdbd.pid" /usr/sbin/slurmdbd "$slurmdbd_conf_changed"; then
  /usr/sbin/slurmdbd
  wait_until 30 slurmdbd "$LOG/slurmdbd.log" sacctmgr --noheader list cluster
  log "slurmdbd: started"
fi
# slurmctld registers with slurmdbd under ClusterName, which must exist there first.
if ! sacctmgr --noheader --parsable2 list cluster format=cluster | grep -qx "$CLUSTER"; then
  sacctmgr --immediate add cluster "$CLUSTER" >/dev/null
  log "slurmdbd: added cluster $CLUSTER"
fi

# ---- slurmctld and slurmd ----
slurmctld_is_up() {
  scontrol ping | grep -q 'is UP'
}
# A node that is idle or runs jobs accepts new ones. A node state with a flag such as
# "idle*" (not responding) or "drain" is not ready.
node_is_ready() {
  local state
  state=$(sinfo --noheader --Node --nodes="$NODE" --format=%t | head -n 1)
  case $state in
    idle | mix | alloc | comp) return 0 ;;
    *) return 1 ;;
  esac
}
if ! is_running slurmctld "$RUN/slurmctld.pid" /usr/sbin/slurmctld "$slurm_conf_changed"; then
  /usr/sbin/slurmctld
  wait_until 30 slurmctld "$LOG/slurmctld.log" slurmctld_is_up
  log "slurmctld: started"
fi
# Return 0 once a slurmd that started at or after EPOCH has registered with slurmctld. Until
# then the node may still show the state saved from before, and a job sent to it would fail.
slurmd_registered_since() { # EPOCH
  local start_time
  start_time=$(scontrol show node "$NODE" | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2)
  [ -n "$start_time" ] && [ "$(date -d "$start_time" +%s 2>/dev/null || echo 0)" -ge "$1" ]
}
if ! is_running slurmd "$RUN/slurmd.pid" /usr/sbin/slurmd "$slurm_conf_changed"; then
  slurmd_started_at=$(date +%s)
  /usr/sbin/slurmd
  wait_until 30 slurmd "$LOG/slurmd.log" slurmd_registered_since "$slurmd_started_at"
  log "slurmd: started"
fi
# A node drained in an earlier run, for example after a job's processes could not be killed,
# stays drained across restarts. Resume it, because this node is the only one.
if sinfo --noheader --Node --nodes="$NODE" --format=%t | grep -qE '^(drain|drng|drained)'; then
  log "node $NODE is drained ($(sinfo --noheader --Node --nodes="$NODE" --format=%E | head -n 1)), resuming it"
  scontrol update NodeName="$NODE" State=RESUME
fi
wait_until 30 "node $NODE" "$LOG/slurmd.log" node_is_ready
log "node $NODE: $(sinfo --noheader --Node --nodes="$NODE" --format=%t | head -n 1)"

# ---- sshd on 127.0.0.1:$SSH_PORT ----
host_key=$BASE/ssh/ssh_host_ed25519_key
if [ ! -f "$host_key" ]; then
  ssh-keygen -q -t ed25519 -N '' -C "hpc-rstudio-ci host key" -f "$host_key"
fi
sshd_conf_changed=0
write_config "$BASE/ssh/sshd_config" 0644 <<EOF && sshd_conf_changed=1
# Written by testing/env/start-services.sh, which rewrites it on every start.
ListenAddress 127.0.0.1
Port $SSH_PORT
HostKey $host_key
PidFile $RUN/sshd.pid
AllowUsers ${TEST_USERS[*]}
PermitRootLogin no
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
# useradd leaves the password locked ("!" in /etc/shadow). Without PAM, sshd rejects such an
# account even for key login ("account is locked"). With PAM, the account checks pass.
UsePAM yes
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
X11Forwarding no
PrintMotd no
# Tests may open many connections at once, and the default (10:30:100) starts dropping them
# after 10 unauthenticated ones.
MaxStartups 100:30:200
LogLevel VERBOSE
Subsystem sftp internal-sftp
EOF
install -d -m 0755 /run/sshd
if ! is_running sshd "$RUN/sshd.pid" /usr/sbin/sshd "$sshd_conf_changed"; then
  /usr/sbin/sshd -t -f "$BASE/ssh/sshd_config"
  /usr/sbin/sshd -f "$BASE/ssh/sshd_config" -E "$LOG/sshd.log"
  log "sshd: started on 127.0.0.1:$SSH_PORT"
fi

# ---- test users ----
# Give USER a home, a key pair and an ssh configuration in which "ssh cluster-login" logs in to
# this sshd as USER. The script owns ~/.ssh/config, ~/.ssh/known_hosts and
# ~/.ssh/authorized_keys of these users and rewrites them on every start.
setup_test_user() { # USER
  local user=$1 home=/home/$1
  if ! id "$user" >/dev/null 2>&1; then
    useradd --create-home --home-dir "$home" --shell /bin/bash "$user"
    log "created user $user"
  fi
  [ "$(getent passwd "$user" | cut -d: -f6)" = "$home" ] || usermod --home "$home" "$user"
  [ "$(getent passwd "$user" | cut -d: -f7)" = /bin/bash ] || usermod --shell /bin/bash "$user"
  # sshd's StrictModes rejects keys under a home that others can write, and 0700 is also what
  # many clusters use.
  install -d -o "$user" -g "$user" -m 0700 "$home" "$home/.ssh"
  if [ ! -f "$home/.ssh/id_ed25519" ]; then
    runuser -u "$user" -- ssh-keygen -q -t ed25519 -N '' -C "$user@hpc-rstudio-ci" -f "$home/.ssh/id_ed25519"
  fi
  # ssh refuses a private key that group or others can read.
  chown "$user:$user" "$home/.ssh/id_ed25519" "$home/.ssh/id_ed25519.pub"
  chmod 0600 "$home/.ssh/id_ed25519"
  write_config "$home/.ssh/authorized_keys" 0600 <"$home/.ssh/id_ed25519.pub" || true
  # With HostName 127.0.0.1 and a port other than 22, ssh looks the host key up as "[127.0.0.1]:PORT".
  echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$host_key.pub")" |
    write_config "$home/.ssh/known_hosts" 0644 || true
  write_config "$home/.ssh/config" 0600 <<EOF || true
# Written by testing/env/start-services.sh, which rewrites it on every start.
Host $SSH_HOST_ALIAS
  HostName 127.0.0.1
  Port $SSH_PORT
  IdentityFile ~/.ssh/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile ~/.ssh/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
EOF
  chown "$user:$user" "$home/.ssh/authorized_keys" "$home/.ssh/known_hosts" "$home/.ssh/config"
}

ssh_login_works() { # USER
  [ "$(runuser -u "$1" -- timeout 20 ssh -o ConnectTimeout=5 "$SSH_HOST_ALIAS" id -un)" = "$1" ]
}

for user in "${TEST_USERS[@]}"; do
  setup_test_user "$user"
  wait_until 20 "ssh login as $user" "$LOG/sshd.log" ssh_login_works "$user"
  log "ssh $SSH_HOST_ALIAS works for $user"
done

# ---- env.sh: settings for the tests ----
# One KEY='value' line each, so a shell can source the file and a test can parse it.
write_config "$BASE/env.sh" 0644 <<EOF || true
HPCRS_CI_BASE='$BASE'
HPCRS_TEST_USERS='${TEST_USERS[*]}'
HPCRS_NODE='$NODE'
HPCRS_PARTITION='$PARTITION'
HPCRS_SHORT_PARTITION='$SHORT_PARTITION'
HPCRS_SSH_HOST='$SSH_HOST_ALIAS'
HPCRS_SSH_PORT='$SSH_PORT'
HPCRS_IMAGES='$BASE/images'
HPCRS_BIN_DIR='$BASE/bin'
EOF
log "services ready; settings in $BASE/env.sh"
