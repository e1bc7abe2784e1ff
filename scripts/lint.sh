#!/usr/bin/env bash
# Lint and format check (ruff, configured in pyproject.toml); changes nothing.
# Fix with: ruff check --fix . && ruff format .   (or let pre-commit do it: pre-commit install)
set -uo pipefail
cd "$(dirname "$0")/.."
RUFF=${RUFF:-ruff}
command -v "$RUFF" >/dev/null 2>&1 || RUFF="python3 -m ruff"
status=0
$RUFF check . || status=1
$RUFF format --check . || status=1
exit $status
