"""Paths to downloads for prefetch (``tree.paths``): files, directories, links, unpacked
archives, ``.build.json``, failures; nothing fetched but listings."""

from __future__ import annotations

from pathlib import Path

import trio

from mkwfs.emulator import BIG_BUILD, BUILDING_BUILD, DEMO_BUILD, Emulator
from mkwfs.tree.paths import resolve_downloads
from tests.helpers import open_tree

BODY_REQUESTS = ("GET /api/v1/downloads/:id", "HEAD /api/v1/downloads/:id")


def ids_of(emulator: Emulator, *builds: int) -> list[int]:
    return [d["id"] for build in builds for d in emulator.downloads_of(build)]


async def test_files_dirs_links_and_archives_each_download_once(
    emulator: Emulator, tmp_path: Path
) -> None:
    demo = emulator.downloads_of(DEMO_BUILD)
    with trio.fail_after(10):
        async with open_tree(emulator, tmp_path) as tree:
            resolution = await resolve_downloads(tree, [
                f"builds/{DEMO_BUILD}/{demo[1]['name']}".encode(),
                f"projects/DEMO_PROJECT/{DEMO_BUILD}".encode(),
                f"unpacked/./{DEMO_BUILD}/../{DEMO_BUILD}/{demo[0]['name']}".encode(),
                f"builds/{DEMO_BUILD}/no-such.zip".encode(),
                b"builds/999999",
            ])  # fmt: skip
    wanted = [w.download_id for w in resolution.wanted]
    assert wanted[0] == demo[1]["id"]
    assert sorted(wanted) == sorted(ids_of(emulator, DEMO_BUILD))
    # Found through the link, named by the path without it.
    assert {w.path for w in resolution.wanted[1:]} == {
        f"builds/{DEMO_BUILD}/{d['name']}" for d in demo[:1] + demo[2:]
    }
    assert resolution.failures == [
        (f"builds/{DEMO_BUILD}/no-such.zip", "no such file or directory"),
        ("builds/999999", "no such file or directory"),
    ]
    assert resolution.skipped == [f"builds/{DEMO_BUILD}/.build.json"]
    assert not any(emulator.requests[key] for key in BODY_REQUESTS)


async def test_a_project_directory_follows_its_links(emulator: Emulator, tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_tree(emulator, tmp_path) as tree:
            resolution = await resolve_downloads(
                tree, [b"projects/DEMO_PROJECT", b"projects/DEMO_PROJECT/latest"]
            )
    builds = (DEMO_BUILD, BIG_BUILD, BUILDING_BUILD)  # DEMO_PROJECT's builds with files
    assert sorted(w.download_id for w in resolution.wanted) == sorted(ids_of(emulator, *builds))
    assert resolution.failures == []
    assert not any(emulator.requests[key] for key in BODY_REQUESTS)
