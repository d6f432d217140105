"""Mounting: pyfuse3 init/main/close around a Tree, signals, readiness.

``serve`` checks the API first (so a wrong URL or token fails before anything is mounted),
mounts, reports readiness, and serves until the filesystem is unmounted (``fusermount3 -u``)
or the process gets SIGTERM/SIGINT, after which it unmounts. SIGHUP drops cached listings.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

import httpx
import pyfuse3
import trio

from mkwfs.api import ApiClient
from mkwfs.config import Config
from mkwfs.content import ContentStore
from mkwfs.errors import MkwfsError
from mkwfs.fs import MkwfsOperations
from mkwfs.tree import Tree

log = logging.getLogger(__name__)


class MountError(MkwfsError):
    """The kernel would not mount the filesystem."""


def _mount_options(config: Config) -> set[str]:
    return set(pyfuse3.default_options) | {"fsname=mkwfs", "subtype=mkwfs", "ro"}


def open_http_client() -> httpx.AsyncClient:
    """One pooled client for the whole mount."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(30.0, connect=10.0),
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        headers={"User-Agent": "mkwfs"},
    )


async def _handle_signals(tree: Tree) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("SIGHUP: dropping cached listings")
                tree.invalidate()
            else:
                log.info("%s: unmounting", signal.Signals(signum).name)
                pyfuse3.terminate()


async def serve(config: Config, on_ready: Callable[[], None] = lambda: None) -> None:
    """Mount ``config.mountpoint`` and serve it until unmounted or signalled."""
    config.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    async with open_http_client() as http:
        api = ApiClient(http, config.api_url, config.credentials)
        builds = await api.list_builds()
        async with trio.open_nursery() as nursery:
            content = ContentStore(api, config.cache_dir, nursery)
            tree = Tree(api, content, dir_ttl=config.dir_ttl, attr_ttl=config.attr_ttl)
            tree.seed_builds(builds)
            try:
                pyfuse3.init(
                    MkwfsOperations(tree), os.fspath(config.mountpoint), _mount_options(config)
                )
            except RuntimeError as exc:
                raise MountError(
                    f"cannot mount {config.mountpoint}: {exc} "
                    "(is it already mounted, or is /dev/fuse missing?)"
                ) from exc
            try:
                nursery.start_soon(_handle_signals, tree)
                log.info("mounted %s on %s", config.api_url, config.mountpoint)
                on_ready()
                await pyfuse3.main()
            finally:
                pyfuse3.close(unmount=True)
                nursery.cancel_scope.cancel()
    log.info("unmounted %s", config.mountpoint)
