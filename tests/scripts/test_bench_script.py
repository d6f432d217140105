"""scripts/bench.py starts and explains itself. Timings never go into tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"


def test_bench_help_lists_its_options() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for option in ("--quick", "--api-url", "--token-file", "--big-file", "--step-timeout"):
        assert option in result.stdout


SMALLFILES = BENCH.with_name("bench_smallfiles.py")


def test_smallfiles_bench_help_lists_its_figures() -> None:
    result = subprocess.run(
        [sys.executable, str(SMALLFILES), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for word in ("--runs", "--only", "--profile", "curl,rclone,mkwfs,prefetch"):
        assert word in result.stdout


def test_smallfiles_bench_refuses_an_unknown_figure() -> None:
    result = subprocess.run(
        [sys.executable, str(SMALLFILES), "--only", "mkwfs,nonsense"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "nonsense" in result.stderr
