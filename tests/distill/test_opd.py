"""On-policy distillation: the teacher's scores, the per-token advantages, the command end to end, resume.

Teacher and student are TINY scratch models sharing one tokenizer: the teacher memorised the expert's episode of
task 0, the student is an untrained model of the same shape. The ``openai:`` teacher is served here by a real
HTTP server on 127.0.0.1 that scores with the real teacher model; only vLLM (which needs a CUDA machine) is
represented by stand-ins shaped like its output objects.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.distill.opd.rollouts import OPDRollouts
from agentdistill.distill.opd.settings import OPDResult, OPDSettings
from agentdistill.distill.opd.teachers import HFTeacher, OpenAITeacher, prompt_logprobs_of
from agentdistill.distill.opd.train import train_opd
from agentdistill.distill.opd.trainer import per_token_advantages
from agentdistill.distill.students import TINY, build_student, save_student, train_tokenizer
from agentdistill.errors import UserError
from agentdistill.policies.hf import HFPolicy
from tests.distill.memorised import memorise_expert_episode

ENV_ID = "AgentMath-Synthetic-v0"
REPO = Path(__file__).resolve().parents[2]
ENV_KWARGS = {"max_steps": 2, "prompt_variant": "short", "min_ops": 1, "max_ops": 1}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class Pair:
    teacher: Path
    student: Path
    episode: dict[str, Any]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    """A teacher that memorised the expert's episode of task 0, and an untrained student with its tokenizer."""
    base = tmp_path_factory.mktemp("opd-models")
    teacher, tokenizer, episode = memorise_expert_episode(base, ENV_ID, ENV_KWARGS, steps=100)
    save_student(build_student(tokenizer, TINY, seed=1), tokenizer, base / "untrained")
    return Pair(teacher=teacher, student=base / "untrained", episode=episode)


def settings(**changes: Any) -> OPDSettings:
    values: dict[str, Any] = {
        "env_kwargs": ENV_KWARGS, "teacher_prompt_variant": "short", "train_tasks": 2, "eval_tasks": 2,
        "num_envs": 4, "group_size": 2, "prompts_per_step": 2, "max_steps": 2, "learning_rate": 2e-3,
        "max_new_tokens": 48, "lora": False, "bf16": False, "save_steps": 1, "seed": 0, "wandb_project": None,
    }
    values.update(changes)
    return OPDSettings.from_mapping(values)


def direct_logprobs(model: Any, prompt: list[int], completion: list[int]) -> list[float]:
    """The completion's log-probabilities from one unpadded forward pass over the whole sequence."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[*prompt, *completion]])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return [float(logprobs[len(prompt) + k - 1, token]) for k, token in enumerate(completion)]


def scoring_items(pair: Pair) -> list[tuple[list[int], list[int]]]:
    ids = HFPolicy(str(pair.teacher)).prompt_ids
    from agentdistill.policies.base import PolicyRequest

    prompt = ids(PolicyRequest(messages=tuple(pair.episode["messages"][:2])))
    text = pair.episode["messages"][2]["content"]
    from transformers import AutoTokenizer

    completion = AutoTokenizer.from_pretrained(pair.teacher)(text, add_special_tokens=False)["input_ids"]
    return [(prompt, completion), (prompt[:7], completion[:5]), (prompt[3:], completion[:1])]


def test_the_hf_teacher_scores_each_token_as_an_unpadded_forward_pass_does(pair: Pair) -> None:
    teacher, _ = HFTeacher.load(str(pair.teacher), batch_size=3)
    teacher.chunk_tokens = 4  # several chunks per completion
    items = scoring_items(pair)
    scored = teacher.score(items)
    for (prompt, completion), values in zip(items, scored):
        assert values == pytest.approx(direct_logprobs(teacher.model, prompt, completion), abs=1e-4)
    assert [len(values) for values in scored] == [len(completion) for _, completion in items]


def test_advantages_are_teacher_minus_student_on_sampled_tokens_plus_the_weighted_env_advantage() -> None:
    teacher = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]])
    student = torch.tensor([[-2.0, -1.0, -3.0], [-1.5, -0.5, 0.0]])
    sampled = torch.tensor([[1, 0, 1], [1, 1, 0]])
    env = torch.tensor([0.5, -1.0])
    assert per_token_advantages(teacher, student, sampled, env, 0.0).tolist() == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    assert per_token_advantages(teacher, student, sampled, env, 2.0).tolist() == [[2.0, 0.0, 1.0], [-1.0, -2.0, 0.0]]


def test_prompt_logprobs_are_read_from_vllm_output() -> None:
    @dataclass
    class Logprob:  # stand-in for vllm.logprobs.Logprob
        logprob: float
        rank: int | None = None

    prompt_logprobs = [None, {7: Logprob(-0.5)}, {8: Logprob(-1.5), 9: Logprob(-0.1)}, {3: Logprob(-2.0)}]
    assert prompt_logprobs_of(prompt_logprobs, [1, 7, 8, 3], 2, where="vllm:m") == [-1.5, -2.0]
    with pytest.raises(RuntimeError, match="no log-probability for token 4 at position 3"):
        prompt_logprobs_of(prompt_logprobs, [1, 7, 8, 4], 2, where="vllm:m")
    with pytest.raises(RuntimeError, match="returned no prompt log-probabilities"):
        prompt_logprobs_of(None, [1, 2], 1, where="vllm:m")


class _CompletionsServer:
    """A completions endpoint on 127.0.0.1 that echoes the prompt's log-probabilities from a real model, or
    (``with_logprobs=False``) answers without them, as servers that cannot score prompts do."""

    def __init__(self, model: Any, *, with_logprobs: bool) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                ids = [int(token) for token in body["prompt"]]
                logprobs: dict[str, Any] | None = None
                if with_logprobs:
                    values = direct_logprobs(model, ids[:1], ids[1:])
                    logprobs = {"token_logprobs": [None, *values, -0.1], "tokens": []}
                payload = json.dumps({"choices": [{"text": "x", "logprobs": logprobs}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.requests: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_openai_teacher_scores_through_echoed_logprobs_and_names_a_server_that_gives_none(pair: Pair) -> None:
    teacher, _ = HFTeacher.load(str(pair.teacher))
    items = scoring_items(pair)
    server = _CompletionsServer(teacher.model, with_logprobs=True)
    try:
        remote = OpenAITeacher(server.url, "teacher")
        assert remote.score(items) == [pytest.approx(values, abs=1e-4) for values in teacher.score(items)]
        assert server.requests[0]["echo"] is True and server.requests[0]["prompt"] == [*items[0][0], *items[0][1]]
        remote.close()
    finally:
        server.close()
    silent = _CompletionsServer(teacher.model, with_logprobs=False)
    try:
        with pytest.raises(UserError, match="returned no log-probabilities for the prompt tokens"):
            OpenAITeacher(silent.url, "teacher").score(items[:1])
    finally:
        silent.close()


def test_the_teacher_reads_its_own_system_prompt_before_the_same_task(pair: Pair, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pair.teacher)
    full = OPDRollouts(ENV_ID, settings(teacher_prompt_variant="full"), tmp_path, teacher=f"hf:{pair.teacher}")
    short = OPDRollouts(ENV_ID, settings(), tmp_path, teacher=f"hf:{pair.teacher}")
    full_text = tokenizer.decode(full.teacher_prompt_ids(pair.episode, tokenizer))
    short_text = tokenizer.decode(short.teacher_prompt_ids(pair.episode, tokenizer))
    assert full.teacher_system_prompt() in full_text and short.teacher_system_prompt() in short_text
    assert len(full.teacher_system_prompt()) > len(short.teacher_system_prompt())
    task = pair.episode["messages"][1]["content"]
    assert full_text.index(task) > full_text.index(full.teacher_system_prompt()) and short_text.endswith("assistant\n")


def test_a_teacher_with_another_tokenizer_is_refused_before_anything_is_written(pair: Pair, tmp_path: Path) -> None:
    other = train_tokenizer(["other words entirely 123"], vocab_size=300, min_frequency=1)
    save_student(build_student(other, TINY, seed=0), other, tmp_path / "other")
    out = tmp_path / "out"
    with pytest.raises(UserError, match="has another tokenizer than the student"):
        train_opd(ENV_ID, f"hf:{pair.student}", f"hf:{tmp_path / 'other'}", out, settings())
    assert not out.exists()
    with pytest.raises(UserError, match="must be a model: hf:DIR, vllm:MODEL or openai:URL#MODEL"):
        train_opd(ENV_ID, f"hf:{pair.student}", "expert", out, settings())


def test_opd_trains_towards_the_teacher_writes_its_result_and_resumes(
    pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "opd"
    config = tmp_path / "opd.yaml"
    config.write_text(yaml.safe_dump(settings(max_steps=6, learning_rate=3e-3).to_dict()), encoding="utf-8")
    command = [
        "opd", "--env", ENV_ID, "--student", f"hf:{pair.student}", "--teacher", f"hf:{pair.teacher}", "--out",
        str(out), "--config", str(config), "--no-progress",
    ]
    from agentdistill.cli import main

    monkeypatch.setenv("WANDB_MODE", "offline")  # no W&B account here: the run is written for `wandb sync`
    assert main(command) == 0
    result = OPDResult.from_json(out / "opd_result.json")
    assert result.global_step == 6 and result.teacher == f"hf:{pair.teacher}" and len(result.reverse_kl) == 6
    print("reverse KL per step:", result.reverse_kl)
    assert sum(result.reverse_kl[-2:]) / 2 < result.reverse_kl[0] - 0.05, result.reverse_kl
    assert result.before is not None and result.after is not None and result.reward_gain is not None
    assert list((out / "wandb").rglob("*.wandb")), "an offline W&B run under OUT"
    assert HFPolicy(str(out)).name == f"hf:{out}"
    assert main([*command, "--steps", "7"]) == 0
    resumed = OPDResult.from_json(out / "opd_result.json")
    assert resumed.global_step == 7 and resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-6")


def test_a_killed_opd_run_resumes_from_its_last_checkpoint(pair: Pair, tmp_path: Path) -> None:
    out = tmp_path / "opd"
    config = tmp_path / "opd.yaml"
    config.write_text(yaml.safe_dump(settings(max_steps=40, eval_tasks=0).to_dict()), encoding="utf-8")
    command = [
        sys.executable, "-m", "agentdistill.cli", "opd", "--env", ENV_ID, "--student", f"hf:{pair.student}",
        "--teacher", f"hf:{pair.teacher}", "--out", str(out), "--config", str(config), "--no-progress", "--no-wandb",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint-2" / "trainer_state.json").is_file():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended or stalled before checkpoint 2"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "opd_result.json").exists()
    finished = subprocess.run([*command, "--steps", "3"], env=environment, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    result = OPDResult.from_json(out / "opd_result.json")
    assert result.global_step == 3 and result.resumed_from is not None
    assert int(result.resumed_from.rsplit("-", 1)[1]) >= 2


def test_the_run_config_plans_without_importing_torch() -> None:
    probe = (
        "import sys\nfrom agentdistill.cli import main\n"
        "code = main(['run', 'configs/opd/run_opd_cpu_tiny.yaml', '--dry-run'])\n"
        "print('imported', 'torch' in sys.modules, 'trl' in sys.modules, code)"
    )
    completed = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "opd: on-policy distillation of a student in AgentMath-Synthetic-v0" in completed.stdout
    assert completed.stdout.strip().endswith("imported False False 0"), completed.stdout + completed.stderr
