"""The ``prefetch`` control command: the daemon fetches the bodies of the paths named, itself.

Request: ``{"command": "prefetch", "paths": [...], "jobs": N}``, paths relative to the mount
root. The paths are resolved through the tree (``mkwfs.tree.paths``: which downloads they
show), then the bodies are fetched into the content cache, at most ``jobs`` at a time
(``mkwfs.content.prefetch``): no FUSE read, nothing else fetched, what is cached costs no
request. While it runs the client gets a progress line (``{"progress": {...counts}}``) every
``PROGRESS_INTERVAL`` seconds when a count changed, and at least every
``HEARTBEAT_INTERVAL``; then the answer: the counts, the failures (each path with its
reason) and the paths skipped. A client that goes away cancels the waiting (fetches already
running finish on their own).
"""

from __future__ import annotations

import math
import os
from typing import Any

import trio

from mkwfs.content.prefetch import PrefetchProgress, fetch_bodies
from mkwfs.content.store import ContentStore
from mkwfs.fuse.control import SendProgress
from mkwfs.remote.errors import MkwfsError
from mkwfs.tree.paths import resolve_downloads
from mkwfs.tree.tree import Tree

#: Seconds between two progress lines, at least.
PROGRESS_INTERVAL = 0.1
#: Seconds between two progress lines, at most (the client times out without them; the
#: bytes received so far move the bar's figure).
HEARTBEAT_INTERVAL = 1.0
#: The most bodies fetched at once that a request may ask for.
MAX_JOBS = 256


class BadRequest(MkwfsError):
    """A prefetch request that is not what the command line sends."""


def _parse(request: dict[str, Any]) -> tuple[list[bytes], int]:
    paths, jobs = request.get("paths"), request.get("jobs")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise BadRequest("prefetch needs 'paths', a list of paths relative to the mount root")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or not 1 <= jobs <= MAX_JOBS:
        raise BadRequest(f"prefetch needs 'jobs', a number from 1 to {MAX_JOBS}")
    return [os.fsencode(p) for p in paths], jobs


async def answer_prefetch(
    tree: Tree, content: ContentStore, request: dict[str, Any], send: SendProgress
) -> dict[str, Any]:
    """Answer a ``prefetch`` request (see the module docstring)."""
    paths, jobs = _parse(request)
    progress = PrefetchProgress()
    received_before = content.stats().bytes_received
    state = {"resolving": True, "client_gone": False}

    def counts() -> dict[str, Any]:
        return {**progress.counts(), "resolving": state["resolving"]}

    def snapshot() -> dict[str, Any]:
        # The store's stats cost a sum over the cache: taken only for a line sent.
        return {**counts(), "received": content.stats().bytes_received - received_before}

    async def report(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sent: dict[str, Any] | None = None
        sent_at = -math.inf
        task_status.started()
        while True:
            now = counts()
            if now != sent or trio.current_time() - sent_at >= HEARTBEAT_INTERVAL:
                try:
                    await send(snapshot())
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    state["client_gone"] = True
                    nursery.cancel_scope.cancel()
                    return
                sent, sent_at = now, trio.current_time()
            await trio.sleep(PROGRESS_INTERVAL)

    async with trio.open_nursery() as nursery:
        await nursery.start(report)
        complete = await content.complete_bodies()  # before: resolving may fetch (a ZIP index)
        resolution = await resolve_downloads(tree, paths)
        progress.failures += resolution.failures
        state["resolving"] = False
        await fetch_bodies(
            content,
            resolution.wanted,
            at_once=jobs,
            complete=complete,
            progress=progress,
            probe_sizes=tree.size_probes == "ahead",
        )
        nursery.cancel_scope.cancel()
    if state.get("client_gone"):
        raise trio.BrokenResourceError("the client of the prefetch went away")
    final = snapshot()
    await send(final)
    return {
        "summary": final,
        "failures": [{"path": path, "error": why} for path, why in progress.failures],
        "skipped": resolution.skipped,
    }
