#!/usr/bin/env bash
# The README's first command: sets up the project on a fresh machine that has only Python 3.11
# (scripts/setup.sh, shared with the tests), then runs `agentdistill quickstart` into runs/quickstart.
#   bash scripts/quickstart.sh                  # the full run (a rerun resumes)
#   bash scripts/quickstart.sh --quick          # the plumbing check CI runs, in about a minute
#   bash scripts/quickstart.sh --out DIR        # arguments pass through to `agentdistill quickstart`
set -euo pipefail
source "$(dirname "$0")/setup.sh"
OUT=runs/quickstart
for argument in "$@"; do
    case "$argument" in
        --out|--out=*) OUT="" ;;
        --quick) OUT="${OUT:+runs/quickstart-quick}" ;;  # its own directory: a run refuses other settings
    esac
done
exec "$VENV/bin/agentdistill" quickstart ${OUT:+--out "$OUT"} "$@"
