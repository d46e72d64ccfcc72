#!/usr/bin/env bash
# Builds the Apptainer test images that carry the RStudio Server stand-in
# (testing/rstudio-standin) in a Rocker-like layout, one per RStudio release the tests play,
# plus an OCI archive for testing `pull` without a registry.
#
# Usage (as root): testing/images/build-images.sh [OUT_DIR]
# OUT_DIR defaults to $HPCRS_IMAGES, then /opt/hpc-rstudio-ci/images.
#
# Each image is built from a plain root filesystem directory (`apptainer build OUT.sif DIR/`),
# which needs root but no --fakeroot. An image whose inputs (the stand-in binaries, this script,
# the files under rootfs/ and the image's settings) have not changed since its last build is
# left alone.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-${HPCRS_IMAGES:-/opt/hpc-rstudio-ci/images}}
target=x86_64-unknown-linux-gnu

die() {
    echo "build-images.sh: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || die "run as root: apptainer build from a directory needs it"
command -v apptainer >/dev/null || die "apptainer is not installed"
command -v python3 >/dev/null || die "python3 is needed to write the OCI archive"

# Debian's busybox-static gives the images /bin/sh and the usual tools in one static file.
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
    echo "Installing busybox-static"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static; }
fi
busybox=$(dpkg-query -L busybox-static | grep -m1 '/bin/busybox$')
[ -x "$busybox" ] || die "busybox-static did not provide /bin/busybox"

echo "Building the stand-in (static, $target)"
started=$SECONDS
(
    cd "$repo"
    # A separate target dir keeps these RUSTFLAGS from forcing a rebuild of the main crate.
    RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release \
        -p rstudio-standin --target "$target" --target-dir target/standin
)
bin_dir=$repo/target/standin/$target/release
echo "  done in $((SECONDS - started)) s"

install -d -m 0755 "$out" "$out/.stamps"
work=$(mktemp -d /var/tmp/hpcrs-images.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Writes the R stand-in, which prints the image's R version for `R --version` as real R does.
write_r_script() {
    local path=$1 r_version=$2
    cat >"$path" <<EOF
#!/bin/sh
# Stand-in for R $r_version in the hpc-rstudio test images: it handles \`R --version\` and
# \`R RHOME\` only, since the RStudio stand-in never runs R code.
case "\${1:-}" in
--version)
    echo "R version $r_version (rstudio-standin) -- \"Stand-in\""
    echo "Platform: x86_64-pc-linux-gnu"
    ;;
RHOME)
    echo /usr/local/lib/R
    ;;
*)
    echo "R (rstudio-standin): only --version and RHOME are available in this test image" >&2
    exit 2
    ;;
esac
EOF
    chmod 0755 "$path"
}

# Lays out a Rocker-like root filesystem in $1.
# Arguments: DIR RELEASE RSTUDIO_VERSION R_VERSION ON_PATH(yes|no) EXTRA(none|broken|r-too-new|verse|env-cleared)
make_rootfs() {
    local root=$1 release=$2 rstudio_version=$3 r_version=$4 on_path=$5 extra=$6
    rm -rf "$root"
    install -d -m 0755 "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,root,home,proc,sys,dev}
    install -d -m 0755 "$root"/{run,var/lib,var/log,usr/local/lib/R,.singularity.d/env}
    install -d -m 1777 "$root/tmp" "$root/var/tmp"
    install -m 0755 "$busybox" "$root/bin/busybox"
    chroot "$root" /bin/busybox --install -s
    # Ubuntu's /var/run is a link to /run, so binding a directory over /run moves both.
    ln -s /run "$root/var/run"

    # The .deb creates the rstudio-server system account (uid 999), which rserver's
    # server-user check looks up; Apptainer appends the calling user at run time.
    printf 'root:x:0:0:root:/root:/bin/sh\nrstudio-server:x:999:999::/home/rstudio-server:/bin/sh\n' \
        >"$root/etc/passwd"
    printf 'root:x:0:\nrstudio-server:x:999:\n' >"$root/etc/group"

    cp -a "$here/rootfs/." "$root/"
    install -d -m 0755 "$root/usr/lib/rstudio-server/bin" "$root/etc/rstudio-standin"
    install -m 0755 "$bin_dir/rserver" "$bin_dir/rsession" "$root/usr/lib/rstudio-server/bin/"
    if [ "$on_path" = yes ]; then
        ln -s /usr/lib/rstudio-server/bin/rserver "$root/usr/local/bin/rserver"
    fi
    write_r_script "$root/usr/local/bin/R" "$r_version"

    # Some releases shipped a key here that only root can read.
    install -d -m 0755 "$root/var/lib/rstudio-server"
    (umask 077 && head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' \
        >"$root/var/lib/rstudio-server/secure-cookie-key")
    chmod 0600 "$root/var/lib/rstudio-server/secure-cookie-key"

    echo "$release" >"$root/etc/rstudio-standin/release"
    case "$extra" in
    broken)
        # An option 2024.12 does not know, so rserver exits 1 at once.
        echo 'admin-enabled=1' >>"$root/etc/rstudio/rserver.conf"
        ;;
    r-too-new)
        touch "$root/etc/rstudio-standin/r-too-new"
        ;;
    env-cleared)
        # An image whose own environment script unsets PASSWORD, so the value the launcher
        # passes never reaches rserver or its PAM helper. Apptainer sources the scripts in
        # name order, and this one runs after the launcher's variables are set.
        printf '#!/bin/sh\nunset PASSWORD\n' >"$root/.singularity.d/env/99-zz-clear-password.sh"
        chmod 0755 "$root/.singularity.d/env/99-zz-clear-password.sh"
        ;;
    verse)
        # rocker/verse installs TinyTeX under /opt/TinyTeX, read-only inside a SIF.
        install -d -m 0755 "$root/opt/TinyTeX/bin/x86_64-linux" "$root/opt/TinyTeX/texmf-dist"
        printf '#!/bin/sh\necho "tlmgr: stand-in"\n' >"$root/opt/TinyTeX/bin/x86_64-linux/tlmgr"
        chmod 0755 "$root/opt/TinyTeX/bin/x86_64-linux/tlmgr"
        ;;
    esac

    # Written the way Apptainer converts a Docker image's ENV lines.
    cat >"$root/.singularity.d/env/90-environment.sh" <<EOF
#!/bin/sh
export PATH="\${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"
export R_VERSION="\${R_VERSION:-$r_version}"
export R_HOME="\${R_HOME:-/usr/local/lib/R}"
export RSTUDIO_VERSION="\${RSTUDIO_VERSION:-$rstudio_version}"
export LANG="\${LANG:-en_US.UTF-8}"
export TZ="\${TZ:-Etc/UTC}"
EOF
    chmod 0755 "$root/.singularity.d/env/90-environment.sh"
}

# Moves a finished file into place under its final name in one rename, so a container still
# running from the previous image keeps its open file and readers never see a partial one.
publish() {
    local from=$1 to=$2
    install -m 0644 "$from" "$to.partial"
    mv -f "$to.partial" "$to"
}

# Hashes everything an image is made from, plus its settings line.
inputs_hash() {
    {
        printf '%s\n' "$*"
        cat "$bin_dir/rserver" "$bin_dir/rsession" "$here/build-images.sh" \
            "$here/make-oci-archive.py" "$busybox"
        (cd "$here/rootfs" && find . -type f | LC_ALL=C sort | xargs cat)
    } | sha256sum | cut -d' ' -f1
}

# NAME RELEASE RSTUDIO_VERSION R_VERSION ON_PATH EXTRA
images=(
    "rstudio-1.3 1.3 1.3.1093 4.0.2 yes none"
    "rstudio-1.4 1.4 1.4.1717 4.1.0 no none"
    "rstudio-2022.07 2022.07 2022.07.2+576 4.2.1 yes none"
    "rstudio-2024.12 2024.12 2024.12.1+563 4.4.2 yes none"
    "rstudio-broken 2024.12 2024.12.1+563 4.4.2 yes broken"
    "rstudio-r-too-new 2024.12 2024.12.1+563 4.5.0 yes r-too-new"
    "rstudio-verse 2024.12 2024.12.1+563 4.4.2 yes verse"
    "rstudio-env-cleared 2024.12 2024.12.1+563 4.4.2 yes env-cleared"
)

for spec in "${images[@]}"; do
    read -r name release rstudio_version r_version on_path extra <<<"$spec"
    sif=$out/$name.sif
    stamp=$out/.stamps/$name.sif
    hash=$(inputs_hash "$spec")
    if [ -f "$sif" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then
        echo "$name.sif is up to date"
        continue
    fi
    echo "Building $name.sif (RStudio $rstudio_version, R $r_version)"
    started=$SECONDS
    make_rootfs "$work/$name" "$release" "$rstudio_version" "$r_version" "$on_path" "$extra"
    apptainer --quiet build --force "$work/$name.sif" "$work/$name/"
    publish "$work/$name.sif" "$sif"
    echo "$hash" >"$stamp"
    echo "  done in $((SECONDS - started)) s"
done

name=rstudio-2024.12.oci.tar
archive=$out/$name
spec="oci 2024.12 2024.12.1+563 4.4.2 yes none"
hash=$(inputs_hash "$spec")
if [ -f "$archive" ] && [ "$(cat "$out/.stamps/$name" 2>/dev/null)" = "$hash" ]; then
    echo "$name is up to date"
else
    echo "Building $name"
    started=$SECONDS
    read -r _ release rstudio_version r_version on_path extra <<<"$spec"
    make_rootfs "$work/oci" "$release" "$rstudio_version" "$r_version" "$on_path" "$extra"
    python3 "$here/make-oci-archive.py" "$work/oci" "$work/$name" "$release" \
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        "R_VERSION=$r_version" "R_HOME=/usr/local/lib/R" "RSTUDIO_VERSION=$rstudio_version" \
        "LANG=en_US.UTF-8" "TZ=Etc/UTC"
    # Prove Apptainer converts the archive and the result runs.
    apptainer --quiet pull --force "$work/pulled.sif" "oci-archive:$work/$name"
    apptainer --silent exec --cleanenv "$work/pulled.sif" \
        /usr/lib/rstudio-server/bin/rserver --help 2>/dev/null | grep -q -- '--www-socket' ||
        die "the image pulled from $name does not run rserver --help"
    publish "$work/$name" "$archive"
    echo "$hash" >"$out/.stamps/$name"
    echo "  done in $((SECONDS - started)) s"
fi

echo "Images in $out:"
ls -l "$out"
