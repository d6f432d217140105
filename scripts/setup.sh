#!/usr/bin/env bash
# Installs what mkwfs needs on Debian/Ubuntu and an editable mkwfs[test] in .venv.
#
# Idempotent: Debian packages are installed only when one is missing (apt-get update
# first, through sudo when not root), .venv is created only when missing or broken, and
# pip runs only when pyproject.toml or the interpreter changed since the last run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.mkwfs-setup-stamp

say() { printf 'setup: %s\n' "$*" >&2; }

deb_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

missing=()
# FUSE 3 (fusermount3, /dev/fuse helpers), what pyfuse3 needs to build from source, unzip
# and gio (libglib2.0-bin: the file-manager test browses the mount as Nautilus does).
for pkg in fuse3 libfuse3-dev pkg-config unzip libglib2.0-bin; do
    if ! deb_installed "$pkg"; then missing+=("$pkg"); fi
done
if ! command -v gcc >/dev/null 2>&1; then missing+=(gcc); fi
venv_ok() { "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    missing+=(python3 python3-venv python3-dev)
else
    # Debian ships the venv module without ensurepip; python3-venv brings it.
    if ! venv_ok && ! "$PYTHON" -c 'import ensurepip, venv; ensurepip.version()' >/dev/null 2>&1
    then
        missing+=(python3-venv)
    fi
    # pyfuse3 is compiled against the interpreter's headers, unless it is already built.
    if ! { venv_ok && "$VENV/bin/python" -c 'import pyfuse3' >/dev/null 2>&1; } \
        && ! "$PYTHON" - >/dev/null 2>&1 <<'PY'
import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))
PY
    then
        missing+=(python3-dev)
    fi
fi

if ((${#missing[@]})); then
    if ! command -v apt-get >/dev/null 2>&1; then
        say "missing ${missing[*]}, and no apt-get to install them: install them by hand" && exit 1
    fi
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            say "missing ${missing[*]}; run as root or install sudo" && exit 1
        fi
        sudo=(sudo)
    fi
    say "installing Debian packages: ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -e /dev/fuse ]; then
    say "warning: /dev/fuse does not exist: mounting will fail (in a container, pass --device /dev/fuse)"
fi

if ! venv_ok; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { say "mkwfs needs Python >= 3.11, $PYTHON is $("$PYTHON" -V 2>&1)"; exit 1; }
    say "creating $VENV"
    "$PYTHON" -m venv --clear "$VENV"
fi

want="$(cat pyproject.toml "$VENV/pyvenv.cfg" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/mkwfs" ]; then
    exit 0
fi
say "installing mkwfs[test] into $VENV (pyfuse3 builds from source)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
echo "$want" >"$STAMP"
