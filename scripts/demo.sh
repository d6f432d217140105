#!/usr/bin/env bash
# The README's demo command: sets up, then mounts the embedded MetaKraftwerk emulator at
# MOUNTPOINT (default /tmp/mkwfs-demo) in the background.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

mnt="${1:-/tmp/mkwfs-demo}"
bash scripts/setup.sh

if mountpoint -q "$mnt" 2>/dev/null; then
    echo "demo: $mnt is already mounted; unmount it first with: .venv/bin/mkwfs umount $mnt" >&2
    exit 1
fi
mkdir -p "$mnt"
.venv/bin/mkwfs demo "$mnt"

cat <<TEXT
The demo serves an emulated MetaKraftwerk server on loopback. Look around:
    ls $mnt/builds
    ls -l $mnt/builds/5139
    unzip -l "$mnt/builds/5139/*.zip"    # unzip expands the quoted wildcard itself
Unmount:
    .venv/bin/mkwfs umount $mnt
TEXT
