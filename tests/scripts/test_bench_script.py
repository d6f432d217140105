"""The benchmark scripts start and explain themselves. Timings never go into tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"
SMALLFILES = BENCH.with_name("bench_smallfiles.py")
OFFLINE = BENCH.with_name("bench_offline.py")


def run_script(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``script`` with ``args``, by this interpreter; its output captured."""
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bench_help_lists_its_options() -> None:
    result = run_script(BENCH, "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--quick", "--api-url", "--token-file", "--big-file", "--step-timeout"):
        assert option in result.stdout


def test_smallfiles_bench_help_lists_its_figures() -> None:
    result = run_script(SMALLFILES, "--help")
    assert result.returncode == 0, result.stderr
    for word in ("--runs", "--only", "--profile", "curl,rclone,mkwfs,prefetch"):
        assert word in result.stdout


def test_smallfiles_bench_refuses_an_unknown_figure() -> None:
    result = run_script(SMALLFILES, "--only", "mkwfs,nonsense")
    assert result.returncode == 2
    assert "nonsense" in result.stderr


def test_offline_bench_help_names_its_figures() -> None:
    result = run_script(OFFLINE, "--help")
    assert result.returncode == 0, result.stderr
    assert "--runs" in result.stdout and "issue 14" in result.stdout
