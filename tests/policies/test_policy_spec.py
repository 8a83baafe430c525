"""Policy spec strings read without building anything (what config dry runs rely on)."""

from __future__ import annotations

import pytest

from agentdistill.policies import PolicySpec, make_policy, parse_policy_spec


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("expert", PolicySpec(kind="expert")),
        ("expert:0.3", PolicySpec(kind="expert", error_rate=0.3)),
        ("hf:students/tiny", PolicySpec(kind="hf", model="students/tiny")),
        ("hf:Qwen/Qwen2.5-1.5B-Instruct@runs/lora", PolicySpec(kind="hf", model="Qwen/Qwen2.5-1.5B-Instruct",
                                                               adapter="runs/lora")),
        ("vllm:Qwen/Qwen2.5-7B-Instruct@out/a",
         PolicySpec(kind="vllm", model="Qwen/Qwen2.5-7B-Instruct", adapter="out/a")),
        ("openai:http://localhost:8000/v1#Qwen/Qwen2.5-32B-Instruct",
         PolicySpec(kind="openai", model="Qwen/Qwen2.5-32B-Instruct", base_url="http://localhost:8000/v1")),
    ],
)
def test_specs_parse(spec: str, parsed: PolicySpec) -> None:
    assert parse_policy_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["gpt4", "hf:", "vllm", "openai:http://h:1/v1", "expert:lots"])
def test_malformed_specs_are_refused_by_name(spec: str) -> None:
    with pytest.raises(ValueError, match="policy"):
        parse_policy_spec(spec)
    with pytest.raises(ValueError):
        make_policy(spec)


def test_make_policy_builds_what_the_spec_names() -> None:
    assert make_policy("expert:0.25").error_rate == 0.25
