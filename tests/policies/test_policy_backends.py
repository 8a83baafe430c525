"""The table of policy backends: a backend added to a copy of it is parsed and built, each entry matches the
builder it names, and reading specs imports no backend.

The added backend is a real module (``tests/policies/answering_backend.py``) whose policy plays a real episode.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agentdistill.policies import POLICY_BACKENDS, POLICY_KINDS, PolicySpec, make_policy, parse_policy_spec
from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts
from agentdistill.rollouts.records import read_trajectories
from tests.policies.answering_backend import BACKEND, AnsweringPolicy

WITH_ANSWERS = (*POLICY_BACKENDS, BACKEND)
PACKAGE_SYNTAXES = "'expert', 'hf:PATH[@ADAPTER]', 'vllm:MODEL[@LORA]' or 'openai:URL#MODEL'"


def test_a_backend_added_to_a_copied_table_is_parsed_and_built(tmp_path: Path) -> None:
    assert parse_policy_spec("answer:1234", WITH_ANSWERS) == PolicySpec(kind="answer", model="1234")
    policy = make_policy("answer:1234", backends=WITH_ANSWERS, thought="The sum is known.")
    assert isinstance(policy, AnsweringPolicy) and (policy.answer, policy.thought) == ("1234", "The sum is known.")
    envs = make_rollout_envs("AgentMath-Synthetic-v0", 1)
    try:
        run_rollouts(envs, policy, env_id="AgentMath-Synthetic-v0", task_indices=[0], out=str(tmp_path / "t.jsonl"),
                     progress=False)
    finally:
        envs.close()
    (record,) = read_trajectories(tmp_path / "t.jsonl")
    assert record["policy"] == "answer:1234" and record["terminated"] and record["num_steps"] == 1
    assert record["messages"][2]["content"].startswith("Thought: The sum is known.")


def test_the_package_table_is_unchanged_and_errors_list_the_table_in_use() -> None:
    assert POLICY_KINDS == ("expert", "hf", "vllm", "openai")
    expected = re.escape(f"unknown policy 'answer:1234'; expected {PACKAGE_SYNTAXES}")
    with pytest.raises(ValueError, match=f"^{expected}$"):
        parse_policy_spec("answer:1234")
    with pytest.raises(ValueError, match=r"^unknown policy 'answer:'; expected .*'openai:URL#MODEL' or 'answer:TEXT'$"):
        make_policy("answer:", backends=WITH_ANSWERS)


@pytest.mark.parametrize("backend", POLICY_BACKENDS, ids=lambda backend: backend.kind)
def test_each_entry_feeds_its_builder_arguments_it_takes_from_fields_a_spec_has(backend) -> None:
    parameters = inspect.signature(backend.load_builder()).parameters
    fields = {field.name for field in dataclasses.fields(PolicySpec)}
    assert set(backend.spec_arguments) <= set(parameters) and set(backend.spec_arguments.values()) <= fields
    assert backend.syntax.split(":")[0] == backend.kind


def test_reading_specs_imports_no_backend() -> None:
    code = (
        "import sys\n"
        "from agentdistill.policies import parse_policy_spec\n"
        "for spec in ('expert:0.2', 'hf:m@a', 'vllm:m@l', 'openai:http://127.0.0.1:9/v1#m'):\n"
        "    parse_policy_spec(spec)\n"
        "print(sorted(name for name in ('torch', 'transformers', 'vllm', 'agentdistill.policies.hf',\n"
        "                               'agentdistill.policies.vllm', 'agentdistill.policies.expert') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
