"""The CoT baseline: teacher chain-of-thought answers, graded, kept when right, and scored as table rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import pytest

from agentdistill.errors import OutputConflictError

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.distill.cot import collect_cot, cot_dataset, evaluate_cot, evaluate_cot_suite
from agentdistill.policies.base import Completion, PolicyRequest, SamplingParams
from agentdistill.policies.expert import ExpertPolicy
from agentdistill.rollouts.evaluate import suite_env_kwargs
from agentdistill.rollouts.ftp import COT_SYSTEM_PROMPT
from agentdistill.rollouts.records import read_trajectories

SYNTHETIC = ("AgentQA-Synthetic-v0", "AgentMath-Synthetic-v0")


class Fixed:
    """Answers every question with the same text, counting the calls and keeping the last requests."""

    name = "fixed"

    def __init__(self, text: str) -> None:
        self.text, self.calls, self.seen = text, 0, []

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        self.calls += 1
        self.seen = list(requests)
        return [[Completion(self.text, prompt_tokens=30, completion_tokens=12)] for _ in requests]

    def close(self) -> None:
        pass


@pytest.mark.parametrize("env_id", SYNTHETIC)
def test_the_experts_chain_of_thought_is_correct_and_becomes_sft_rows(env_id: str, tmp_path: Path) -> None:
    env = gym.make(env_id, split="test")
    out = tmp_path / "cot.jsonl"
    try:
        assert collect_cot(ExpertPolicy(), env, range(5), out=out) == 5
    finally:
        env.close()
    records = list(read_trajectories(out))
    assert [record["task_index"] for record in records] == [0, 1, 2, 3, 4]
    for record in records:
        assert record["env_id"] == env_id and record["task_id"] and record["rag"] is False
        assert record["score"] == 1.0 and record["answer"] and "\\boxed{" in record["messages"][-1]["content"]
        assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]
        assert record["messages"][0]["content"] == COT_SYSTEM_PROMPT
    dataset = cot_dataset([out])
    assert len(dataset) == 5 and dataset.column_names == ["messages"]
    assert [m["role"] for m in dataset[0]["messages"]] == ["system", "user", "assistant"]
    assert dataset[0]["messages"][1]["content"] == env.unwrapped.task_at(0).question


def test_wrong_answers_are_graded_zero_and_left_out_of_the_dataset(tmp_path: Path) -> None:
    env = gym.make("AgentMath-Synthetic-v0")
    policy = Fixed("Some reasoning.\n\nSo the answer is \\boxed{-1}.")
    try:
        collect_cot(policy, env, range(3), out=tmp_path / "wrong.jsonl", batch_size=2)
    finally:
        env.close()
    assert policy.calls == 2  # one call per batch of questions
    records = list(read_trajectories(tmp_path / "wrong.jsonl"))
    assert all(record["score"] == 0.0 and record["answer"] == "-1" for record in records)
    assert len(cot_dataset(tmp_path / "wrong.jsonl")) == 0


def test_rag_puts_the_retrieved_documents_before_the_question(tmp_path: Path) -> None:
    env = gym.make("AgentQA-Synthetic-v0", split="test")
    try:
        collect_cot(ExpertPolicy(), env, range(3), rag=True, top_k=2, out=tmp_path / "rag.jsonl")
        questions = [env.unwrapped.task_at(index).question for index in range(3)]
    finally:
        env.close()
    for record, question in zip(read_trajectories(tmp_path / "rag.jsonl"), questions):
        user = record["messages"][1]["content"]
        assert record["rag"] is True and record["score"] == 1.0
        assert user.startswith("Documents:\nDocument 1 | Title: ") and "Document 2 | Title: " in user
        assert "Document 3" not in user and user.endswith(f"Question: {question}")
        assert user.index("Document 1") < user.index(question)


def test_rag_on_real_hotpotqa_searches_the_pooled_paragraphs(tmp_path: Path, shared_data: Path) -> None:
    env = gym.make("AgentQA-HotpotQA-v0", **suite_env_kwargs(shared_data, ["AgentQA-HotpotQA-v0"])["AgentQA-HotpotQA-v0"])
    policy = Fixed("I do not know.\n\n\\boxed{x}")
    try:
        collect_cot(policy, env, range(2), rag=True, out=tmp_path / "hotpot.jsonl")
        tasks = [env.unwrapped.task_at(index) for index in range(2)]
        pooled = {document.title for task in env.unwrapped.tasks for document in task.documents}
    finally:
        env.close()
    for request, task in zip(policy.seen, tasks):
        user = request.messages[1]["content"]
        titles = [block.split("\n", 1)[0] for block in user.split("| Title: ")[1:]]
        assert user.startswith("Documents:\nDocument 1 | Title: ") and user.endswith(f"Question: {task.question}")
        assert len(titles) == 3 and set(titles) <= pooled
    assert all(record["score"] == 0.0 for record in read_trajectories(tmp_path / "hotpot.jsonl"))


def test_rag_needs_a_retriever(tmp_path: Path) -> None:
    env = gym.make("AgentMath-Synthetic-v0")
    try:
        with pytest.raises(ValueError, match="retriever"):
            collect_cot(ExpertPolicy(), env, range(1), rag=True, out=tmp_path / "x.jsonl")
    finally:
        env.close()


def test_evaluate_cot_scores_the_baseline_and_resumes(tmp_path: Path) -> None:
    row = evaluate_cot("expert", "AgentMath-Synthetic-v0", {"split": "test"}, limit=4, out_dir=tmp_path)
    assert row.accuracy == 1.0 and row.episodes == 4 and row.metric == "math"
    assert row.invalid_action_rate is None and row.mean_steps is None and row.completion_tokens > 0
    assert len(list(read_trajectories(tmp_path / "cot" / "AgentMath-Synthetic-v0.jsonl"))) == 4
    again = evaluate_cot("expert", "AgentMath-Synthetic-v0", {"split": "test"}, limit=4, out_dir=tmp_path)
    assert again == row
    # another policy's answers would be reported as the expert's: refused, and nothing is asked
    policy = Fixed("\\boxed{0}")
    with pytest.raises(OutputConflictError, match="policy: 'expert' before, 'fixed' now"):
        evaluate_cot(policy, "AgentMath-Synthetic-v0", {"split": "test"}, limit=4, out_dir=tmp_path)
    assert policy.calls == 0
    rag = evaluate_cot("expert", "AgentQA-Synthetic-v0", {}, limit=3, rag=True, out_dir=tmp_path)
    assert rag.accuracy == 1.0 and (tmp_path / "cot-rag" / "AgentQA-Synthetic-v0.jsonl").is_file()


def test_the_cot_suite_writes_a_cot_table(tmp_path: Path) -> None:
    table = evaluate_cot_suite(
        "expert", SYNTHETIC, env_kwargs_by_env={env_id: {"split": "test"} for env_id in SYNTHETIC}, limit=3,
        rag=True, out_dir=tmp_path,
    )
    assert table.method == "CoT+RAG" and [row.accuracy for row in table.rows] == [1.0, 1.0]
    data = json.loads((tmp_path / "cot-rag" / "results.json").read_text())
    assert data["method"] == "CoT+RAG" and data["averages"]["all"]["accuracy"] == 1.0
    assert "CoT+RAG - expert" in (tmp_path / "cot-rag" / "results.md").read_text()
    # math envs have nothing to retrieve: their rows are the plain CoT answers, shared with the CoT table
    assert not (tmp_path / "cot-rag" / "AgentMath-Synthetic-v0.jsonl").exists()
    math_records = list(read_trajectories(tmp_path / "cot" / "AgentMath-Synthetic-v0.jsonl"))
    assert len(math_records) == 3 and all(record["rag"] is False for record in math_records)


def test_cot_evaluation_leaves_a_directory_of_the_users_files_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("my notes")
    policy = Fixed("\\boxed{0}")
    with pytest.raises(OutputConflictError, match=r"already holds files that no agentdistill run wrote here \(notes.md\)"):
        evaluate_cot(policy, "AgentMath-Synthetic-v0", {"split": "test"}, limit=2, out_dir=tmp_path)
    assert policy.calls == 0 and [path.name for path in tmp_path.iterdir()] == ["notes.md"]


def test_answer_files_written_before_run_identities_still_resume(tmp_path: Path) -> None:
    out = tmp_path / "cot.jsonl"
    env = gym.make("AgentMath-Synthetic-v0", split="test")
    try:
        collect_cot(ExpertPolicy(), env, range(3), out=out)
        legacy = [json.loads(line) for line in out.read_text().splitlines()]
        for record in legacy:  # older versions recorded no run identity (and CoT records no sampling or SAG)
            del record["run"]
        out.write_text("".join(json.dumps(record) + "\n" for record in legacy))
        assert collect_cot(ExpertPolicy(), env, range(4), out=out) == 1
        before = out.read_bytes()
        with pytest.raises(OutputConflictError, match="rag: False before, True now"):
            collect_cot(ExpertPolicy(), env, range(4), rag=True, out=out)
        assert out.read_bytes() == before
    finally:
        env.close()
