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

from mkwfs.content.config import ContentConfig
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


def test_content_type_of_unknown_members_reads_one_small_head_each(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    """GIO sniffs ``*.bin`` members (no MIME glob) by reading their first 16 KiB; each costs
    one ranged GET of the member's head (``head_window``), not the megabytes of the member.
    Issue 15's target, nothing beyond the directory's GET, cannot be had for these members:
    their first bytes lie 8 MiB apart, none in the 128 KiB the directory's GET brings, and a
    GET of one range cannot bring several members' heads. (A member whose head does lie in
    that tail is served from it without a request.)"""
    mnt = mount_fs().path
    payload = mnt / "unpacked" / str(BIG_BUILD) / "STAGE_PC_HISTORY.zip" / "payload"
    names = sorted(p.name for p in Path(payload).iterdir())
    directory_gets, directory_bytes = _body_gets(emulator), emulator.bytes_sent
    listing = _gio("list", "-a", "standard::content-type", str(payload))
    assert len(listing.splitlines()) == len(names) == 4
    assert _body_gets(emulator) == directory_gets + len(names)
    assert emulator.bytes_sent - directory_bytes == len(names) * ContentConfig().head_window
