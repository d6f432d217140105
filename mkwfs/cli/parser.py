"""The command line's parser: every command, its arguments, and the options of `config.OPTIONS`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from mkwfs import __version__
from mkwfs.config import (
    DEFAULT_DEMO_BIG_FILE_SIZE,
    OPTION_BY_NAME,
    options_of,
)

MOUNT_NAMES = [o.name for o in options_of("file", "server", "mount")]


DEMO_NAMES = [o.name for o in options_of("mount")]


LOGIN_NAMES = [o.name for o in options_of("file", "server")]


FILE_NAMES = [o.name for o in options_of("file")]


def _add_options(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    for name in names:
        option = OPTION_BY_NAME[name]
        where = f"env {option.variable}"
        if option.in_file:
            where += f", config key {name}"
        text = f"{option.help} ({where}; default: {option.default_text or 'none'})"
        if option.metavar is None:
            parser.add_argument(
                option.flag, dest=name, action=argparse.BooleanOptionalAction, help=text
            )
        else:
            parser.add_argument(option.flag, dest=name, metavar=option.metavar, help=text)


def _add_raw_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        dest="raw_options",
        action="append",
        default=[],
        metavar="OPT[,OPT...]",
        help="options as in fstab: any long option as foo_bar=VALUE (or a switch as foo_bar), "
        "mount(8) options such as noauto or _netdev are ignored, anything else goes to "
        "FUSE as a raw mount option",
    )


#: ``command(name, help, description="")``: a new subcommand's parser.
_Command = Callable[..., argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mkwfs",
        description="Mount MetaKraftwerk build results as a read-only filesystem.",
        epilog="Exit codes: 0 done, 1 failed, 2 bad usage or configuration. "
        "`mkwfs COMMAND --help` explains each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"mkwfs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str = "") -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=description or help)

    for add in _COMMANDS:
        add(command)
    serve = commands.add_parser("_serve")  # internal: the daemon, or a foreground mount
    outcome = serve.add_mutually_exclusive_group(required=True)
    outcome.add_argument("--ready-fd", type=int)  # the daemon: config on stdin
    outcome.add_argument("--config-fd", type=int)  # in the foreground: config on this fd
    serve.add_argument("mountpoint", nargs="?")
    return parser


def _mount_command(command: _Command) -> None:
    """Add ``mkwfs mount`` and its arguments."""
    parser = command(
        "mount",
        "mount the MetaKraftwerk API at MOUNTPOINT",
        "Mount the MetaKraftwerk API at MOUNTPOINT and return once it is ready (the daemon "
        "keeps serving in the background), or serve in the foreground with --foreground. "
        "Every option can also be set as MKWFS_* variable and in the config file; "
        "precedence: flags, -o, environment, config file profile, config file, defaults.",
    )
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing empty directory")
    _add_options(parser, MOUNT_NAMES)
    _add_raw_options(parser)


def _umount_command(command: _Command) -> None:
    """Add ``mkwfs umount`` and its arguments."""
    parser = command("umount", "unmount a mounted mkwfs (the daemon then exits)")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", help="where mkwfs is mounted")
    parser.add_argument(
        "-z", "--lazy", action="store_true", help="detach now even if busy (fusermount3 -uz)"
    )


def _demo_command(command: _Command) -> None:
    """Add ``mkwfs demo`` and its arguments."""
    parser = command(
        "demo",
        "mount a built-in emulator of the API with sample builds",
        "Start the built-in emulator of the API on 127.0.0.1 (in the daemon) and mount it; "
        "no credentials needed. The config file is not read.",
    )
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing empty directory")
    _add_options(parser, DEMO_NAMES)
    _add_raw_options(parser)
    parser.add_argument(
        "--big-file-size",
        type=int,
        default=DEFAULT_DEMO_BIG_FILE_SIZE,
        help="size in bytes of the demo's big ZIP in build 5141 (default %(default)s)",
    )


def _status_command(command: _Command) -> None:
    """Add ``mkwfs status`` and its arguments."""
    parser = command(
        "status",
        "show a mount's state: server reachable or not, requests, bytes, errors, cache use",
        "Ask the daemon of MOUNTPOINT for its state; it asks the server for the builds to "
        "tell whether it is reachable. Exit 0 when it is, 1 when not or nothing is mounted.",
    )
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", help="where mkwfs is mounted")
    parser.add_argument("--json", action="store_true", help="print the state as JSON")


def _refresh_command(command: _Command) -> None:
    """Add ``mkwfs refresh`` and its arguments."""
    parser = command(
        "refresh",
        "drop a mount's cached listings now",
        "Drop the cached listings of the mount at MOUNTPOINT (the same as sending SIGHUP to "
        "its daemon), so the next access asks the server. With PATH (inside the mount), "
        "only the listings PATH and what is below it show (a build's files, a project's "
        "builds) and the kernel's cached attributes of PATH.",
    )
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", help="where mkwfs is mounted")
    parser.add_argument("path", metavar="PATH", nargs="?", help="a directory or file in it")


def _prefetch_command(command: _Command) -> None:
    """Add ``mkwfs prefetch`` and its arguments."""
    parser = command(
        "prefetch",
        "download files into the cache for offline use",
        "Have the daemon of the mount fetch every file at or under each PATH (on an mkwfs "
        "mount) into its cache, each once, without reading it through the mount; shows a "
        "progress bar on a terminal, one line per file that failed, and a summary. Exit 1 "
        "when any file failed.",
    )
    parser.add_argument(
        "paths", metavar="PATH", nargs="+", type=Path, help="a file or directory on the mount"
    )
    parser.add_argument(
        "-j", "--jobs", type=int, default=16,
        help="files downloaded at once, at most (default %(default)s)",
    )  # fmt: skip


def _login_command(command: _Command) -> None:
    """Add ``mkwfs login`` and its arguments."""
    parser = command(
        "login",
        "check credentials and keep a token for later mounts",
        "Log in with --email and a password (from --password-file, MKWFS_PASSWORD, or a "
        "prompt), or check a token (--token-file, MKWFS_TOKEN); then keep the token, mode "
        "0600, in $XDG_CONFIG_HOME/mkwfs/token (token.PROFILE with --profile), where mount "
        "finds it when it is given no other credentials.",
    )
    _add_options(parser, LOGIN_NAMES)


def _logout_command(command: _Command) -> None:
    """Add ``mkwfs logout`` and its arguments."""
    parser = command("logout", "forget the token mkwfs login kept")
    _add_options(parser, FILE_NAMES)


def _config_command(command: _Command) -> None:
    """Add ``mkwfs config`` and its arguments."""
    parser = command(
        "config",
        "show the effective settings, secrets masked",
        "Show each setting mount would use with these options, and where it comes from.",
    )
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", nargs="?", help="shown if given")
    _add_options(parser, MOUNT_NAMES)
    _add_raw_options(parser)


_COMMANDS: tuple[Callable[[_Command], None], ...] = (
    _mount_command,
    _umount_command,
    _demo_command,
    _status_command,
    _refresh_command,
    _prefetch_command,
    _login_command,
    _logout_command,
    _config_command,
)


def mountpoint_path(argument: str) -> Path:
    """A mount point as the mount table shows it: absolute, symbolic links resolved."""
    return Path(os.path.realpath(argument))


def flags_of(args: argparse.Namespace, names: Sequence[str]) -> dict[str, object]:
    return {name: getattr(args, name, None) for name in names}
