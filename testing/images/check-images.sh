#!/usr/bin/env bash
# Checks the stand-in test images for real: each runs under Apptainer as an unprivileged user,
# signs in over HTTP on 127.0.0.1, suspends and stops its session, and fails where RStudio
# Server fails, with RStudio's messages.
#
# Usage (as root): testing/images/check-images.sh [IMAGES_DIR]
# IMAGES_DIR defaults to $HPCRS_IMAGES, then /opt/hpc-rstudio-ci/images (see build-images.sh).
# The checks run as $HPCRS_PROBE_USER (default standin-probe), an account created here when
# missing and used for nothing else. Prints "N passed, N failed"; exits 1 when any failed.
set -uo pipefail

images=${1:-${HPCRS_IMAGES:-/opt/hpc-rstudio-ci/images}}
probe=${HPCRS_PROBE_USER:-standin-probe}
bin=/usr/lib/rstudio-server/bin

[ "$(id -u)" = 0 ] || { echo "check-images.sh: run as root" >&2; exit 2; }
for tool in apptainer curl python3 runuser pgrep; do
    command -v "$tool" >/dev/null || { echo "check-images.sh: $tool is missing" >&2; exit 2; }
done
if ! id "$probe" >/dev/null 2>&1; then
    useradd --create-home --user-group --shell /bin/sh "$probe" || exit 2
fi
home=$(getent passwd "$probe" | cut -d: -f6)
probe_uid=$(id -u "$probe")
state=$home/.local/share/rstudio
work=$(mktemp -d /tmp/standin-check.XXXXXX)
chmod 0755 "$work"
started_pids=()

cleanup() {
    for pid in "${started_pids[@]}"; do
        kill "$pid" 2>/dev/null
    done
    # The probe account runs only these checks, so any rserver or rsession it still has was
    # started here (a check that failed half-way leaves them behind).
    for pid in $(pgrep -u "$probe" -x rserver) $(pgrep -u "$probe" -x rsession); do
        kill -TERM "$pid" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
check() { # check NAME COMMAND...: runs the command, counts and reports the result
    local name=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name"
        return 1
    fi
}
contains() { grep -qF -- "$2" "$1" || { echo "     '$2' not in $1:"; sed 's/^/     | /' "$1" | head -20; false; }; }
lacks() { ! grep -qF -- "$2" "$1" || { echo "     '$2' unexpectedly in $1"; false; }; }
equals() { [ "$1" = "$2" ] || { echo "     expected '$2', got '$1'"; false; }; }
record_has() { # record_has FILE TEXT...: the file exists and contains every TEXT
    local file=$1
    shift
    for text in "$@"; do contains "$file" "$text" || return 1; done
}
new_pid() { [ -n "$1" ] && [ "$1" != "$2" ] || { echo "     expected a pid other than '$2', got '$1'"; false; }; }

as_probe() { # runs a command as the probe user with a minimal environment plus NAME=VALUE args
    local env=()
    while [ $# -gt 0 ] && [[ $1 == *=* ]]; do env+=("$1"); shift; done
    (cd "$home" && runuser -u "$probe" -- env -i HOME="$home" USER="$probe" LOGNAME="$probe" \
        PATH=/usr/local/bin:/usr/bin:/bin APPTAINER_CACHEDIR="$work/cache" "${env[@]}" "$@")
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Makes a case directory with private run, tmp and var-lib directories, a database.conf and a
# logging.conf that logs to stderr, all owned by the probe user. Sets $d.
new_case() {
    d=$work/$1
    mkdir -p "$d/run" "$d/tmp" "$d/var-lib"
    printf 'provider=sqlite\ndirectory=/var/lib/rstudio-server\n' >"$d/database.conf"
    printf '[*]\nlog-level=warn\nlogger-type=stderr\n' >"$d/logging.conf"
    chown -R "$probe:" "$d"
}
private_binds() {
    echo "$d/run:/run,$d/tmp:/tmp,$d/var-lib:/var/lib/rstudio-server,$d/database.conf:/etc/rstudio/database.conf,$d/logging.conf:/etc/rstudio/logging.conf"
}

# rserver_fg IMAGE BINDS [NAME=VALUE...] -- ARGS...: runs rserver to completion (at most 20 s)
# with output in $d/out; sets $rc.
rserver_fg() {
    local image=$1 binds=$2
    shift 2
    local env=()
    while [ "$1" != -- ]; do env+=("$1"); shift; done
    shift
    as_probe "${env[@]}" timeout 20 apptainer --silent exec --cleanenv ${binds:+--bind "$binds"} \
        "$images/$image" "$bin/rserver" "$@" >"$d/out" 2>&1
    rc=$?
}

# rserver_bg IMAGE BINDS MARKER [NAME=VALUE...] -- ARGS...: starts rserver in the background
# and waits until MARKER (its port number, or its socket path under /run) responds to HTTP. Sets
# $rserver (its pid).
rserver_bg() {
    local image=$1 binds=$2 marker=$3
    shift 3
    local env=()
    while [ "$1" != -- ]; do env+=("$1"); shift; done
    shift
    as_probe "${env[@]}" apptainer --silent exec --cleanenv ${binds:+--bind "$binds"} \
        "$images/$image" "$bin/rserver" "$@" >"$d/out" 2>&1 &
    started_pids+=($!)
    local launcher=$! tries=0
    rserver=
    while [ $tries -lt 100 ]; do
        rserver=$(pgrep -u "$probe" -f "^$bin/rserver .*$marker" | head -1)
        if [ -n "$rserver" ] && answers "$marker"; then
            started_pids+=("$rserver")
            return 0
        fi
        kill -0 "$launcher" 2>/dev/null || break
        sleep 0.1
        tries=$((tries + 1))
    done
    echo "     rserver did not start:"
    sed 's/^/     | /' "$d/out"
    [ -n "$rserver" ] && kill -TERM "$rserver" 2>/dev/null
    return 1
}
answers() {
    if [[ $1 == /* ]]; then
        curl -s -o /dev/null --unix-socket "$d/run/${1#/run/}" http://localhost/
    else
        curl -s -o /dev/null "http://127.0.0.1:$1/"
    fi
}
stop_rserver() { # sends SIGTERM and waits up to 5 s for rserver to exit
    kill -TERM "$rserver" 2>/dev/null
    for _ in $(seq 50); do
        kill -0 "$rserver" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "     rserver $rserver still running 5 s after SIGTERM"
    kill -KILL "$rserver" 2>/dev/null
    return 1
}
wait_for_file() { # wait_for_file PATH: up to 5 s
    for _ in $(seq 50); do
        [ -e "$1" ] && return 0
        sleep 0.1
    done
    echo "     $1 did not appear"
    return 1
}
is_dead() { # is_dead PID: true once the process has exited (up to 5 s)
    for _ in $(seq 50); do
        { kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" | cut -c1)" != Z ]; } || return 0
        sleep 0.1
    done
    echo "     process $1 is still running"
    return 1
}

# http GET|POST URL [curl args...]: writes headers to $d/headers, body to $d/body.
http() {
    local method=$1 url=$2
    shift 2
    curl -s -X "$method" -D "$d/headers" -o "$d/body" "$@" "$url"
}
header() { grep -i "^$1:" "$d/headers" | head -1 | cut -d' ' -f2- | tr -d '\r'; }
status() { head -1 "$d/headers" | cut -d' ' -f2; }

image_release() { sed -e 's/^rstudio-//' -e 's/\.sif$//' <<<"$1"; }
db_file() { if [ "$1" = 1.4 ]; then echo rstudio.sqlite; else echo rstudio-os.sqlite; fi; }

# --- per-release checks ---------------------------------------------------------------------

help_lists() {
    local image=$1 option=$2 expected=$3
    new_case "help-$(image_release "$image")"
    rserver_fg "$image" "" -- --help
    [ "$rc" = 0 ] || { echo "     rserver --help exited $rc"; return 1; }
    if [ "$expected" = yes ]; then contains "$d/out" "--$option"; else lacks "$d/out" "--$option "; fi
}

full_flow() {
    local image=$1 release
    release=$(image_release "$image")
    rm -rf "$state"
    new_case "flow-$release"
    local port
    port=$(free_port)
    local base=http://127.0.0.1:$port
    check "$release: starts as $probe with private /run, /tmp and /var/lib/rstudio-server" \
        rserver_bg "$image" "$(private_binds)" "$port" \
        APPTAINERENV_USER="$probe" APPTAINERENV_PASSWORD=secret-pw \
        APPTAINERENV_RSTUDIO_SESSION_TIMEOUT=0 -- \
        --www-address=127.0.0.1 "--www-port=$port" "--server-user=$probe" \
        --auth-none=0 --auth-pam-helper-path=pam-helper || return

    http GET "$base/"
    check "$release: GET / redirects to /auth-sign-in" \
        equals "$(status) $(header Location)" "302 /auth-sign-in"
    http POST "$base/auth-do-sign-in" --data 'username='"$probe"'&password=wrong'
    check "$release: a wrong password returns to the form with error=2" \
        equals "$(header Location)" "/auth-sign-in?error=2"
    http GET "$base/auth-sign-in?error=2"
    check "$release: the sign-in page shows the error" \
        contains "$d/body" "Incorrect or invalid username/password"
    http POST "$base/auth-do-sign-in" --data 'username='"$probe"'&password=' 
    check "$release: an empty password is refused" equals "$(header Location)" "/auth-sign-in?error=2"
    http POST "$base/auth-do-sign-in" -c "$d/jar" --data 'username='"$probe"'&password=secret-pw'
    check "$release: the right password sets the user-id cookie and redirects to /" \
        equals "$(status) $(header Location) $(header Set-Cookie | cut -c1-8)" "302 / user-id="
    http GET "$base/" -b "$d/jar"
    check "$release: GET / with the cookie shows the session page" contains "$d/body" "<h1>RStudio</h1>"
    local session pid
    session=$(grep -o 'data-session-id="[^"]*"' "$d/body" | cut -d'"' -f2)
    pid=$(grep -o 'data-pid="[^"]*"' "$d/body" | cut -d'"' -f2)
    local record=$state/sessions/active/$session/standin-record.json
    check "$release: rsession wrote its record with USER and the session timeout" \
        record_has "$record" "\"USER\": \"$probe\"" "--session-timeout-minutes=0"
    check "$release: standin-sessions.log names the session directory" \
        contains "$state/standin-sessions.log" "$state/sessions/active/$session"
    if [ "$release" = 1.3 ]; then
        check "$release: the revocation list is under /var/run/rstudio-server" \
            test -f "$d/run/rstudio-server/revocation-list"
    else
        check "$release: the server data dir is mode 1777" \
            equals "$(stat -c %a "$d/run/rstudio-server")" 1777
        check "$release: the database is in /var/lib/rstudio-server" \
            test -f "$d/var-lib/$(db_file "$release")"
    fi
    [ -n "$pid" ] && kill -USR2 "$pid"
    check "$release: SIGUSR2 suspends rsession, leaving the suspended marker" \
        wait_for_file "$state/sessions/active/$session/suspended-session-data/suspended"
    check "$release: the suspended rsession exits" is_dead "$pid"
    http GET "$base/" -b "$d/jar"
    local second
    second=$(grep -o 'data-pid="[^"]*"' "$d/body" | cut -d'"' -f2)
    check "$release: GET / after the suspend starts a new rsession" new_pid "$second" "$pid"
    check "$release: SIGTERM ends rserver" stop_rserver
    check "$release: rserver's SIGTERM reaches rsession" is_dead "$second"
}

shared_tmp_fails() {
    local image=$1 release
    shift
    release=$(image_release "$image")
    new_case "shared-tmp-$release${1:+-moved-key}"
    # Another account's /tmp/rstudio-server, as on a node whose /tmp all users share.
    mkdir -p "$d/shared-tmp/rstudio-server"
    chmod 1777 "$d/shared-tmp"
    chmod 0700 "$d/shared-tmp/rstudio-server"
    echo other-key >"$d/shared-tmp/rstudio-server/secure-cookie-key"
    echo other-key >"$d/shared-tmp/rstudio-server/session-rpc-key"
    local binds
    binds=$(private_binds | sed "s#$d/tmp:/tmp#$d/shared-tmp:/tmp#")
    rserver_fg "$image" "$binds" -- --www-address=127.0.0.1 "--www-port=$(free_port)" \
        "--server-user=$probe" "$@"
    equals "$rc" 1 && contains "$d/out" "system error 13 (Permission denied) [path: /tmp/rstudio-server/"
}

readonly_var_lib_fails() {
    local image=$1 existing=$2 expected=$3 release
    release=$(image_release "$image")
    new_case "ro-var-lib-$release-$existing"
    [ "$existing" = yes ] && touch "$d/var-lib/$(db_file "$release")"
    local binds
    binds=$(private_binds | sed "s#:/var/lib/rstudio-server#:/var/lib/rstudio-server:ro#")
    rserver_fg "$image" "$binds" -- --www-address=127.0.0.1 "--www-port=$(free_port)" \
        "--server-user=$probe"
    equals "$rc" 1 && contains "$d/out" "database error 7" && contains "$d/out" "$expected"
}

without_binds_fails() {
    local image=$1 expected=$2
    new_case "no-binds-$(image_release "$image")"
    rserver_fg "$image" "$d/logging.conf:/etc/rstudio/logging.conf" -- \
        --www-address=127.0.0.1 "--www-port=$(free_port)" "--server-user=$probe"
    equals "$rc" 1 && contains "$d/out" "$expected"
}

server_user_refused() {
    local image=$1
    new_case "server-user-$(image_release "$image")"
    rserver_fg "$image" "$(private_binds)" -- --www-address=127.0.0.1 "--www-port=$(free_port)"
    equals "$rc" 1 && contains "$d/out" "ERROR Attempt to run server as user 'rstudio-server' (uid 999) from account '$probe' (uid $probe_uid) without privilege, which is required to run as a different uid"
}

server_user_not_checked() {
    local image=$1 port
    new_case "server-user-$(image_release "$image")"
    port=$(free_port)
    rserver_bg "$image" "$(private_binds)" "$port" -- \
        --www-address=127.0.0.1 "--www-port=$port" && stop_rserver
}

unknown_option_fails() {
    local image=$1 option=$2
    new_case "unknown-$(image_release "$image")"
    rserver_fg "$image" "$(private_binds)" -- "$option=/tmp/x" "--server-user=$probe"
    equals "$rc" 1 && contains "$d/out" "unrecognised option '$option'"
}

taken_port_fails() {
    new_case taken-port
    local port
    port=$(free_port)
    python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); time.sleep(30)' "$port" &
    local holder=$!
    started_pids+=("$holder")
    sleep 0.3
    rserver_fg rstudio-2024.12.sif "$(private_binds)" -- --www-address=127.0.0.1 "--www-port=$port" \
        "--server-user=$probe"
    kill "$holder" 2>/dev/null
    equals "$rc" 1 && contains "$d/out" "ERROR system error 98 (Address already in use)"
}

syslog_is_silent() {
    new_case syslog
    # Rocker's logging.conf (syslog), and a start that fails for want of --server-user.
    rserver_fg rstudio-2024.12.sif "$d/run:/run,$d/tmp:/tmp,$d/var-lib:/var/lib/rstudio-server" -- \
        --www-address=127.0.0.1 "--www-port=$(free_port)"
    equals "$rc" 1 &&
        equals "$(cat "$d/out")" "Logging configuration loaded from '/etc/rstudio/logging.conf'. Logging to 'syslog'."
}

data_dir_needs_1777() {
    new_case data-dir
    mkdir -p "$d/run/rstudio-server"
    chmod 0755 "$d/run/rstudio-server" # still root's, so the probe user cannot chmod it
    rserver_fg rstudio-2024.12.sif "$(private_binds)" -- --www-address=127.0.0.1 \
        "--www-port=$(free_port)" "--server-user=$probe"
    equals "$rc" 1 && contains "$d/out" "must be writeable by all users and have the sticky bit set"
}

www_socket_serves() {
    new_case www-socket
    echo stale >"$d/run/rs.sock"
    chown "$probe:" "$d/run/rs.sock"
    rserver_bg rstudio-2024.12.sif "$(private_binds)" /run/rs.sock APPTAINERENV_USER="$probe" -- \
        --www-socket=/run/rs.sock "--server-user=$probe" || return 1
    local mode
    mode=$(stat -c '%a %F' "$d/run/rs.sock")
    curl -s -D "$d/headers" -o /dev/null --unix-socket "$d/run/rs.sock" http://localhost/auth-sign-in
    stop_rserver && equals "$mode" "700 socket" && equals "$(status) $(header Location)" "302 /"
}

auth_none_without_user_loops() {
    new_case auth-none
    local port
    port=$(free_port)
    rserver_bg rstudio-2024.12.sif "$(private_binds)" "$port" -- \
        --www-address=127.0.0.1 "--www-port=$port" "--server-user=$probe" || return 1
    http GET "http://127.0.0.1:$port/"
    local first
    first="$(status) $(header Location)"
    http GET "http://127.0.0.1:$port/auth-sign-in"
    local second
    second="$(status) $(header Location)"
    stop_rserver && equals "$first" "302 /auth-sign-in" && equals "$second" "302 /"
}

pam_helper_needs_password_variable() {
    new_case no-password
    local port
    port=$(free_port)
    rserver_bg rstudio-2024.12.sif "$(private_binds)" "$port" APPTAINERENV_USER="$probe" -- \
        --www-address=127.0.0.1 "--www-port=$port" "--server-user=$probe" --auth-none=0 \
        --auth-pam-helper-path=pam-helper || return 1
    http POST "http://127.0.0.1:$port/auth-do-sign-in" --data "username=$probe&password=anything"
    stop_rserver && equals "$(header Location)" "/auth-sign-in?error=2"
}

broken_fails() {
    new_case broken
    rserver_fg rstudio-broken.sif "$(private_binds)" -- "--server-user=$probe"
    equals "$rc" 1 &&
        contains "$d/out" "Error reading /etc/rstudio/rserver.conf: unrecognised option 'admin-enabled'"
}

r_too_new_fails_to_connect() {
    rm -rf "$state"
    new_case r-too-new
    local port
    port=$(free_port)
    rserver_bg rstudio-r-too-new.sif "$(private_binds)" "$port" \
        APPTAINERENV_USER="$probe" -- --www-address=127.0.0.1 "--www-port=$port" \
        "--server-user=$probe" || return 1
    http GET "http://127.0.0.1:$port/"
    stop_rserver &&
        contains "$d/body" "Could not connect to the R session on RStudio Server" &&
        contains "$d/out" "undefined symbol: Rf_countContexts"
}

oci_archive_pulls() {
    new_case oci
    as_probe apptainer --silent pull "$d/pulled.sif" "oci-archive:$images/rstudio-2024.12.oci.tar" \
        >"$d/out" 2>&1 || { sed 's/^/     | /' "$d/out"; return 1; }
    as_probe apptainer --silent exec --cleanenv "$d/pulled.sif" "$bin/rserver" --help >"$d/out" 2>&1
    contains "$d/out" "--www-socket" &&
        as_probe apptainer --silent exec "$d/pulled.sif" sh -c 'echo "$R_VERSION $RSTUDIO_VERSION"' >"$d/out" &&
        contains "$d/out" "4.4.2 2024.12.1+563"
}

mkdir -p "$work/cache" && chown "$probe:" "$work/cache"
for file in rstudio-1.3.sif rstudio-1.4.sif rstudio-2022.07.sif rstudio-2024.12.sif \
    rstudio-broken.sif rstudio-r-too-new.sif rstudio-2024.12.oci.tar; do
    check "$file exists" test -s "$images/$file"
done

for image in rstudio-1.3.sif rstudio-1.4.sif rstudio-2022.07.sif rstudio-2024.12.sif; do
    release=$(image_release "$image")
    check "$release: --help lists --www-port" help_lists "$image" www-port yes
    socket=no; [ "$release" = 2024.12 ] && socket=yes
    check "$release: --help lists --www-socket only from 2024.12" help_lists "$image" www-socket "$socket"
    data_dir=yes; [ "$release" = 1.3 ] && data_dir=no
    check "$release: --help lists --server-data-dir only from 1.4" \
        help_lists "$image" server-data-dir "$data_dir"
    full_flow "$image"
    check "$release: another user's /tmp/rstudio-server fails with system error 13" \
        shared_tmp_fails "$image"
done

check "1.3: without a writable /run the revocation list fails" \
    without_binds_fails rstudio-1.3.sif "Could not acquire revocation list file lock"
check "1.3: --server-data-dir is an unknown option" unknown_option_fails rstudio-1.3.sif --server-data-dir
check "1.4: without a writable /run the server data dir cannot be created" \
    without_binds_fails rstudio-1.4.sif "system error 30 (Read-only file system) [path: /var/run/rstudio-server]"
check "1.4: a missing --server-user is not checked" server_user_not_checked rstudio-1.4.sif
for image in rstudio-1.4.sif rstudio-2022.07.sif rstudio-2024.12.sif; do
    release=$(image_release "$image")
    check "$release: read-only /var/lib/rstudio-server cannot create the database" \
        readonly_var_lib_fails "$image" no "unable to open database file"
    check "$release: a read-only existing database cannot be written" \
        readonly_var_lib_fails "$image" yes "attempt to write a readonly database"
done
for image in rstudio-2022.07.sif rstudio-2024.12.sif; do
    release=$(image_release "$image")
    check "$release: a missing --server-user is refused without privilege" server_user_refused "$image"
    check "$release: moving the cookie key still leaves session-rpc-key in the shared /tmp" \
        shared_tmp_fails "$image" --secure-cookie-key-file=/run/secure-cookie-key
done
check "2022.07: --www-socket is an unknown option" unknown_option_fails rstudio-2022.07.sif --www-socket
check "2024.12: a taken port fails with system error 98" taken_port_fails
check "2024.12: syslog logging prints only the banner on failure" syslog_is_silent
check "2024.12: a server data dir it cannot chmod to 1777 fails" data_dir_needs_1777
check "2024.12: --www-socket serves HTTP on a 0700 socket, replacing a stale file" www_socket_serves
check "2024.12: --auth-none=1 without USER bounces between / and /auth-sign-in" \
    auth_none_without_user_loops
check "2024.12: pam-helper rejects every sign-in when PASSWORD is not set" \
    pam_helper_needs_password_variable
check "broken: rserver.conf with an unknown option exits 1 at once" broken_fails
check "r-too-new: the session page reports the failed rsession" r_too_new_fails_to_connect
check "oci archive: apptainer pull converts it and the image runs" oci_archive_pulls

rm -rf "$state"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
