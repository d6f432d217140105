"""Command line: argv, environment and config file -> Config; the commands; errors -> one
line on stderr and an exit code.

Exit codes: 0 done; 1 failed (a startup check, the server, the mount, or ``status`` found
the server out of reach); 2 bad usage or configuration (options, environment, config file).

The rooms: ``parser`` (the commands and their options), ``daemon`` (serving a mount, in
the foreground or as a daemon), ``running`` (status, refresh, prefetch on a running mount),
``login`` (login, logout), ``messages`` (errors -> lines and exit codes), ``fstab`` (the
mount(8) helper).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mkwfs.cli.daemon import run_daemon, run_exec_foreground, run_foreground, spawn_daemon
from mkwfs.cli.messages import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from mkwfs.cli.parser import (
    DEMO_NAMES,
    MOUNT_NAMES,
    build_parser,
    flags_of,
    mountpoint_path,
)
from mkwfs.config import (
    Config,
    Setting,
    default_cache_dir,
    describe,
    resolve,
)
from mkwfs.fuse.checks import (
    NO_FUSERMOUNT,
    StartupError,
    check_allow_other,
    check_fuse,
    check_mountpoint,
    mounted_type,
)
from mkwfs.remote.errors import (
    ConfigError,
    MkwfsError,
)

#: How long ``mkwfs umount`` waits for the daemon to exit after the unmount.
DAEMON_EXIT_TIMEOUT = 15.0


def _mount_settings(
    args: argparse.Namespace, names: Sequence[str], *, demo: bool = False
) -> tuple[dict[str, Setting], tuple[str, ...]]:
    settings, fuse_options = resolve(
        flags=flags_of(args, names),
        raw_options=args.raw_options,
        env=os.environ,
        names=names,
        use_file=not demo,
    )
    if demo and "cache_dir" not in settings:
        settings["cache_dir"] = Setting(default_cache_dir("mkwfs-demo"), "default")
    return settings, fuse_options


def _config_from_args(args: argparse.Namespace) -> Config:
    """The mount's Config from the command line, the environment and the config file."""
    demo = args.command == "demo"
    settings, fuse_options = _mount_settings(args, DEMO_NAMES if demo else MOUNT_NAMES, demo=demo)
    extra: dict[str, Any] = {}
    if demo:
        extra = {"demo": True, "demo_big_file_size": args.big_file_size}
    return Config.from_settings(mountpoint_path(args.mountpoint), settings, fuse_options, **extra)


def _startup_checks(config: Config) -> None:
    """What can be checked before the daemon starts; raises ``StartupError``."""
    check_mountpoint(config.mountpoint)
    check_fuse()
    if config.allow_other:
        check_allow_other()


def _mount(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    _startup_checks(config)
    if config.foreground:
        return run_foreground(config)
    return spawn_daemon(config)


def _umount(args: argparse.Namespace) -> int:
    mountpoint = mountpoint_path(args.mountpoint)
    if mounted_type(mountpoint) is None:
        raise StartupError(f"{mountpoint} is not mounted")
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        raise StartupError(NO_FUSERMOUNT)
    flags = "-uz" if args.lazy else "-u"
    result = subprocess.run(
        [tool, flags, str(mountpoint)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"
        hint = "; close what uses it, or use --lazy" if "busy" in detail.lower() else ""
        raise StartupError(f"cannot unmount {mountpoint}: {detail}{hint}")
    from mkwfs.fuse import control

    deadline = time.monotonic() + DAEMON_EXIT_TIMEOUT
    while control.is_served(mountpoint) and time.monotonic() < deadline:
        time.sleep(0.05)
    return EXIT_OK


def _show_config(args: argparse.Namespace) -> int:
    settings, fuse_options = _mount_settings(args, MOUNT_NAMES)
    settings.setdefault("cache_dir", Setting(default_cache_dir(), "default"))
    rows = describe(settings, MOUNT_NAMES)
    if args.mountpoint is not None:
        rows.insert(0, ("mountpoint", str(mountpoint_path(args.mountpoint)), "argument"))
    if fuse_options:
        rows.append(("fuse options", ",".join(fuse_options), "-o"))
    width = max(len(name) for name, _, _ in rows)
    value_width = min(48, max(len(value) for _, value, _ in rows))
    for name, value, source in rows:
        print(f"{name:<{width}}  {value:<{value_width}}  ({source})")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from mkwfs.cli.running import status

    return status(args)


def _refresh(args: argparse.Namespace) -> int:
    from mkwfs.cli.running import refresh

    return refresh(args)


def _prefetch(args: argparse.Namespace) -> int:
    from mkwfs.cli.running import prefetch_files

    return prefetch_files(args)


def _login(args: argparse.Namespace) -> int:
    from mkwfs.cli.login import login

    return login(args)


def _logout(args: argparse.Namespace) -> int:
    from mkwfs.cli.login import logout

    return logout(args)


_COMMANDS: Mapping[str, Callable[[argparse.Namespace], int]] = {
    "mount": _mount,
    "demo": _mount,
    "umount": _umount,
    "status": _status,
    "refresh": _refresh,
    "prefetch": _prefetch,
    "login": _login,
    "logout": _logout,
    "config": _show_config,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "_serve":
        if args.config_fd is not None:
            return run_exec_foreground(args.config_fd)
        return run_daemon(args.ready_fd)
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"mkwfs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MkwfsError as exc:
        print(f"mkwfs: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
