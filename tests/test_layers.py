"""The package's layering (the import-linter contracts in pyproject.toml) holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from importlinter import cli

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_layers_import_one_way(capsys: pytest.CaptureFixture[str]) -> None:
    os.chdir(REPO_ROOT)
    code = cli.lint_imports(
        config_filename=str(REPO_ROOT / "pyproject.toml"), no_cache=True, no_logo=True
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "0 broken" in out, out
