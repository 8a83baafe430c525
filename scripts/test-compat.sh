#!/usr/bin/env bash
# The compatibility run: the training tests again, in a second environment at the oldest versions the extras
# resolve to. vLLM's newest releases that TRL supports pin transformers below 5.18, so `pip install -e ".[vllm]"`
# gives transformers 5.17 where the main environment has the newest; training configs built with a keyword only a
# later transformers knows fail there before the first step. CI runs this after the main suite.
#   bash scripts/test-compat.sh            # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv-compat
PINS="transformers==5.17.*"
STAMP="$VENV/.installed-$( (cat setup.cfg pyproject.toml; echo "$PINS") | sha256sum | cut -c1-16)"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
    echo "setting up $VENV with $PINS (first run only)" >&2
    "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
    if ! { "$VENV/bin/python" -m pip install --quiet uv \
        && "$VENV/bin/python" -m uv pip install --python "$VENV/bin/python" --quiet --compile-bytecode -e ".[dev]" "$PINS"; }
    then
        "$VENV/bin/python" -m pip install --quiet -e ".[dev]" "$PINS"
    fi
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi
"$VENV/bin/python" -c "import transformers; print('compatibility run: transformers', transformers.__version__)"
exec "$VENV/bin/python" -m pytest tests/distill/test_sft.py tests/distill/test_grpo.py tests/distill/test_opd.py \
    tests/distill/test_importance.py tests/policies/test_hf_policy.py \
    tests/rollouts/test_hf_rollout.py "$@"
