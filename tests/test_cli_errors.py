"""The `agentdistill` command facing a user's mistakes: one line that names the problem, never a traceback.

Every case runs the real console script in a subprocess, as a user would. The only thing faked is the
network: `HF_HUB_OFFLINE=1` stands for a machine that cannot reach the Hugging Face hub.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _agentdistill(*argv: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("agentdistill")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "agentdistill.cli"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([*command, *argv], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=environment)


def _one_line_error(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The single stderr line of a refused command (exit 1, no traceback), without its prefix."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"agentdistill {command}: "), result.stderr
    return lines[0].removeprefix(f"agentdistill {command}: ")


def _usage_error(result: subprocess.CompletedProcess[str], command: str) -> str:
    """argparse's refusal of a malformed argument: usage, then one error line, exit 2."""
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"agentdistill {command}: error: "), result.stderr
    return last


def test_an_unknown_env_id_suggests_the_close_ones(tmp_path: Path) -> None:
    message = _one_line_error(
        _agentdistill("rollout", "--env", "AgentQA-Hotpot-v0", "--policy", "expert", "--episodes", "2",
                      "--out", str(tmp_path / "t.jsonl")),
        "rollout",
    )
    assert "unknown env id 'AgentQA-Hotpot-v0'" in message and "did you mean 'AgentQA-HotpotQA-v0'" in message
    assert not (tmp_path / "t.jsonl").exists()


def test_an_unknown_env_argument_lists_the_valid_ones(tmp_path: Path) -> None:
    message = _one_line_error(
        _agentdistill("rollout", "--env", "AgentQA-Synthetic-v0", "--policy", "expert", "--episodes", "2",
                      "--env-arg", "min_hop=1", "--out", str(tmp_path / "t.jsonl")),
        "rollout",
    )
    assert "takes no argument 'min_hop' (did you mean 'min_hops'?)" in message
    assert "max_hops" in message and "num_distractors" in message


def test_a_model_that_does_not_exist_says_so_before_anything_loads(tmp_path: Path) -> None:
    missing = tmp_path / "students" / "tiny"
    message = _one_line_error(
        _agentdistill("eval", "--policy", f"hf:{missing}", "--tasks", "AgentMath-Synthetic-v0", "--limit", "2",
                      "--out", str(tmp_path / "eval")),
        "eval",
    )
    assert f"model '{missing}': no such file or directory" in message
    assert not (tmp_path / "eval").exists()
    # A relative path shaped like a hub id: the message says that neither a directory nor the hub had it.
    message = _one_line_error(
        _agentdistill("rollout", "--env", "AgentMath-Synthetic-v0", "--policy", "hf:students/tiny",
                      "--episodes", "1", "--out", str(tmp_path / "t.jsonl"), cwd=tmp_path, timeout=300),
        "rollout",
    )
    assert "'students/tiny' is not a local directory, and the Hugging Face hub did not provide it" in message


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["rollout", "--env", "AgentMath-Synthetic-v0", "--policy", "expert", "--episodes", "2", "--out", "t.jsonl",
          "--sag", "-1"], "--sag: expected 0 (SAG off) or a number of candidates >= 2, got -1"),
        (["eval", "--policy", "expert", "--out", "o", "--sag", "1"], "--sag: expected 0 (SAG off) or a number"),
        (["serve-retriever", "--corpus", "c.jsonl", "--port", "70000"], "--port: expected a port number between 1 and 65535"),
        (["show", "t.jsonl", "--limit", "0"], "--limit: expected a positive integer, got 0"),
        (["rollout", "--env", "AgentMath-Synthetic-v0", "--policy", "expert", "--episodes", "0", "--out", "t.jsonl"],
         "--episodes: expected a positive integer, got 0"),
        (["rollout", "--env", "AgentMath-Synthetic-v0", "--policy", "expert", "--episodes", "2", "--out", "t.jsonl",
          "--top-p", "1.5"], "--top-p: expected a top-p in (0, 1], got 1.5"),
    ],
)
def test_malformed_arguments_are_refused_by_the_parser(tmp_path: Path, argv: list[str], expected: str) -> None:
    assert expected in _usage_error(_agentdistill(*argv, cwd=tmp_path), argv[0])
    assert list(tmp_path.iterdir()) == []


def test_index_build_checks_the_corpus_before_loading_an_encoder(tmp_path: Path) -> None:
    started = time.monotonic()
    message = _one_line_error(
        _agentdistill("index", "build", "--corpus", str(tmp_path / "wiki.jsonl"), "--encoder", "no/such-encoder",
                      "--out", str(tmp_path / "index")),
        "index build",
    )
    assert f"corpus '{tmp_path / 'wiki.jsonl'}' does not exist" in message
    assert time.monotonic() - started < 60 and not (tmp_path / "index").exists()


def test_missing_input_files_are_named(tmp_path: Path) -> None:
    message = _one_line_error(
        _agentdistill("distill", "--trajectories", "teacher.jsonl", "--student", "scratch:tiny", "--out", "s", cwd=tmp_path),
        "distill",
    )
    assert message == f"trajectory file 'teacher.jsonl' does not exist (relative paths are read from {tmp_path})"
    assert _one_line_error(_agentdistill("show", "t.jsonl", cwd=tmp_path), "show").startswith("trajectory file 't.jsonl'")


def test_a_bad_experiment_config_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "eval.yaml"
    config.write_text("kind: eval\npolicy: expert\ntasks: [AgentMath-Synthetic-v0]\nlimt: 3\nout: o\n")
    message = _one_line_error(_agentdistill("run", str(config), "--dry-run"), "run")
    assert "'limt'" in message and str(config) in message


def test_debug_shows_the_traceback_before_or_after_the_command(tmp_path: Path) -> None:
    for argv in (["--debug", "show", "t.jsonl"], ["show", "t.jsonl", "--debug"]):
        result = _agentdistill(*argv, cwd=tmp_path)
        assert result.returncode == 1 and "Traceback (most recent call last)" in result.stderr
        assert "UserError: trajectory file 't.jsonl' does not exist" in result.stderr


def test_ctrl_c_keeps_the_finished_episodes_and_says_how_to_resume(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    script = Path(sys.executable).with_name("agentdistill")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "agentdistill.cli"]
    process = subprocess.Popen(
        # far more episodes than run before the signal, however fast the machine (expert episodes take milliseconds)
        [*command, "rollout", "--env", "AgentMath-Synthetic-v0", "--policy", "expert", "--episodes", "100000",
         "--num-envs", "2", "--out", str(out), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # as from a terminal: a shell without job control starts background commands (`nohup pytest ... &`) with
        # SIGINT ignored, and a child inherits that, so the signal would never reach the command under test
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 3):
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    kept = out.read_bytes().count(b"\n")
    assert 3 <= kept < 100000
    assert f"agentdistill rollout: interrupted; {kept} finished episodes are kept in {out}; run the same command again" in stderr
    resumed = _agentdistill("rollout", "--env", "AgentMath-Synthetic-v0", "--policy", "expert", "--episodes", "20",
                            "--num-envs", "2", "--out", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["skipped (already in the file)"] == min(kept, 20)


def test_a_settings_file_that_is_not_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "teacher.jsonl").write_text("")
    (tmp_path / "sft.yaml").write_text("learning_rate: 1e-4\nlora_target_modules: [q_proj\nepochs: 2\n")
    message = _one_line_error(
        _agentdistill("distill", "--trajectories", "teacher.jsonl", "--student", "scratch:tiny", "--out", "s",
                      "--config", "sft.yaml", cwd=tmp_path),
        "distill",
    )
    assert message.startswith("sft.yaml: not valid YAML (line 3, column 7): ")
    assert not (tmp_path / "s").exists()


def test_index_build_checks_the_corpus_format_before_loading_an_encoder(tmp_path: Path) -> None:
    (tmp_path / "notes.jsonl").write_text("not a corpus\n")
    message = _one_line_error(
        _agentdistill("index", "build", "--corpus", "notes.jsonl", "--encoder", "no/such-encoder", "--out", "index",
                      cwd=tmp_path),
        "index build",
    )
    assert message.startswith("notes.jsonl: starts with 'n', not JSON or JSON Lines")
    assert not (tmp_path / "index").exists()
