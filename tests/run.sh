#!/usr/bin/env bash
# Run the whole scratchpack test suite on a fresh Debian 12 machine, as root.
#
#   bash tests/run.sh [PYTEST ARGS...]
#
# Idempotent: on a prepared machine it installs nothing and reuses .venv and a
# running Docker engine. Steps:
#   1. apt-get install the system packages the tests need (only missing ones);
#   2. create .venv in the repository and pip install -e '.[test]' into it;
#   3. start the Docker engine (dockerd) unless one already answers;
#   4. run python -m pytest "$@" (temporary files in RAM when there is room) and exit
#      with pytest's status.
# Tests run side by side, one pytest-xdist worker per core (at most 4): whole files per
# worker (--dist loadfile), the slowest files handed out first (tests/conftest.py), on
# the one engine. SCRATCHPACK_TEST_WORKERS=N sets the number, 0 or 1 runs one process;
# arguments that choose it themselves (-n, --numprocesses, --dist, -p no:xdist) win.
# A test must count only its own engine objects and files: tests/conftest.py says how.
# Nothing is ever pulled: the engine starts without images and no registry is
# reachable; the engine tests build their images FROM scratch.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

PYTHON="${PYTHON:-python3}"
VENV="$REPO_ROOT/.venv"
DOCKERD_LOG=/var/log/dockerd.log
export DEBIAN_FRONTEND=noninteractive

log() { printf 'tests/run.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

# --- 1. system packages ---------------------------------------------------

pkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

APT_UPDATED=0
apt_install() {
    [ "$(id -u)" -eq 0 ] || die "must run as root to apt-get install: $*"
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    # The tests start what they need themselves (dockerd below, their own sshd, registry,
    # Podman service, PostgreSQL): no package install may start a system service (an sshd
    # on port 22, a PostgreSQL cluster), as in a container without an init.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    local status=0
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null || status=$?
    [ "$made_policy" -eq 0 ] || rm -f "$policy"
    return "$status"
}

missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
pkg_installed libc6-dev || missing+=(libc6-dev)
{ pkg_installed docker.io || command -v dockerd >/dev/null 2>&1; } || missing+=(docker.io)
{ pkg_installed pax-utils || command -v lddtree >/dev/null 2>&1; } || missing+=(pax-utils)
pkg_installed busybox-static || missing+=(busybox-static)
# The image writer's consumers and a real registry for the push tests.
# qemu-user-static runs the arm64 images of build --platform (test_packages.py).
# gnupg signs the tests' own apt repository (tests/debkit.py); a fresh machine has gpgv only.
# podman: the engine tests that matter run against Podman's Docker API too (tests/podman.py
# starts its service); openssh-server: a remote engine over ssh:// (tests/sshd.py runs
# its own sshd on loopback, never the system's service).
for package in skopeo umoci docker-registry openssl make strace musl-tools g++ debootstrap \
    qemu-user-static gnupg podman openssh-server openssh-client iproute2; do
    pkg_installed "$package" || missing+=("$package")
done
# The README's recipes (tests/integration/test_recipes.py): the programs they package
# and their clients (psql comes with postgresql-15, redis-cli with redis-server).
for package in postgresql-15 redis-server nginx nodejs openjdk-17-jdk-headless python3-venv; do
    pkg_installed "$package" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi

# --- 2. virtualenv --------------------------------------------------------

venv_works() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; }

if ! venv_works; then
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
        # Debian's python3 ships venv without ensurepip: that is python3-venv.
        rm -rf "$VENV"
        apt_install python3-venv
        "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv' fails even with python3-venv installed"
    fi
fi

# Reinstall only when pyproject.toml or templates/ changed since the last install
# (an editable install picks up scratchpack/ changes by itself, but hatchling
# copies the force-included templates/); keeps repeated runs fast and offline.
STAMP="$VENV/.scratchpack-installed"
want="$({ cat pyproject.toml; find templates -type f -print0 2>/dev/null | sort -z \
    | xargs -0 -r sha256sum; } | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ] \
    || ! "$VENV/bin/python" -I -c 'import scratchpack, pytest' >/dev/null 2>&1; then
    log "pip install -e '.[test]' into .venv"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
    printf '%s\n' "$want" >"$STAMP"
fi

# --- 3. Docker engine -----------------------------------------------------

engine_answers() { docker info >/dev/null 2>&1; }

if ! command -v docker >/dev/null 2>&1; then
    die "no 'docker' command although docker.io is installed"
fi
if ! engine_answers; then
    case "${DOCKER_HOST:-}" in
        "" | unix:///var/run/docker.sock | unix:///run/docker.sock) ;;
        *) die "DOCKER_HOST=$DOCKER_HOST does not answer 'docker info'; start that engine or unset DOCKER_HOST" ;;
    esac
    dockerd_pid=""
    if pgrep -x dockerd >/dev/null 2>&1; then
        log "dockerd is running but not answering yet; waiting for it"
    else
        log "starting dockerd (log: $DOCKERD_LOG)"
        nohup setsid dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
        dockerd_pid=$!
    fi
    for _ in $(seq 60); do
        engine_answers && break
        if [ -n "$dockerd_pid" ] && ! kill -0 "$dockerd_pid" 2>/dev/null; then
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            die "dockerd exited during start-up; see $DOCKERD_LOG"
        fi
        sleep 1
    done
    if ! engine_answers; then
        tail -n 20 "$DOCKERD_LOG" >&2 || true
        die "the Docker engine did not answer 'docker info' within 60 s; see $DOCKERD_LOG"
    fi
    log "Docker engine is up"
fi

# --- 4. tests -------------------------------------------------------------

# The tests' temporary files (pytest's tmp_path, scratchpack's unpacked roots and
# staged outputs: about 1.2 GB over a run, most of it briefly) go to a RAM file
# system of their own when the machine has the memory, unless TMPDIR is set: the
# disk then serves the engine alone. Not /dev/shm: a container gets a fresh
# /dev/shm, which would hide the files of images built from paths under it.
# Benchmarks (bench/) measure on the disk, as a user's run is.
tmp_mount=""
available_kb="$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo 2>/dev/null || echo 0)"
if [ -z "${TMPDIR:-}" ] && [ "$(id -u)" -eq 0 ] && [ "${available_kb:-0}" -ge $((12 * 1024 * 1024)) ]; then
    # A short name: unix sockets under it (a private dockerd's, the tests' own) must stay
    # within 107 bytes, and pytest-xdist adds a directory per worker (popen-gwN).
    tmp_mount="$(mktemp -d /var/tmp/spt.XXXXXX)"
    if mount -t tmpfs -o size=8g,mode=1777 tmpfs "$tmp_mount" 2>/dev/null; then
        export TMPDIR="$tmp_mount"
        log "temporary files in $TMPDIR (a tmpfs of up to 8 GB, unmounted at the end)"
    else
        rmdir "$tmp_mount"
        tmp_mount=""
    fi
fi

# Side by side unless the arguments or SCRATCHPACK_TEST_WORKERS say otherwise.
chooses_workers() {
    local arg previous=""
    for arg in "$@"; do
        case "$arg" in
            -n | -n* | --numprocesses | --numprocesses=* | --dist | --dist=* | -pno:xdist) return 0 ;;
        esac
        [ "$previous $arg" = "-p no:xdist" ] && return 0
        previous="$arg"
    done
    return 1
}
cores="$(nproc 2>/dev/null || echo 1)"
workers="${SCRATCHPACK_TEST_WORKERS:-$((cores < 4 ? cores : 4))}"
case "$workers" in
    '' | *[!0-9]*) die "SCRATCHPACK_TEST_WORKERS=$workers is not a number" ;;
esac
side_by_side=()
if [ "$workers" -gt 1 ] && ! chooses_workers "$@"; then
    side_by_side=(-n "$workers" --dist loadfile --no-loadscope-reorder)
fi
status=0
"$VENV/bin/python" -m pytest "${side_by_side[@]}" "$@" || status=$?
if [ -n "$tmp_mount" ]; then
    umount "$tmp_mount" || umount -l "$tmp_mount" || true
    rmdir "$tmp_mount" 2>/dev/null || true
fi
exit "$status"
