"""The package's layering (the import-linter contracts in pyproject.toml) holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# In a process of its own: import-linter's command configures logging with dictConfig,
# which would disable the loggers of the modules this test process has imported.
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def test_layers_import_one_way() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LINT, "--no-cache", "--config", str(REPO_ROOT / "pyproject.toml")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout, done.stdout
