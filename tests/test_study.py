"""``agentdistill study``: every method present in the results at smoke size, a rerun resumes cell by cell, and
settings that cannot make a study are named. Real envs, the real scripted teacher, real tiny students, real TRL
training; nothing is learnt at this size (the full study's figures are in the README)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentdistill.study.cells import cells_of
from agentdistill.study.settings import METHODS, StudySettings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("study") / "run"
    command = [sys.executable, "-m", "agentdistill.cli", "study", "--quick", "--out", str(out), "--no-progress"]
    environment = {"WANDB_MODE": "disabled", "PATH": "/usr/bin:/bin", "HOME": str(out.parent)}
    first = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO, env=environment)
    assert first.returncode == 0, first.stderr[-3000:]
    begun = time.perf_counter()
    second = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO, env=environment)
    return {"out": out, "first": first, "second": second, "rerun_s": time.perf_counter() - begun}


def test_every_method_is_in_the_results_with_rows_and_a_summary(quick_study: dict[str, Any]) -> None:
    out: Path = quick_study["out"]
    results = json.loads((out / "results.json").read_text())
    assert {row["method"] for row in results["rows"]} == set(METHODS)
    assert {row["env"] for row in results["rows"]} == {"AgentQA-Synthetic-v0", "AgentMath-Synthetic-v0"}
    for row in results["rows"]:
        assert 0.0 <= row["success_rate"] <= 1.0 and row["episodes"] == StudySettings.quick().eval_tasks
        assert (row["invalid_action_rate"] is None) == row["method"].startswith("cot")
    summary = {(entry["method"], entry["student"], entry["env"]) for entry in results["summary"]}
    assert len(summary) == len(results["rows"])  # one seed at smoke size
    assert ("agent_opd", "wider", "AgentMath-Synthetic-v0") not in summary, (
        "the largest student teaches, it is not taught"
    )
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| agent_sag | tiny |" in (out / "results.md").read_text()
    assert "| method | student |" in quick_study["first"].stdout


def test_a_training_step_of_a_cell_is_one_batch_without_recomputation(quick_study: dict[str, Any]) -> None:
    """The students are tiny and train on CPU: no gradient accumulation (a step would be several batches) and no
    activation checkpointing (it recomputes the forward pass for nothing here); both are SFT defaults for 7B."""
    paths = sorted((quick_study["out"] / "cells").glob("*/*/seed-*/model*/sft_settings.yaml"))
    assert paths, "the quick study trains students"
    for path in paths:
        settings = yaml.safe_load(path.read_text())
        assert settings["gradient_accumulation_steps"] == 1 and settings["gradient_checkpointing"] is False, path


def test_a_student_warms_up_without_the_system_prompt_then_trains_as_it_acts(quick_study: dict[str, Any]) -> None:
    """Stage 1 drops the system prompt (the same in every row, it only multiplies a step's tokens); stage 2 starts
    from stage 1 and trains on the conversations exactly as the student sees them."""
    model = quick_study["out"] / "cells" / "agent" / "tiny" / "seed-0" / "model"
    warmup = model.with_name("model_warmup")
    first_roles = {
        stage: {json.loads(line)["messages"][0]["role"] for line in (path / "sft_data.jsonl").open()}
        for stage, path in (("warmup", warmup), ("final", model))
    }
    assert first_roles == {"warmup": {"user"}, "final": {"system"}}
    assert json.loads((model / "sft_result.json").read_text())["base_model"] == str(warmup)


def test_a_rerun_resumes_every_finished_cell(quick_study: dict[str, Any]) -> None:
    assert quick_study["second"].returncode == 0, quick_study["second"].stderr[-3000:]
    timings = json.loads((quick_study["out"] / "results.json").read_text())["timings_s"]
    assert all(seconds < 2.0 for label, seconds in timings.items() if " / " in label), timings


def test_cells_run_after_the_cells_they_build_on() -> None:
    cells = cells_of(StudySettings(seeds=(0, 1)))
    methods = [cell.method for cell in cells]
    assert methods.index("agent") < methods.index("agent_sag") < methods.index("agent_opd")
    assert sum(cell.method == "agent_opd" for cell in cells) == 2  # the smaller student, two seeds
    assert len(cells) == 5 * 2 * 2 + 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"methods": ["agent", "rl"]}, "methods must be among cot, cot_rag"),
        ({"seeds": []}, "at least one student and one seed"),
        ({"rl_group_size": 1}, "rl_group_size must be at least 2"),
        ({"sag_n": 1}, "sag_n must be at least 2"),
        ({"eval_tasks": 0}, "eval_tasks must be positive"),
        ({"seeds": ["x"]}, "setting 'seeds' expects tuple\\[int, ...\\]"),
    ],
)
def test_settings_that_cannot_make_a_study_are_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StudySettings.from_mapping(changes)


def test_the_shipped_study_config_loads() -> None:
    settings = StudySettings.from_yaml(REPO / "configs" / "study" / "study.yaml")
    assert set(settings.methods) == set(METHODS) and len(settings.students) == 2 and len(settings.seeds) >= 2
