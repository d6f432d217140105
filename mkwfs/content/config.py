"""The content store's tuning knobs, in one frozen object passed in (tests pass their own)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mkwfs.catalog.sizes import SizeConfig
from mkwfs.remote.api import RetryPolicy

MiB = 1 << 20


@dataclass(frozen=True)
class ContentConfig:
    """How reads become fetches, how fetches reach the disk, and how long bodies stay."""

    # -- planning (see planner.py) ----------------------------------------------------------
    #: A read joins a running fetch whose bytes are at most this far before the bytes it needs.
    join_distance: int = 4 * MiB
    #: What a read in the middle of a body fetches when nothing better is known.
    random_window: int = 128 * 1024
    #: A read this far past the end of a window still counts as going on (kernel readahead).
    near: int = 2 * MiB
    #: Windows double while a reader goes on, up to this.
    max_window: int = 32 * MiB
    #: A read within this many bytes of the end fetches all of them (ZIP directories live there).
    tail_window: int = 128 * 1024
    #: What a member-sized fetch takes past the member, for the kernel's readahead: seen to go
    #: up to three of its windows (3 x READAHEAD_KB, see mount.py) past the end of a read.
    spill: int = 768 * 1024
    #: A member-sized fetch is at least this long (small members are fetched together).
    min_fetch: int = 64 * 1024
    #: What a read of a longer member's local header alone fetches: the header and the
    #: first bytes a content-type sniff reads (GLib reads up to 16 KiB; the kernel asks for
    #: 16 KiB), with room for a long name and extra field and for deflate's overhead.
    head_window: int = 64 * 1024

    # -- fetching (see fetcher.py) ----------------------------------------------------------
    #: How far an open-ended fetch streaming alone may run ahead of the furthest byte asked
    #: for. Several at once share ``stream_budget`` instead, each ``min_readahead`` at least.
    readahead: int = 16 * MiB
    #: What the open-ended fetches running at once may run ahead in all. A body holds about
    #: its readahead and its recent bytes in memory, pages touched for the first time, which
    #: cost more than the copies into them: 4 cold readers with 16 + 24 MiB each peaked at
    #: 190 MiB of RSS; a single stream with 4 + 8 MiB took 15% more CPU than with 16 + 24.
    stream_budget: int = 24 * MiB
    min_readahead: int = 4 * MiB
    #: Bytes that last arrived, kept in memory per body: more than ``readahead``, so that a
    #: reader behind an open-ended fetch is served from memory, the disk writes beside it.
    #: A body whose readahead is shared out keeps the same multiple of its share.
    recent_limit: int = 24 * MiB
    #: A fetch runs on through fewer bytes on disk than this (writing them again) rather than
    #: end at them: what follows would cost a GET of its own, one more download for the
    #: server to count, and more as the reader's windows grow.
    run_through: int = 16 * MiB
    #: Chunks (of up to the transport's QUEUE_LIMIT) queued between the network and the disk
    #: writer.
    queued_chunks: int = 8
    #: An open-ended fetch that waited this long for readers closes its connection.
    idle_close: float = 10.0
    #: Backoff between retries of a fetch (its attempts are bounded by ``stall_timeout``).
    backoff: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(attempts=1_000_000, base_delay=0.25, max_delay=4.0)
    )
    #: How long closing the store waits for fetches to put what arrived on disk.
    stop_timeout: float = 5.0

    # -- small bodies (see fetcher.py's ``fetch_small``, disk.py's ``store_whole``) --------
    #: A body of known size up to this is fetched whole into memory in one GET, served from
    #: there at once, and written to disk in the background (no stream, no ``.part``).
    small_max: int = 1 * MiB
    #: Seconds fetched small bodies gather in memory before they go to disk together (one
    #: thread hop for all), unless ``write_batch`` bytes gathered sooner.
    write_gather: float = 0.25
    write_batch: int = 4 * MiB
    #: Seconds a body written without a sync waits for others, to be synced with them.
    sync_delay: float = 1.0
    #: The kernel's boot id (see durable.py): tests play a reboot with a file of their own.
    boot_id_file: str = "/proc/sys/kernel/random/boot_id"

    # -- the disk (see disk.py, writer.py, eviction.py) --------------------------------------
    #: Smaller fetches are written through the page cache (opening for O_DIRECT costs more).
    direct_min: int = 1 * MiB
    #: Bytes written between two records of what is on disk (``.map``).
    map_interval: int = 16 * MiB
    #: Bytes per second the disk writer is held to (None: as fast as the disk goes): tests
    #: play a slow cache disk with it, whose writes lag the bytes that arrived.
    disk_write_rate: int | None = None
    #: A partial body unused this long is closed (its map recorded).
    idle_rest: float = 5.0
    #: A body used this recently is not evicted (it is probably still being read).
    eviction_grace: float = 2.0

    #: Size probes and the size log.
    sizes: SizeConfig = field(default_factory=SizeConfig)
