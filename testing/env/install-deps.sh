#!/bin/bash
# Install what the integration tests need on a Debian 12 machine: SLURM with accounting
# (slurmdbd + MariaDB, so sacct works), munge, OpenSSH, Apptainer and the FUSE tools that
# let a non-root user mount a SIF image. Run as root. Safe to run again.
#
#   APPTAINER_DEB=/path/to/apptainer.deb bash testing/env/install-deps.sh
#
# APPTAINER_DEB is passed on to install-apptainer.sh, which runs only when apptainer is missing.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
export DEBIAN_FRONTEND=noninteractive
require_root

PACKAGES=(
  slurm-wlm slurmdbd munge mariadb-server
  openssh-server openssh-client
  # Apptainer mounts SIF images with squashfuse when it runs without root.
  squashfs-tools squashfuse fuse3 uidmap
  # busybox-static fills small test images, and skopeo copies OCI images into a local layout.
  busybox-static skopeo
  curl python3 shellcheck procps iproute2
  # sshfs gives the tests a real network file system (fuse.sshfs) to put a home directory on.
  sshfs
)

log "apt-get update"
apt-get update -qq
log "installing ${#PACKAGES[@]} packages"
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
log "packages installed"

if command -v apptainer >/dev/null; then
  log "$(apptainer --version) already installed"
else
  bash "$HERE/install-apptainer.sh"
fi

# Root lacks CAP_SYS_RESOURCE in some VMs and containers, and apptainer run as root then fails
# with "Requesting capability set ... while permitted capability set is ...". With "file",
# root keeps only the capabilities listed for it in /etc/apptainer/capability.json.
conf=/etc/apptainer/apptainer.conf
[ -f "$conf" ] || die "$conf is missing; reinstall apptainer"
if grep -q '^root default capabilities = file$' "$conf"; then
  log "$conf already sets root default capabilities = file"
elif grep -q '^root default capabilities = ' "$conf"; then
  sed -i 's/^root default capabilities = .*/root default capabilities = file/' "$conf"
  log "set root default capabilities = file in $conf"
else
  echo 'root default capabilities = file' >>"$conf"
  log "added root default capabilities = file to $conf"
fi

# "apptainer build --fakeroot", which a definition file with a %post section needs when root
# builds it, maps root to a subordinate ID range. useradd gives regular users one, but not root.
for id_file in /etc/subuid /etc/subgid; do
  if ! grep -q '^root:' "$id_file"; then
    echo 'root:300000:65536' >>"$id_file"
    log "added root:300000:65536 to $id_file"
  fi
done

# squashfuse run by a non-root user opens /dev/fuse, which some machines create with mode 0600.
# start-services.sh repeats this because /dev is rebuilt on boot.
if [ -e /dev/fuse ]; then
  chmod 0666 /dev/fuse
else
  log "WARNING: /dev/fuse is missing, so non-root apptainer cannot mount SIF images"
fi
log "done"
