"""``python -m mkwfs.emulator``: serve an emulator until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Sequence
from typing import Any

from mkwfs.emulator.app import Emulator
from mkwfs.emulator.config import EmulatorConfig
from mkwfs.emulator.server import serve_in_thread


def main(argv: Sequence[str] | None = None) -> int:
    """Serve an emulator until SIGINT or SIGTERM; print its URL, credentials and a token."""
    parser = _parser()
    args = parser.parse_args(argv)
    config = config_from(args)
    emulator = Emulator(config)
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    # Blocked before the server threads start, so they inherit the mask and sigwait sees them.
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    with serve_in_thread(emulator, args.host, args.port) as url:
        print(f"MKWFS_API_URL={url}")
        print(f"MKWFS_EMAIL={config.email}")
        print(f"MKWFS_PASSWORD={config.password}")
        print(f"MKWFS_TOKEN={emulator.issue_token()}", flush=True)
        signal.sigwait(stop_signals)
    return 0


def config_from(args: argparse.Namespace) -> EmulatorConfig:
    """The `EmulatorConfig` that parsed command-line ``args`` ask for."""
    return EmulatorConfig(
        seed=args.seed,
        big_file_size=args.big_file_size,
        extra_builds=args.extra_builds,
        embed_downloads=not args.no_embedded_downloads,
        downloads_per_build=args.downloads_per_build,
        page_size=args.page_size,
        head=not args.no_head,
        ranges=not args.no_ranges,
        content_length=not args.no_content_length,
        throttle=args.throttle,
        token_lifetime=args.token_lifetime,
        latency=args.latency,
        jitter=args.jitter,
        fail_rate=args.fail_rate,
        drop_after=args.drop_after,
        reset_after=args.reset_after,
        stall_after=args.stall_after,
        stall_seconds=args.stall_seconds,
        malformed_json=args.malformed_json,
        **_feathers_fields(args),
    )


def _feathers_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The fields of the Feathers 5 behaviours the command line asks for."""
    return {
        "page_max": args.page_max, "head_405": args.head_405, "head_counts": args.head_counts,
        "send_buffer": args.send_buffer, "etags": args.etags,
        "unsatisfiable_status": 500 if args.unsatisfiable_500 else 416,
        "burst_bytes": args.burst_bytes, "burst_pause": args.burst_pause,
        "login_token_copy": args.login_token_copy, "login_validation": args.login_validation,
    }  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mkwfs.emulator", description="Serve the MetaKraftwerk API emulator."
    )
    defaults = EmulatorConfig()
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--big-file-size", type=int, default=defaults.big_file_size,
                        metavar="BYTES")  # fmt: skip
    parser.add_argument("--extra-builds", type=int, default=0, metavar="N",
                        help="add N finished builds (a dataset for benchmarks)")  # fmt: skip
    parser.add_argument("--downloads-per-build", type=int, default=defaults.downloads_per_build,
                        metavar="M", help="... of M small downloads each")  # fmt: skip
    parser.add_argument("--no-embedded-downloads", action="store_true",
                        help="build objects without their downloads")  # fmt: skip
    parser.add_argument("--no-head", action="store_true", help="answer HEAD with 405")
    parser.add_argument("--no-ranges", action="store_true", help="ignore Range headers")
    parser.add_argument("--no-content-length", action="store_true",
                        help="send download bodies chunked")  # fmt: skip
    parser.add_argument("--page-size", type=int, metavar="N", help="paginate lists")
    parser.add_argument("--throttle", type=int, metavar="BPS", help="bytes per second")
    _add_feathers(parser.add_argument_group("Feathers 5 + Express"))
    _add_faults(parser.add_argument_group("faults"), defaults)
    return parser


def _add_feathers(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--page-max", type=int, metavar="N",
                       help="cap $limit at N (default: --page-size)")  # fmt: skip
    group.add_argument("--head-405", action="store_true",
                       help="HEAD: 405 before authentication (Feathers <= 5.0.49)")  # fmt: skip
    group.add_argument("--head-counts", action="store_true",
                       help="count a HEAD of a body as a download (Feathers 5.0.50)")  # fmt: skip
    group.add_argument("--send-buffer", action="store_true",
                       help="res.send(buffer): Range ignored, files read whole")  # fmt: skip
    group.add_argument("--etags", action="store_true",
                       help="weak ETags on lists and gets, 304 on If-None-Match")  # fmt: skip
    group.add_argument("--unsatisfiable-500", action="store_true",
                       help="answer an unsatisfiable Range 500 GeneralError, not 416")  # fmt: skip
    group.add_argument("--burst-bytes", type=int, metavar="BYTES",
                       help="send bodies in bursts of BYTES ...")  # fmt: skip
    group.add_argument("--burst-pause", type=float, default=0.0, metavar="SECONDS",
                       help="... with this pause between bursts")  # fmt: skip
    group.add_argument("--login-token-copy", action="store_true",
                       help="repeat the accessToken inside the login's authentication")  # fmt: skip
    group.add_argument("--login-validation", action="store_true",
                       help="answer a login without email or password 400, not 401")  # fmt: skip


def _add_faults(faults: argparse._ArgumentGroup, defaults: EmulatorConfig) -> None:
    faults.add_argument("--token-lifetime", type=float, default=defaults.token_lifetime,
                        metavar="SECONDS", help="how long a login's token is valid")  # fmt: skip
    faults.add_argument("--latency", type=float, default=0.0, metavar="SECONDS",
                        help="delay before every response")  # fmt: skip
    faults.add_argument("--jitter", type=float, default=0.0, metavar="SECONDS",
                        help="plus a random delay of up to this (seeded)")  # fmt: skip
    faults.add_argument("--fail-rate", type=float, default=0.0, metavar="P",
                        help="answer this share of requests with 500/502/503/504 "
                        "(JSON, HTML or empty bodies)")  # fmt: skip
    faults.add_argument("--drop-after", type=int, metavar="BYTES",
                        help="close each download's connection after BYTES of body")  # fmt: skip
    faults.add_argument("--reset-after", type=int, metavar="BYTES",
                        help="reset each download's connection after BYTES of body")  # fmt: skip
    faults.add_argument("--stall-after", type=int, metavar="BYTES",
                        help="stop sending each download's body after this many bytes")  # fmt: skip
    faults.add_argument("--stall-seconds", type=float, metavar="SECONDS",
                        help="for this long (default: until the server stops)")  # fmt: skip
    faults.add_argument("--malformed-json", action="store_true",
                        help="cut the JSON of list and get answers in half")  # fmt: skip
