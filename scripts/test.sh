#!/usr/bin/env bash
# Sets up the project on a fresh machine that has only Python 3.11, then runs the tests.
#   bash scripts/test.sh            # the whole suite
#   bash scripts/test.sh -k sandbox # pytest arguments pass through
# The virtual environment lives in .venv (ignored by git); it is re-installed only when setup.cfg or
# pyproject.toml change, so the second run starts testing at once.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.installed-$(cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # torch comes first, pinned to the local CPU wheel, so that no dependency pulls a multi-GB CUDA build.
    "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
    "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi

exec "$VENV/bin/python" -m pytest "$@"
