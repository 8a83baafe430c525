"""The paper's training schedule and CoT settings in the shipped configs, and ``protocol: paper`` in the cot kind.

The configs are the repository's own files, loaded as ``agentdistill run`` loads them; the cot experiment runs
end to end on this CPU with the scripted expert as teacher and a scratch student, asked with the paper's
prompt files from ../shared/data.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agentdistill.distill.sft.settings import SFTSettings
from agentdistill.envs.paper.prompts import PaperPrompts
from agentdistill.experiments import ConfigError, load_experiment, run_experiment
from agentdistill.rollouts.records import read_trajectories
from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[2]
PROMPTS_DIR = SHARED_DATA / "agent-distillation" / "prompts"
TINY_SFT = REPO / "configs" / "distill" / "sft_cpu_tiny.yaml"


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Configs name paths relative to the repository root, where users run them."""
    monkeypatch.chdir(REPO)


def test_the_paper_schedule_is_linear_decay_without_warmup() -> None:
    settings = SFTSettings.from_yaml(REPO / "configs" / "distill" / "sft_paper.yaml")
    assert (settings.lr_scheduler, settings.warmup_ratio, settings.weight_decay, settings.max_grad_norm) == (
        "linear", 0.0, 0.0, 1.0,
    )
    assert (settings.learning_rate, settings.epochs, settings.max_length, settings.seed) == (2e-4, 2.0, 10240, 42)


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "paper").glob("sft_*.yaml")), ids=lambda p: p.stem)
def test_every_agent_sft_config_trains_on_the_papers_schedule(path: Path, in_repo: None) -> None:
    config = load_experiment(path.relative_to(REPO)).config
    settings = config.settings
    assert (settings.lr_scheduler, settings.warmup_ratio, settings.max_length) == ("linear", 0.0, 10240)
    assert settings.per_device_batch_size * settings.gradient_accumulation_steps * config.num_processes == 8


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "paper").glob("cot*.yaml")), ids=lambda p: p.stem)
def test_every_cot_config_uses_the_papers_cot_settings(path: Path, in_repo: None) -> None:
    config = load_experiment(path.relative_to(REPO)).config
    for section in (config.collect, config.eval):
        if section is not None:
            assert (section.sampling.max_new_tokens, section.sampling.stop, section.sampling.temperature) == (
                4096, (), 0.0,
            )
    if config.train is not None:
        settings = config.train.settings
        assert (settings.lr_scheduler, settings.warmup_ratio, settings.max_length) == ("linear", 0.0, 4096)
        assert settings.per_device_batch_size == 2
        assert settings.per_device_batch_size * settings.gradient_accumulation_steps * config.train.num_processes == 8


def test_a_cot_config_of_the_papers_protocol_is_checked(tmp_path: Path) -> None:
    config = tmp_path / "cot.yaml"
    body = "kind: cot\nout: o\neval: {policy: expert, tasks: [AgentMath-Synthetic-v0], limit: 1}\nprotocol: paper\n"
    config.write_text(body)
    with pytest.raises(ConfigError, match="protocol: paper needs prompts_dir"):
        load_experiment(config)
    config.write_text(body + f"prompts_dir: {tmp_path}\n")
    with pytest.raises(ConfigError, match="lacks code_agent.yaml, teacher_model.yaml"):
        run_experiment(config, dry_run=True, write=lambda text: None)
    config.write_text(body + f"prompts_dir: {PROMPTS_DIR}\n")
    plan = run_experiment(config, dry_run=True, write=lambda text: None)
    assert plan.steps[0][0] == f"Protocol paper: the paper's CoT prompt and <answer> tags, the paper's prompts from {PROMPTS_DIR}"
    assert plan.warnings == ["eval.sampling.max_new_tokens is 2048; the paper's CoT runs used 4096"]


def test_a_cot_experiment_of_the_papers_protocol_collects_trains_and_evaluates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HOME": str(tmp_path / "home")}.items():
        monkeypatch.setenv(key, value)
    config = tmp_path / "cot.yaml"
    config.write_text(f"""
kind: cot
out: {tmp_path / 'cot'}
protocol: paper
prompts_dir: {PROMPTS_DIR}
collect:
  policy: expert
  tasks: [{{env: AgentMath-Synthetic-v0, name: math, episodes: 4, env_args: {{split: train}}}}]
  sampling: {{max_new_tokens: 4096}}
train:
  student: scratch:tiny
  settings: {{base: {TINY_SFT}, max_steps: 2}}
eval:
  tasks: [AgentMath-Synthetic-v0]
  env_args: {{split: test}}
  limit: 2
  sampling: {{max_new_tokens: 32}}  # a scratch student writes nothing worth 4,096 tokens
""")
    printed: list[str] = []
    plan = run_experiment(config, write=printed.append)
    assert [warning for warning in plan.warnings if "max_new_tokens" in warning] == [
        "eval.sampling.max_new_tokens is 32; the paper's CoT runs used 4096"
    ]
    teacher = PaperPrompts.load(PROMPTS_DIR).teacher_system_prompt
    answers = list(read_trajectories(tmp_path / "cot" / "answers" / "math.jsonl"))
    assert len(answers) == 4 and all(record["score"] == 1.0 for record in answers)
    assert all(record["messages"][0]["content"] == teacher and record["run"]["protocol"] == "paper" for record in answers)
    assert "4 correct chain-of-thought answers to train on" in "".join(printed)
    assert (tmp_path / "cot" / "student" / "model.safetensors").exists()
    evaluated = list(read_trajectories(tmp_path / "cot" / "eval" / "cot" / "AgentMath-Synthetic-v0.jsonl"))
    assert len(evaluated) == 2 and all(record["run"]["protocol"] == "paper" for record in evaluated)
