#!/usr/bin/env bash
# Sourced by scripts/test.sh and scripts/quickstart.sh: creates .venv on a fresh machine that has only
# Python 3.11 and installs the CPU build of torch and the package with its test dependencies.
# The virtual environment is re-installed only when setup.cfg or pyproject.toml change, so a second run
# starts at once. Both scripts share it (one install, the same stamp).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.installed-$(cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
    echo "setting up $VENV (first run only: a few minutes)" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # torch comes first, pinned to the local CPU wheel, so that no dependency pulls a multi-GB CUDA build.
    "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
    "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi
