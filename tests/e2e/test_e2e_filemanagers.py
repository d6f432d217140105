"""What GIO costs on a mount when asked what Nautilus asks: the CI part of issue 15.

The full rig (``scripts/filemanagers.py``) runs Nautilus and Thunar under Xvfb; these tests
ask ``gio`` (libglib2.0-bin) for the attributes Nautilus queries for every file it shows
(``NAUTILUS_FILE_DEFAULT_ATTRIBUTES``), which include ``standard::content-type``: for a
name no MIME glob settles, GIO opens the file and reads up to 16 KiB to sniff it.
A browsing change that brings back a body GET fails here.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from mkwfs.emulator import BIG_BUILD, LARGE_BUILD, Emulator
from tests.conftest import MountFactory, require

#: Nautilus 43's NAUTILUS_FILE_DEFAULT_ATTRIBUTES.
NAUTILUS_ATTRIBUTES = (
    "standard::*,access::*,mountable::*,time::*,unix::*,owner::*,selinux::*,thumbnail::*,"
    "id::filesystem,trash::orig-path,trash::deletion-date,metadata::*,recent::*,preview::icon"
)
BODY_GET = "GET /api/v1/downloads/:id"


def _gio(*args: str) -> str:
    require(shutil.which("gio") is not None, "no gio (apt-get install libglib2.0-bin)")
    done = subprocess.run(["gio", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _body_gets(emulator: Emulator) -> int:
    return Counter(emulator.requests)[BODY_GET]


def test_nautilus_attributes_of_a_build_of_1000_files_read_no_body(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    mnt = mount_fs().path
    listing = _gio("list", "-a", NAUTILUS_ATTRIBUTES, str(mnt / "builds" / str(LARGE_BUILD)))
    assert len(listing.splitlines()) == 1000
    assert _body_gets(emulator) == 0
    assert emulator.requests["HEAD /api/v1/downloads/:id"] <= 1000  # as ls -l, no more


def test_nautilus_attributes_of_builds_read_no_body(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    mnt = mount_fs().path
    _gio("list", "-a", NAUTILUS_ATTRIBUTES, str(mnt / "builds"))
    _gio("info", "-a", NAUTILUS_ATTRIBUTES, str(mnt / "builds" / str(BIG_BUILD)))
    assert _body_gets(emulator) == 0
    assert emulator.requests["HEAD /api/v1/downloads/:id"] <= 2


@pytest.mark.xfail(
    strict=True,
    reason="GIO sniffs *.bin members (no MIME glob) by reading 16 KiB of each: a body GET "
    "per member until content/ serves a member's first bytes from the ZIP's directory read",
)
def test_content_type_of_unknown_members_reads_nothing_beyond_the_directory(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    mnt = mount_fs().path
    payload = mnt / "unpacked" / str(BIG_BUILD) / "STAGE_PC_HISTORY.zip" / "payload"
    names = sorted(p.name for p in Path(payload).iterdir())
    directory_gets = _body_gets(emulator)
    listing = _gio("list", "-a", "standard::content-type", str(payload))
    assert len(listing.splitlines()) == len(names)
    assert _body_gets(emulator) == directory_gets
