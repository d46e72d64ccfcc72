#!/bin/bash
# Install Apptainer on Debian 12 (bookworm), which has no apptainer package. Run as root.
#
#   APPTAINER_DEB=/path/to/apptainer_VERSION~bookworm_amd64.deb bash install-apptainer.sh
#
# With APPTAINER_DEB naming an existing .deb that already runs on bookworm, that package is
# installed. If a SHA256SUMS file sits in the same directory, it must list the package with a
# matching sha256. Without APPTAINER_DEB, or when the file is missing, the script downloads
# Debian sid's apptainer package and adapts it to bookworm's glibc 2.36 (see adapt_package).
# A pinned package is preferred because sid moves: a later sid build may need more of glibc 2.38
# than the compatibility library below provides, and then this script stops with an error.
#
# APPTAINER_WORK sets the scratch directory, which is kept (default: a new /tmp directory,
# removed on exit).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
export DEBIAN_FRONTEND=noninteractive

# The C23 variants of the strto* family that glibc 2.38 added and that sid's build calls. The
# compatibility library maps each to the classic function, which differs only in rejecting the
# "0b" binary prefix that C23 allows for base 0 and 2.
C23_SYMBOLS=(__isoc23_strtol __isoc23_strtoul __isoc23_strtoll __isoc23_strtoull)
LIBDIR=/usr/lib/x86_64-linux-gnu/apptainer/lib
COMPAT_LIB=$LIBDIR/libisoc23compat.so

# Exit with an error unless the pinned package is listed in SHA256SUMS beside it with the same sha256.
verify_checksum() { # DEB
  local deb=$1 sums expected actual
  sums=$(dirname "$deb")/SHA256SUMS
  if [ ! -f "$sums" ]; then
    log "no SHA256SUMS beside $deb, installing it unverified"
    return 0
  fi
  # A line is "<sha256>  <name>" or "<sha256> *<name>" (binary mode).
  expected=$(awk -v name="$(basename "$deb")" '$2 == name || $2 == "*" name { print $1 }' "$sums")
  [ -n "$expected" ] || die "$sums does not list $(basename "$deb")"
  actual=$(sha256sum "$deb" | cut -d' ' -f1)
  [ "$actual" = "$expected" ] || die "sha256 mismatch for $deb: expected $expected, got $actual"
  log "sha256 of $(basename "$deb") matches $sums"
}

# Download sid's apptainer .deb into WORK with a private apt configuration, so the system's
# sources and package lists stay untouched. Prints the path of the .deb.
download_sid_package() { # WORK
  local work=$1 apt_dir=$1/apt
  mkdir -p "$apt_dir"/lists/partial "$apt_dir"/cache/archives/partial "$apt_dir"/sources.list.d \
    "$apt_dir"/preferences.d
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main" \
    >"$apt_dir/sources.list"
  local apt_options=(
    -o Dir::Etc::SourceList="$apt_dir/sources.list"
    -o Dir::Etc::SourceParts="$apt_dir/sources.list.d"
    -o Dir::Etc::PreferencesParts="$apt_dir/preferences.d"
    -o Dir::State::Lists="$apt_dir/lists"
    -o Dir::Cache="$apt_dir/cache"
    # The _apt sandbox user cannot write into a root-owned scratch directory.
    -o APT::Sandbox::User=root
  )
  apt-get "${apt_options[@]}" update -qq >&2
  (cd "$work" && apt-get "${apt_options[@]}" download apptainer >&2)
  ls "$work"/apptainer_*_amd64.deb
}

# List the dynamic symbols that FILE imports with a glibc version newer than 2.36, one
# "name@GLIBC_x.y" a line.
newer_glibc_imports() { # FILE
  readelf --dyn-syms --wide "$1" |
    awk '$7 == "UND" { print $8 }' |
    grep -E '@GLIBC_2\.(3[7-9]|[4-9][0-9])' |
    sed 's/ *(.*//' | sort -u || true
}

# Remove each version requirement of FILE named in VERSIONS (comma-separated) from its
# SHT_GNU_verneed section, by unlinking its Elf64_Vernaux entry from the list. The dynamic
# loader rejects a binary whose required version the library lacks, so this must follow
# clearing the versions of the symbols that used it. Marking the requirement weak instead
# would work too, but then glibc prints "weak version ... not found" on every start.
remove_version_requirements() { # FILE VERSIONS
  python3 - "$1" "$2" <<'PY'
import struct
import sys

path, versions_to_remove = sys.argv[1], set(sys.argv[2].split(","))
SHT_GNU_VERNEED = 0x6FFFFFFE
data = bytearray(open(path, "rb").read())
if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
    sys.exit(f"{path}: not a little-endian 64-bit ELF file")
(e_shoff,) = struct.unpack_from("<Q", data, 0x28)
e_shentsize, e_shnum = struct.unpack_from("<HH", data, 0x3A)
# Elf64_Shdr: name, type, flags, addr, offset, size, link, info, addralign, entsize
sections = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
removed = []
for section in sections:
    if section[1] != SHT_GNU_VERNEED:
        continue
    strtab = sections[section[6]][4]
    verneed = section[4]
    for _ in range(section[7]):  # sh_info is the number of Elf64_Verneed entries
        # Elf64_Verneed: vn_version, vn_cnt, vn_file, vn_aux, vn_next
        _version, count, _file, aux_offset, next_offset = struct.unpack_from("<HHIII", data, verneed)
        entries = []
        vernaux = verneed + aux_offset
        for _ in range(count):
            # Elf64_Vernaux: vna_hash, vna_flags, vna_other, vna_name, vna_next
            _hash, _flags, _other, name_offset, next_aux = struct.unpack_from("<IHHII", data, vernaux)
            name = data[strtab + name_offset : data.index(b"\0", strtab + name_offset)].decode()
            entries.append((vernaux, name))
            vernaux += next_aux
        kept_offsets = [offset for offset, name in entries if name not in versions_to_remove]
        if len(kept_offsets) < len(entries):
            if not kept_offsets or kept_offsets != sorted(kept_offsets):
                sys.exit(f"{path}: cannot unlink {versions_to_remove} from this Elf64_Verneed list")
            removed += [name for _, name in entries if name in versions_to_remove]
            struct.pack_into("<H", data, verneed + 2, len(kept_offsets))
            struct.pack_into("<I", data, verneed + 8, kept_offsets[0] - verneed)
            for current, following in zip(kept_offsets, kept_offsets[1:] + [None]):
                struct.pack_into("<I", data, current + 12, following - current if following else 0)
        verneed += next_offset
missing = versions_to_remove - set(removed)
if missing:
    sys.exit(f"{path}: no version requirement named {', '.join(sorted(missing))}")
open(path, "wb").write(data)
print(f"{path}: removed version requirements {', '.join(removed)}")
PY
}

is_elf() { # FILE
  [ -f "$1" ] && [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ]
}

# Print the ELF files under DIR, NUL-separated.
find_elf_files() { # DIR
  local file
  while IFS= read -r -d '' file; do
    if is_elf "$file"; then
      printf '%s\0' "$file"
    fi
  done < <(find "$1" -path "$1/DEBIAN" -prune -o -type f -print0)
}

# Unpack DEB into WORK/pkg and make its binaries load on glibc 2.36. Sets PACKAGE to the .deb
# to install: DEB itself when no binary imports a glibc 2.37+ symbol, else WORK/apptainer-bookworm.deb.
# For each ELF file that imports symbols versioned GLIBC_2.37 or later, all of which must be in
# C23_SYMBOLS, the function
#   1. clears the version of those imports, so any library that defines them satisfies them,
#   2. removes the newer version requirements, so the loader accepts glibc 2.36,
#   3. adds the compatibility library that defines them as a needed library (absolute path).
# The package's libc6 dependency is lowered to 2.36, and its version gets a suffix.
adapt_package() { # DEB WORK
  local deb=$1 work=$2 pkg=$2/pkg file name version symbol
  local to_patch=()
  rm -rf "$pkg"
  dpkg-deb -R "$deb" "$pkg"
  while IFS= read -r -d '' file; do
    [ -z "$(newer_glibc_imports "$file")" ] || to_patch+=("$file")
  done < <(find_elf_files "$pkg")
  if [ ${#to_patch[@]} = 0 ]; then
    log "no binary in $(basename "$deb") imports a glibc 2.37+ symbol"
    PACKAGE=$deb
    return 0
  fi
  log "adapting ${#to_patch[@]} binaries of $(basename "$deb") to glibc 2.36"
  apt-get install -y -qq --no-install-recommends patchelf gcc libc6-dev >/dev/null

  cat >"$work/isoc23compat.c" <<'C'
#include <stdlib.h>
long __isoc23_strtol(const char *s, char **end, int base) { return strtol(s, end, base); }
unsigned long __isoc23_strtoul(const char *s, char **end, int base) { return strtoul(s, end, base); }
long long __isoc23_strtoll(const char *s, char **end, int base) { return strtoll(s, end, base); }
unsigned long long __isoc23_strtoull(const char *s, char **end, int base) { return strtoull(s, end, base); }
C
  mkdir -p "$pkg$LIBDIR"
  gcc -shared -fPIC -O2 -o "$pkg$COMPAT_LIB" "$work/isoc23compat.c"

  for file in "${to_patch[@]}"; do
    local clear_args=() names=() versions=()
    while IFS= read -r symbol; do
      name=${symbol%@*}
      version=${symbol#*@}
      if [[ " ${C23_SYMBOLS[*]} " != *" $name "* ]]; then
        die "${file#"$pkg"} imports $symbol, which bookworm's glibc 2.36 lacks and the compatibility library does not define"
      fi
      clear_args+=(--clear-symbol-version "$name")
      names+=("$name")
      [[ " ${versions[*]} " == *" $version "* ]] || versions+=("$version")
    done < <(newer_glibc_imports "$file")
    patchelf "${clear_args[@]}" "$file"
    remove_version_requirements "$file" "$(
      IFS=,
      echo "${versions[*]}"
    )" >/dev/null
    patchelf --add-needed "$COMPAT_LIB" "$file"
    log "adapted ${file#"$pkg"}: unversioned ${names[*]}, removed requirement ${versions[*]}"
  done

  sed -i -E 's/libc6 \(>= 2\.(3[7-9]|[4-9][0-9])[^)]*\)/libc6 (>= 2.36)/' "$pkg/DEBIAN/control"
  # "~bookworm1" sorts below the sid version it came from. A package that already carries a
  # "~bookworm" suffix gets "+1", which sorts above the unadapted package.
  if grep -q '^Version: .*~bookworm' "$pkg/DEBIAN/control"; then
    sed -i -E 's/^Version: (.*)$/Version: \1+1/' "$pkg/DEBIAN/control"
  else
    sed -i -E 's/^Version: (.*)$/Version: \1~bookworm1/' "$pkg/DEBIAN/control"
  fi
  # dpkg --verify compares installed files against DEBIAN/md5sums.
  (cd "$pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | xargs -0 md5sum >DEBIAN/md5sums)
  PACKAGE=$work/apptainer-bookworm.deb
  # The package is installed right away, so skip the slow default xz compression.
  dpkg-deb --root-owner-group -Znone -b "$pkg" "$PACKAGE" >/dev/null
}

# Exit with an error if any ELF file of the installed package misses a library, a symbol
# version or a symbol. ldd -r resolves every symbol, as the loader would with LD_BIND_NOW.
check_installed_binaries() {
  local file report
  while IFS= read -r file; do
    is_elf "$file" || continue
    report=$(ldd -r "$file" 2>&1 | grep -E 'not found|undefined symbol' || true)
    [ -z "$report" ] || die "$file does not load on this system: $report"
  done < <(dpkg -L apptainer)
}

require_root
if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
  apt-get update -qq
fi
# readelf (binutils) and python3 inspect and patch the binaries.
apt-get install -y -qq --no-install-recommends binutils python3 >/dev/null
if [ -n "${APPTAINER_WORK:-}" ]; then
  work=$APPTAINER_WORK
  mkdir -p "$work"
else
  work=$(mktemp -d /tmp/apptainer-install.XXXXXX)
  trap 'rm -rf "$work"' EXIT
fi

if [ -n "${APPTAINER_DEB:-}" ] && [ -f "$APPTAINER_DEB" ]; then
  deb=$(realpath "$APPTAINER_DEB")
  verify_checksum "$deb"
  log "using pinned package $deb"
else
  if [ -n "${APPTAINER_DEB:-}" ]; then
    log "APPTAINER_DEB=$APPTAINER_DEB does not exist, adapting Debian sid's package instead"
  else
    log "APPTAINER_DEB is not set, adapting Debian sid's package"
  fi
  deb=$(download_sid_package "$work")
  log "downloaded $(basename "$deb")"
fi
# A pinned package is checked too: one built earlier may have left a binary unadapted.
adapt_package "$deb" "$work"

# --allow-downgrades lets this script switch between a pinned and an adapted sid build, and
# --reinstall replaces an installed package of the same version whose files may differ.
apt-get install -y -qq --no-install-recommends --allow-downgrades --reinstall "$PACKAGE" >/dev/null
check_installed_binaries
log "installed $(apptainer --version)"
