"""The commands that talk to a running mount: status, refresh, prefetch."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mkwfs.cli.messages import EXIT_FAILED, EXIT_OK
from mkwfs.cli.parser import (
    mountpoint_path,
)
from mkwfs.fuse import control
from mkwfs.fuse.checks import (
    StartupError,
)
from mkwfs.remote.errors import (
    ConfigError,
)


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _ago(when: float | None, now: float) -> str:
    if when is None:
        return "never"
    return f"{max(0.0, now - when):.0f} s ago"


def _format_status(state: Mapping[str, Any]) -> str:
    now = time.time()
    api, cache = state["api"], state["cache"]
    started = dt.datetime.fromtimestamp(state["mounted_at"]).isoformat(timespec="seconds")
    profile = f" (profile {state['profile']})" if state.get("profile") else ""
    reach = "reachable" if api["reachable"] else f"NOT reachable: {api['error']}"
    stale = state.get("stale") or {}
    offline = state.get("offline") or {}
    if offline.get("offline"):
        since = dt.datetime.fromtimestamp(offline["since"]).isoformat(timespec="seconds")
        reach += (
            f"; OFFLINE since {since} ({_ago(offline['since'], now)}): serving the listings "
            f"and files on disk ({stale.get('served', 0)} stale answers)"
        )
    elif stale.get("serving"):
        reach += (
            f"; serving cached listings since {_ago(stale['since'], now)} "
            f"({stale['served']} stale answers)"
        )
    requests = api["requests"]
    by_kind = ", ".join(f"{k} {v}" for k, v in sorted(requests.items()))
    failures = api["failures"]
    errors = (
        ", ".join(f"{k} x{v}" for k, v in sorted(failures.items()))
        + f"; last {_ago(api['last_failure'], now)}: {api['last_error']}"
        if failures
        else "none"
    )
    return "\n".join([
        f"mount:     {state['mountpoint']} (mkwfs {state['version']}, pid {state['pid']}, "
        f"since {started})",
        f"server:    {state['api_url']}{profile}: {reach}",
        f"requests:  {sum(requests.values())} ({by_kind or 'none'}), "
        f"{human_size(api['bytes_received'])} received; "
        f"last success {_ago(api['last_success'], now)}",
        f"counted:   {api.get('counted_downloads', 0)} body GETs and HEADs, which a server "
        "may count as downloads",
        f"errors:    {errors}",
        f"cache:     {cache['dir']}: {human_size(cache['cached_bytes'])} "
        f"({'of ' + human_size(cache['max_bytes']) if cache['max_bytes'] else 'no bound'}); "
        f"{cache['transfers']} downloads "
        f"({cache['failed_transfers']} failed, {human_size(cache['bytes_received'])}), "
        f"{cache['reads']} reads",
    ])  # fmt: skip


def status(args: argparse.Namespace) -> int:
    mountpoint = mountpoint_path(args.mountpoint)
    state = control.request(mountpoint, {"command": "status"})
    print(json.dumps(state, indent=2) if args.json else _format_status(state))
    return EXIT_OK if state["api"]["reachable"] else EXIT_FAILED


def refresh(args: argparse.Namespace) -> int:
    mountpoint = mountpoint_path(args.mountpoint)
    message: dict[str, Any] = {"command": "refresh"}
    if args.path is not None:
        path = Path(os.path.abspath(mountpoint / args.path))
        if path != mountpoint and mountpoint not in path.parents:
            raise ConfigError(f"{args.path} is not inside {mountpoint}")
        if not control.is_served(mountpoint):
            raise control.ControlError(f"no mkwfs daemon serves {mountpoint}")
        try:
            message["inode"] = os.stat(path).st_ino
        except OSError as exc:
            raise StartupError(f"{path}: {exc.strerror}") from exc
    control.request(mountpoint, message)
    return EXIT_OK


def prefetch_files(args: argparse.Namespace) -> int:
    """``mkwfs prefetch``: one line per failure on stderr, the summary on stdout; exit 1
    when anything failed."""
    from mkwfs.cli.prefetch import prefetch

    result = prefetch(args.paths, jobs=args.jobs)
    for path, error in result.failures:
        print(f"mkwfs: {_printable(path)}: {error}", file=sys.stderr)
    where = ", ".join(_printable(root) for root in result.roots)
    print(
        f"prefetched {result.files} files ({human_size(result.bytes)}) into the cache of "
        f"{where}: {result.fetched} fetched, {result.cached} already cached, "
        f"{len(result.failures)} failed"
    )
    return EXIT_FAILED if result.failures else EXIT_OK


def _printable(path: Path) -> str:
    """A path as a terminal can show it: bytes that are no UTF-8 escaped."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
