"""`agentdistill quickstart`: the shortened (--quick) run as a user starts it, its outputs, and its resumption.

The quick variant checks the plumbing of every phase (teacher rollouts with FTP, filtering, a scratch student,
TRL SFT with W&B offline, held-out evaluation greedy and with SAG, results and chart), not learning: the full
run is what the README reports. One quick run is shared by the tests of this module (about a minute).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agentdistill.distill.sft.settings import SFTSettings
from agentdistill.quickstart import (
    ENV_IDS,
    POLICY_KEYS,
    QUICKSTART_SFT,
    QUICKSTART_SFT_WARMUP,
    QuickstartSettings,
    describe_tasks,
    run_quickstart,
)
from agentdistill.rollouts.records import read_trajectories

REPO = Path(__file__).resolve().parents[1]


def _command() -> list[str]:
    script = Path(sys.executable).with_name("agentdistill")
    return [str(script)] if script.exists() else [sys.executable, "-m", "agentdistill.cli"]


def _readme_script_shares_this_venv() -> bool:
    """Whether these tests run in the repository's ``.venv``, the one ``scripts/quickstart.sh`` sets up and uses.

    Under ``bash scripts/test.sh`` (and so in CI) they do, and the first run goes through the README's first
    command itself; from another environment the script would install a second copy, so the CLI is used.
    """
    return Path(sys.prefix).resolve() == (REPO / ".venv").resolve()


def _run_cli(out: Path, *, through_script: bool = False) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline"}
    arguments = ["--quick", "--out", str(out), "--no-progress"]
    command = ["bash", str(REPO / "scripts" / "quickstart.sh")] if through_script else [*_command(), "quickstart"]
    return subprocess.run(
        [*command, *arguments], capture_output=True, text=True, timeout=300, env=environment, cwd=REPO, check=False
    )


def _mtimes(directory: Path) -> dict[str, float]:
    return {str(path.relative_to(directory)): path.stat().st_mtime for path in directory.rglob("*") if path.is_file()}


def _settled_mtimes(directory: Path, *, quiet_s: float = 2.0, within_s: float = 60.0) -> dict[str, float]:
    """``_mtimes`` once nothing in ``directory`` has changed for ``quiet_s``.

    W&B's detached ``wandb-core`` service outlives the run that started it and writes its own log a few seconds
    later; a snapshot taken before that would blame the rerun for a write it did not make.
    """
    deadline = time.monotonic() + within_s
    before = _mtimes(directory)
    while True:
        time.sleep(quiet_s)
        after = _mtimes(directory)
        if after == before or time.monotonic() > deadline:
            return after
        before = after


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One quick run, then a rerun into the same directory (which must resume, not redo)."""
    out = tmp_path_factory.mktemp("quickstart") / "run"
    first = _run_cli(out, through_script=_readme_script_shares_this_venv())
    assert first.returncode == 0, f"quickstart failed:\nSTDOUT:\n{first.stdout}\nSTDERR:\n{first.stderr[-4000:]}"
    results_before = json.loads((out / "results.json").read_text())
    student_before = _settled_mtimes(out / "student")
    assert (out / "student_warmup" / "sft_result.json").is_file()
    teacher_before = _mtimes(out / "teacher")
    eval_sizes = {str(path): path.stat().st_size for path in (out / "eval").rglob("*.jsonl")}
    time.sleep(1.1)  # mtimes of a rewrite would differ
    second = _run_cli(out)
    assert second.returncode == 0, f"rerun failed:\nSTDOUT:\n{second.stdout}\nSTDERR:\n{second.stderr[-4000:]}"
    return {
        "out": out,
        "first": first,
        "second": second,
        "results_before": results_before,
        "student_before": student_before,
        "teacher_before": teacher_before,
        "eval_sizes": eval_sizes,
    }


def test_results_json_has_the_three_rows_as_fractions(quick_run: dict[str, Any]) -> None:
    results = json.loads((quick_run["out"] / "results.json").read_text())
    for key in POLICY_KEYS:
        row = results[key]
        assert 0.0 <= row["success_rate"] <= 1.0
        assert 0.0 <= row["invalid_action_rate"] <= 1.0
        assert 1.0 <= row["mean_steps"] <= 5.0  # every episode takes at least one step, at most max_steps
        assert set(row["per_env"]) == set(ENV_IDS)
        assert row["episodes"] == 2 * QuickstartSettings.quick().eval_episodes
    # The scripted teacher solves every held-out task without a bad action: a real check of the env, the
    # rollout loop and the scoring, not only of the file's shape.
    assert results["teacher"]["success_rate"] == 1.0
    assert results["teacher"]["invalid_action_rate"] == 0.0
    assert results["student_sag"]["sag_n"] == QuickstartSettings.quick().sag_n
    assert results["quick"] is True
    quick = QuickstartSettings.quick()
    assert [stage["name"] for stage in results["sft_stages"]] == ["student_warmup", "student"]
    assert [stage["steps"] for stage in results["sft_stages"]] == [quick.sft_warmup.max_steps, quick.sft.max_steps]
    assert set(results["timings_s"]) >= {"teacher_rollouts_s", "student_sft_s", "evaluation_s", "total_s"}


def test_the_table_is_printed_with_the_tasks_difficulty(quick_run: dict[str, Any]) -> None:
    stdout = quick_run["first"].stdout
    for label in ("teacher (scripted expert)", "student, greedy", "student + SAG (N=2)"):
        assert label in stdout
    assert describe_tasks(QuickstartSettings.quick()) in stdout
    assert "--policy hf:" in stdout


def test_chart_and_wandb_offline_run_are_written_under_out(quick_run: dict[str, Any]) -> None:
    out: Path = quick_run["out"]
    chart = out / "results.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000
    run_dirs = [Path(path) for path in json.loads((out / "results.json").read_text())["wandb_run_dirs"]]
    assert len(run_dirs) == 2  # one per SFT stage
    for run_dir in run_dirs:
        assert run_dir.is_dir() and out in run_dir.parents
        assert run_dir.name.startswith("offline-run-")
        assert list(run_dir.glob("*.wandb")), f"no W&B log in {run_dir}"
        assert str(run_dir) in quick_run["first"].stdout


def test_teacher_data_uses_ftp_and_evaluation_uses_held_out_tasks(quick_run: dict[str, Any]) -> None:
    out: Path = quick_run["out"]
    settings = QuickstartSettings.quick()
    rows = [json.loads(line) for line in (out / "sft_data.jsonl").read_text().splitlines()]
    trained_prompts = {row["messages"][0]["content"] for row in rows}
    assert len(trained_prompts) == 2  # one short prompt per env
    for env_id in ENV_IDS:
        prefixes = json.loads((out / "teacher" / f"{env_id}.ftp.json").read_text())
        teacher = list(read_trajectories(out / "teacher" / f"{env_id}.jsonl"))
        assert len(teacher) == settings.teacher_episodes(env_id)
        for record in teacher:
            first_turn = next(m["content"] for m in record["messages"] if m["role"] == "assistant")
            assert first_turn.startswith(f"Thought: {prefixes[record['task_id']]}")
        held_out = list(read_trajectories(out / "eval" / "student" / "trajectories" / f"{env_id}.jsonl"))
        assert len(held_out) == settings.eval_episodes
        assert not {r["task_id"] for r in held_out} & {r["task_id"] for r in teacher}
        # the student runs with the short system prompt it was trained with (not the teacher's long one)
        assert held_out[0]["messages"][0]["content"] in trained_prompts
        assert held_out[0]["messages"][0]["content"] != teacher[0]["messages"][0]["content"]


def test_rerun_resumes_without_retraining_or_rerunning(quick_run: dict[str, Any]) -> None:
    out: Path = quick_run["out"]
    assert "student already trained" in quick_run["second"].stderr
    assert "student_warmup already trained" in quick_run["second"].stderr
    assert _mtimes(out / "student") == quick_run["student_before"]
    assert _mtimes(out / "teacher") == quick_run["teacher_before"]
    assert {str(p): p.stat().st_size for p in (out / "eval").rglob("*.jsonl")} == quick_run["eval_sizes"]
    after = json.loads((out / "results.json").read_text())
    for key in POLICY_KEYS:
        assert after[key] == quick_run["results_before"][key]
    assert not any(stage["trained_now"] for stage in after["sft_stages"])


def test_other_settings_in_the_same_directory_are_refused(quick_run: dict[str, Any]) -> None:
    quick = QuickstartSettings.quick()
    other = dataclasses.replace(quick, eval_episodes=quick.eval_episodes + 1)
    with pytest.raises(ValueError, match="made with other settings"):
        run_quickstart(quick_run["out"], settings=other, progress=False)


def test_the_sft_yamls_are_the_quickstart_recipe() -> None:
    assert SFTSettings.from_yaml(REPO / "configs/distill/sft_quickstart_warmup.yaml") == QUICKSTART_SFT_WARMUP
    assert SFTSettings.from_yaml(REPO / "configs/distill/sft_quickstart.yaml") == QUICKSTART_SFT


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"qa_teacher_episodes": 0}, "qa_teacher_episodes must be a positive int"),
        ({"eval_episodes": 2.5}, "eval_episodes must be a positive int"),
        ({"sag_n": 1}, "sag_n must be an int >= 2"),
    ],
)
def test_bad_settings_are_rejected(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QuickstartSettings(**change)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"qa_difficulty": {"min_hops": 3, "max_hops": 1}}, ValueError, "got min_hops=3, max_hops=1"),
        ({"math_difficulty": {"max_op": 2}}, ValueError, r"unknown argument\(s\) \['max_op'\]"),
        ({"math_difficulty": {"min_ops": "1"}}, TypeError, "min_ops must be an int"),
    ],
)
def test_bad_difficulty_is_rejected_before_any_work(change: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        QuickstartSettings(**change)
