"""What a command costs before it does anything: the command line imports no heavy layer.

``mkwfs mount`` runs two interpreters (the command, then the daemon it starts without the
secret variables): the command must not import what only the daemon uses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: Imported by the daemon, and by the commands that talk to a server or a mount, only.
HEAVY = ("trio", "httpx", "pycurl", "pyfuse3", "tqdm", "mkwfs.emulator", "mkwfs.fuse.mount")


def _imported_by(code: str, cache: Path | None = None) -> list[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    env = {**os.environ, "MKWFS_CONFIG": os.devnull, "MKWFS_TOKEN": "not-a-token",
           "MKWFS_API_URL": "http://127.0.0.1:9"}  # fmt: skip
    if cache is not None:
        env["MKWFS_CACHE_DIR"] = str(cache)
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_the_command_line_imports_no_heavy_layer() -> None:
    assert _imported_by("import mkwfs.cli.main") == []


def test_mount_options_and_config_import_no_heavy_layer(tmp_path: Path) -> None:
    code = (
        "from mkwfs.cli.main import _config_from_args\n"
        "from mkwfs.cli.parser import build_parser\n"
        "args = build_parser().parse_args(['mount', '/tmp'])\n"
        "config = _config_from_args(args)\n"
        "assert config.token == 'not-a-token'\n"
    )
    assert _imported_by(code, tmp_path) == []


def test_the_probe_sees_heavy_imports() -> None:
    """The check above can fail: the daemon's module does import them."""
    assert "trio" in _imported_by("import mkwfs.fuse.mount")
