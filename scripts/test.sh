#!/usr/bin/env bash
# Sets up the project on a fresh machine that has only Python 3.11 (scripts/setup.sh), then runs the tests.
#   bash scripts/test.sh            # the whole suite
#   bash scripts/test.sh -k sandbox # pytest arguments pass through
set -euo pipefail
source "$(dirname "$0")/setup.sh"
exec "$VENV/bin/python" -m pytest "$@"
