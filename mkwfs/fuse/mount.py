"""Mounting: pyfuse3 init/main/close around a Tree, the control socket, signals, readiness.

``serve`` claims the mount point's control socket (so a second mkwfs on the same mount point
is refused), opens the listings kept on disk (``<cache>/catalog.db``), checks the API (so a
wrong URL or token fails before anything is mounted; a server out of reach mounts offline
from the listings kept, and the mount goes online by itself once the server answers),
mounts, reports readiness (to its caller, and to systemd over ``$NOTIFY_SOCKET``), and
serves until the filesystem is unmounted (``fusermount3 -u``) or the process gets
SIGTERM/SIGINT, after which it unmounts. Downloads in progress are cut off there; what
arrived stays in the content cache and the next read resumes it.

SIGHUP, like ``mkwfs refresh``, drops the cached listings and the kernel's cached
attributes, so the next access asks the server again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyfuse3
import trio
from pyfuse3 import InodeT

from mkwfs import __version__
from mkwfs.catalog.listings import Catalog
from mkwfs.catalog.sizes import SizeConfig
from mkwfs.catalog.sqlite import open_sqlite_store
from mkwfs.catalog.store import FactStore
from mkwfs.config import Config
from mkwfs.content.config import ContentConfig
from mkwfs.content.store import ContentStore, open_content_store
from mkwfs.fuse.checks import mount_entry
from mkwfs.fuse.control import SendProgress, serve_control
from mkwfs.fuse.fs import MkwfsOperations
from mkwfs.fuse.prefetch import answer_prefetch
from mkwfs.remote.api import ApiClient
from mkwfs.remote.client import open_http_client
from mkwfs.remote.errors import MkwfsError
from mkwfs.tree.tree import BUILDS_INODE, ROOT_INODE, Tree

log = logging.getLogger(__name__)

#: Seconds ``mkwfs status`` waits for the server to answer its check.
STATUS_CHECK_TIMEOUT = 10.0
#: Seconds between two checks whether the server answers again, while offline.
RECONNECT_INTERVAL = 5.0


class MountError(MkwfsError):
    """The kernel would not mount the filesystem."""


#: FUSE options that let users other than the one who mounted into the mount.
_OTHER_USERS = frozenset({"allow_other", "allow_root"})


def _mount_options(config: Config) -> set[str]:
    """The kernel's mount options. Whenever other users may enter the mount (``--allow-other``
    or a raw ``allow_root``), ``default_permissions`` makes the kernel apply the modes, so
    nobody reads what the modes deny them."""
    options = set(pyfuse3.default_options) | {"fsname=mkwfs", "subtype=mkwfs", "ro"}
    options |= set(config.fuse_options)
    if config.allow_other:
        options.add("allow_other")
    if options & _OTHER_USERS:
        options.add("default_permissions")
    return options


def notify_systemd(state: str) -> None:
    """Tell systemd ``state`` (``READY=1``, ``STOPPING=1``) when it asked to be told
    (``Type=notify`` sets ``$NOTIFY_SOCKET``); otherwise do nothing. Never raises."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return
    target = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), target)
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", path, exc)


class _Mount:
    """One mounted filesystem: what the control socket and signals act on."""

    def __init__(self, config: Config, api: ApiClient, content: ContentStore, tree: Tree):
        self.config = config
        self.api = api
        self.content = content
        self.tree = tree
        self.mounted_at = time.time()

    async def refresh(self, inodes: list[int], below: int | None = None) -> None:
        """Drop the cached listings (all, or those of the node ``below`` and what is under
        it), and the kernel's attributes and data of ``inodes`` (from a thread: the kernel
        may wait for a request this thread has to answer)."""
        self.tree.invalidate(below)
        for ino in inodes:
            try:
                await trio.to_thread.run_sync(pyfuse3.invalidate_inode, InodeT(ino), False)
            except OSError as exc:  # ENOENT: the kernel does not know it; nothing cached
                log.debug("invalidate inode %d: %s", ino, exc)
        log.info("dropped cached listings")

    async def handle(self, request: dict[str, Any], send: SendProgress) -> dict[str, Any]:
        """Answer a control request: ``status``, ``refresh`` (optional ``inode``), or
        ``prefetch`` (see ``mkwfs.fuse.prefetch``)."""
        match request.get("command"):
            case "status":
                return await self.status()
            case "refresh":
                inode = request.get("inode")
                if isinstance(inode, int) and inode > 0:
                    await self.refresh([ROOT_INODE, BUILDS_INODE, inode], below=inode)
                else:
                    await self.refresh([ROOT_INODE, BUILDS_INODE])
                return {"refreshed": True}
            case "prefetch":
                return await answer_prefetch(self.tree, self.content, request, send)
            case other:
                return {"error": f"unknown command {other!r}"}

    async def status(self) -> dict[str, Any]:
        """The mount's state and counters, after asking the server for the builds now."""
        checked = time.time()
        try:
            with trio.fail_after(STATUS_CHECK_TIMEOUT):
                await self.tree.catalog.check()
            api_error = None
        except MkwfsError as exc:
            api_error = str(exc)
        except trio.TooSlowError:
            api_error = f"no answer within {STATUS_CHECK_TIMEOUT:.0f} s"
        stats = self.api.stats
        staleness = self.tree.staleness
        return {
            "mountpoint": str(self.config.mountpoint),
            "pid": os.getpid(),
            "version": __version__,
            "api_url": self.config.api_url,
            "profile": self.config.profile,
            "mounted_at": self.mounted_at,
            "api": {
                "reachable": api_error is None,
                "error": api_error,
                "checked_at": checked,
                "requests": dict(self.api.requests),
                # What a server that counts HEADs too may have counted in `downloaded`.
                "counted_downloads": self.api.requests["GET /api/v1/downloads/:id"]
                + self.api.requests["HEAD /api/v1/downloads/:id"],
                "bytes_received": stats.bytes_received,
                "failures": dict(stats.failures),
                "last_success": stats.last_success,
                "last_failure": stats.last_failure,
                "last_error": stats.last_error,
            },
            "offline": {
                "offline": staleness.offline,
                "since": staleness.offline_since,
            },
            "stale": {
                "serving": staleness.active,
                "since": staleness.since,
                "served": staleness.served,
                "last_error": staleness.last_error,
            },
            "cache": {
                "dir": str(self.config.cache_dir),
                "max_bytes": self.config.cache_max_size,
                **asdict(self.content.stats()),
            },
        }


async def _handle_signals(mount: _Mount) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("SIGHUP: dropping cached listings")
                await mount.refresh([ROOT_INODE, BUILDS_INODE])
            else:
                log.info("%s: unmounting", signal.Signals(signum).name)
                pyfuse3.terminate()


async def serve(config: Config, on_ready: Callable[[], None] = lambda: None) -> None:
    """Mount ``config.mountpoint`` and serve it until unmounted or signalled.

    Raises ``AlreadyServed`` when another mkwfs serves the mount point, the API's errors
    when the first listing of builds fails, ``MountError`` when the kernel refuses; in
    each case nothing is mounted. (A lone ``MkwfsError`` comes out of the task group
    bare, so callers can catch it.)
    """
    try:
        await _serve(config, on_ready)
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], MkwfsError):
            raise leaves[0] from group
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return leaves


async def _serve(config: Config, on_ready: Callable[[], None]) -> None:
    config.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    async with open_http_client() as http, trio.open_nursery() as nursery:
        api = ApiClient(http, config.api_url, config.credentials, heads=http.curl)
        mount: _Mount | None = None

        async def handle(request: dict[str, Any], send: SendProgress) -> dict[str, Any]:
            if mount is None:
                return {"error": "still starting"}
            return await mount.handle(request, send)

        await nursery.start(serve_control, config.mountpoint, handle)
        store = await nursery.start(_serve_store, config)
        content = await nursery.start(_serve_content, api, config)
        tree = Tree(
            api,
            content,
            dir_ttl=config.dir_ttl,
            attr_ttl=config.attr_ttl,
            timeout=config.timeout,
            size_probes=config.size_probes,
            store=store,
        )
        await tree.catalog.start(nursery)
        mount = _Mount(config, api, content, tree)
        initialized = trio.Event()
        operations = MkwfsOperations(
            tree, uid=config.uid, gid=config.gid, umask=config.umask, on_init=initialized.set
        )
        try:
            pyfuse3.init(
                operations,
                os.fspath(config.mountpoint),
                _mount_options(config),
            )
        except RuntimeError as exc:
            raise MountError(
                f"the kernel refused to mount {config.mountpoint}: {exc} "
                "(a -o option it does not know?)"
            ) from exc
        try:
            nursery.start_soon(_handle_signals, mount)
            nursery.start_soon(raise_readahead, config.mountpoint, initialized)
            nursery.start_soon(serve_memory_trim)
            nursery.start_soon(serve_reconnect, tree.catalog)
            log.info("mounted %s on %s", config.api_url, config.mountpoint)
            on_ready()
            notify_systemd(f"READY=1\nSTATUS=serving {config.api_url} on {config.mountpoint}")
            await pyfuse3.main()
        finally:
            notify_systemd("STOPPING=1")
            pyfuse3.close(unmount=True)
            nursery.cancel_scope.cancel()
    log.info("unmounted %s", config.mountpoint)


async def _serve_store(config: Config, *, task_status: trio.TaskStatus[FactStore]) -> None:
    """Keep the catalog's listings in the cache directory until the mount ends; then the
    last writes are made."""
    async with open_sqlite_store(config.cache_dir, config.api_url) as store:
        task_status.started(store)
        await trio.sleep_forever()


async def serve_reconnect(catalog: Catalog, interval: float = RECONNECT_INTERVAL) -> None:
    """While the mount is offline, ask the server every ``interval`` seconds whether it
    answers again (`Catalog.check`); when it does, the mount is online (new builds show)."""
    while True:
        await trio.sleep(interval)
        if catalog.staleness.offline:
            try:
                await catalog.check()
            except MkwfsError as exc:
                log.debug("still offline: %s", exc)


async def _serve_content(
    api: ApiClient, config: Config, *, task_status: trio.TaskStatus[ContentStore]
) -> None:
    """Run the content store until the mount ends; then what partial bodies hold is
    recorded, for the next mount to resume."""
    sizes = SizeConfig(probes=config.size_probes != "off")
    async with open_content_store(
        api,
        config.cache_dir,
        max_bytes=config.cache_max_size,
        stall_timeout=config.timeout,
        config=ContentConfig(sizes=sizes),
    ) as content:
        task_status.started(content)
        await trio.sleep_forever()


#: Seconds between two returns of freed memory to the system.
_TRIM_INTERVAL = 5.0
#: glibc's mallopt() parameters, and what they are set to: pieces of a body (up to 1 MiB)
#: come from the heap, and freed memory stays there for the next ones until the next trim.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 64 << 20


async def serve_memory_trim() -> None:
    """Keep the memory bodies pass through for the next bytes, and return the heap's free
    pages to the system now and then.

    Bodies pass through the daemon in pieces of up to 1 MiB. By default glibc gives each
    its own mapping, or gives the heap's top back as soon as it is free: every piece then
    costs fresh pages, and a cold read of 256 MiB took 23,000-35,000 page faults. With
    pieces taken from the heap and its top kept, it takes about 10,000, with 10-20% less
    CPU. glibc also keeps the holes pieces leave, and the resident size creeps up to several
    times what is held (the soak measured 4x): hence the trim every ``_TRIM_INTERVAL``
    seconds. glibc only; elsewhere this returns at once."""
    library = ctypes.util.find_library("c")
    libc = ctypes.CDLL(library) if library else None
    trim = getattr(libc, "malloc_trim", None)
    mallopt = getattr(libc, "mallopt", None)
    if trim is None or mallopt is None:
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    while True:
        await trio.sleep(_TRIM_INTERVAL)
        await trio.to_thread.run_sync(trim, 0)


#: The kernel's readahead for the mount. Larger is faster for sequential reads (1 MiB, FUSE's
#: largest request, was 15% faster than this here), but the kernel reads up to about twice
#: this past what a ZIP reader wants, which a ranged fetch of one member must then include.
READAHEAD_KB = 256


async def raise_readahead(mountpoint: Path, initialized: trio.Event) -> None:
    """Let the kernel read ahead ``READAHEAD_KB`` instead of its default 128 KiB, so that
    sequential reads come in larger requests: fewer round trips through the daemon.

    The setting is the mount's backing device's ``read_ahead_kb`` in sysfs, which only root
    may write; otherwise the default stays (the README says how to set it). The kernel caps
    it when it handles the answer to FUSE's INIT, so it is set once that answer is sent
    (``initialized`` is set just before). A file takes the setting when it is opened, so it
    is set at once, in this thread: a thread hop would let the first opens come first (seen
    as a cold read 15% slower on a fresh mount). The device comes from /proc/self/mountinfo,
    as a stat() of the mount point would be a request to this daemon.
    """
    await initialized.wait()
    try:
        _set_readahead(mountpoint)
    except OSError as exc:
        log.debug("kernel readahead left at its default: %s", exc)


def _set_readahead(mountpoint: Path) -> None:
    entry = mount_entry(mountpoint)
    if entry is not None:
        setting = Path("/sys/class/bdi", entry[0], "read_ahead_kb")
        if setting.read_text().strip() != str(READAHEAD_KB):
            setting.write_text(f"{READAHEAD_KB}\n")
