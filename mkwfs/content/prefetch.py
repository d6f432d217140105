"""Whole bodies into the cache, a bounded number at a time: the work of ``mkwfs prefetch``.

``fetch_bodies`` takes the downloads wanted (each once, named by the path that asked for
it), runs ``ContentStore.fetch_whole`` for at most ``at_once`` of them at a time, and keeps
the counts in a ``PrefetchProgress`` that the caller may look at while it runs: bodies done,
fetched, already cached, failed (each failure with its path and reason), bytes. A failure
of one body never stops the others. Nothing else is fetched.

"Already cached" means complete in the cache when the prefetch began
(``ContentStore.complete_bodies``), which ``fetch_whole`` serves without a request.

With ``probe_sizes`` the sizes of the bodies not cached are probed first, in batches (the
HEADs that ``ls -l`` sends too): a small body of known size then comes whole on the lean
path (`ContentStore.fetch_whole`). Without it no HEAD is sent (``--size-probes stat|off``:
servers that count a HEAD as a download), and each body is fetched by one open-ended GET
that tells its size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from mkwfs.content.store import ContentStore
from mkwfs.remote.errors import MkwfsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wanted:
    """A download to have in the cache, and the path (relative to the mount) that names it."""

    path: str
    download_id: int


@dataclass
class PrefetchProgress:
    """How far a prefetch got; the caller reads it while ``fetch_bodies`` fills it in."""

    #: Bodies wanted (each download once).
    files: int = 0
    #: Bodies done, whatever came of them: ``fetched + cached + failed``.
    done: int = 0
    #: Bodies brought from the server by this prefetch (or by a read it joined).
    fetched: int = 0
    #: Bodies that were complete in the cache already: no request.
    cached: int = 0
    #: Bodies that could not be had; each is in ``failures``.
    failed: int = 0
    #: Bytes of the bodies fetched or cached.
    bytes: int = 0
    #: (path, reason) of every body, and every path, that failed.
    failures: list[tuple[str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        """The counters, as JSON-able values, without the failures."""
        return {
            "files": self.files, "done": self.done, "fetched": self.fetched,
            "cached": self.cached, "failed": self.failed, "bytes": self.bytes,
        }  # fmt: skip


def reason(exc: MkwfsError) -> str:
    """Why a body could not be had, for a message about one file."""
    return str(exc) or type(exc).__name__


async def fetch_bodies(
    store: ContentStore,
    wanted: Sequence[Wanted],
    *,
    at_once: int,
    complete: frozenset[int],
    progress: PrefetchProgress,
    probe_sizes: bool = False,
) -> None:
    """Make each wanted body complete in ``store``, at most ``at_once`` at a time, counting
    in ``progress`` (``files`` is set here); ``complete`` holds the ids that were complete
    before. Raises nothing of a failed body: it is counted and named in ``progress``."""
    if at_once < 1:
        raise ValueError("at_once must be at least 1")
    progress.files += len(wanted)
    queue = iter(wanted)  # shared by the workers: each body is taken once
    if probe_sizes:
        store.prefetch_sizes(w.download_id for w in wanted if w.download_id not in complete)

    async def fetch_one(item: Wanted) -> None:
        try:
            if probe_sizes:
                await store.wait_for_sizes([item.download_id])
            size = await store.fetch_whole(item.download_id)
        except MkwfsError as exc:
            log.info("prefetch of %s (download %d) failed: %s", item.path, item.download_id, exc)
            progress.failed += 1
            progress.failures.append((item.path, reason(exc)))
        else:
            if item.download_id in complete:
                progress.cached += 1
            else:
                progress.fetched += 1
            progress.bytes += size
        progress.done += 1

    async def worker() -> None:
        for item in queue:
            await fetch_one(item)

    async with trio.open_nursery() as nursery:
        for _ in range(min(at_once, len(wanted))):
            nursery.start_soon(worker)
