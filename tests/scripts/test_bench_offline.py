"""scripts/bench_offline.py starts and explains itself. Timings never go into tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_offline.py"


def test_offline_bench_help_names_its_figures() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--runs" in result.stdout and "issue 14" in result.stdout
