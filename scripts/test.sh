#!/usr/bin/env bash
# The README's test command: sets up, then runs ruff, mypy and pytest (extra arguments go
# to pytest). Runs all three even when one fails; exits non-zero if any of them failed.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh || exit $?

failed=()
echo "== ruff check"
.venv/bin/ruff check || failed+=(ruff)
echo "== mypy"
.venv/bin/mypy || failed+=(mypy)
echo "== pytest"
.venv/bin/pytest "$@" || failed+=("pytest (exit $?)")

if ((${#failed[@]})); then
    echo "test.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
