"""The CoT baseline: teacher chain-of-thought answers, graded, kept when right, and scored as table rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import pytest

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.distill.cot import collect_cot, cot_dataset, evaluate_cot, evaluate_cot_suite, paper_cot_answer
from agentdistill.envs.paper.prompts import PaperPrompts
from agentdistill.errors import OutputConflictError, UserError
from agentdistill.policies.base import Completion, PolicyRequest, SamplingParams
from agentdistill.policies.expert import ExpertPolicy
from agentdistill.rollouts.evaluate import suite_env_kwargs
from agentdistill.rollouts.ftp import COT_SYSTEM_PROMPT
from agentdistill.rollouts.records import read_trajectories
from tests.conftest import SHARED_DATA, env_kwargs

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


# --- the paper's protocol -------------------------------------------------------------------------

PROMPTS_DIR = SHARED_DATA / "agent-distillation" / "prompts"


class Tagged:
    """Answers each question with a short reasoning and its gold answer, in the paper's ``<answer>`` tags (or bare)."""

    name = "tagged"

    def __init__(self, gold_by_question: dict[str, str], *, tags: bool = True) -> None:
        self.gold_by_question, self.tags = gold_by_question, tags
        self.calls, self.seen, self.params = 0, [], None

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        self.calls += 1
        self.seen, self.params = list(requests), params
        answers = [self.gold_by_question[request.messages[-1]["content"]] for request in requests]
        if self.tags:
            texts = [f"Let me think step by step.\n\nIt is known.\n\n<answer> {answer} </answer>" for answer in answers]
        else:
            texts = [f"Let me think step by step.\n\nThe answer is {answer}." for answer in answers]
        return [[Completion(text)] for text in texts]

    def close(self) -> None:
        pass


def _gold_by_question(env: gym.Env, count: int) -> dict[str, str]:
    return {env.unwrapped.task_at(index).question: env.unwrapped.task_at(index).answer for index in range(count)}


def test_the_papers_answer_is_read_from_its_tags() -> None:
    assert paper_cot_answer("Nixon was president.\n\n<answer> Richard Nixon </answer>", math=False) == "Richard Nixon"
    assert paper_cot_answer("No tags here.\n\nJust text.", math=False) == "No tags here.\n\nJust text."
    assert paper_cot_answer("<answer>1</answer> then <answer>2</answer>", math=False) == "1"
    assert paper_cot_answer("So:\n<answer> \\boxed{\\frac{9}{14}} </answer>", math=True) == "\\frac{9}{14}"
    assert paper_cot_answer("<answer>$5$</answer>", math=True) == "5"
    assert paper_cot_answer("Work.\n\nHence \\boxed{12}.", math=True) == "12"  # no tag: the box of the response


def test_paper_cot_asks_with_the_teachers_prompt_and_grades_the_tagged_answer(tmp_path: Path) -> None:
    env = gym.make("AgentMath-MATH500-v0", **env_kwargs("AgentMath-MATH500-v0"))
    out = tmp_path / "math500.jsonl"
    try:
        policy = Tagged(_gold_by_question(env, 3))
        assert collect_cot(policy, env, range(3), out=out, protocol="paper", prompts_dir=PROMPTS_DIR) == 3
        questions = [env.unwrapped.task_at(index).question for index in range(3)]
    finally:
        env.close()
    teacher = PaperPrompts.load(PROMPTS_DIR).teacher_system_prompt
    assert teacher.endswith("Now, please answer the following question: ")
    for request, question in zip(policy.seen, questions):
        assert request.messages == ({"role": "system", "content": teacher}, {"role": "user", "content": question})
    assert (policy.params.max_new_tokens, policy.params.stop, policy.params.temperature) == (4096, (), 0.0)
    records = list(read_trajectories(out))
    assert all(record["score"] == 1.0 and record["run"]["protocol"] == "paper" for record in records)
    assert [record["answer"] for record in records] == [record["gold"] for record in records]
    assert len(cot_dataset(out, protocol="paper")) == 3
    with pytest.raises(UserError, match=rf"{out}: record 1 was collected under protocol 'paper', not 'agentdistill'"):
        cot_dataset(out, protocol="agentdistill")


def test_paper_cot_takes_the_whole_response_when_it_has_no_tags(tmp_path: Path) -> None:
    env = gym.make("AgentQA-HotpotQA-v0", **env_kwargs("AgentQA-HotpotQA-v0"))
    try:
        gold = _gold_by_question(env, 2)
        collect_cot(Tagged(gold), env, range(2), out=tmp_path / "tagged.jsonl", protocol="paper",
                    prompts_dir=PROMPTS_DIR)
        collect_cot(Tagged(gold, tags=False), env, range(2), out=tmp_path / "bare.jsonl", protocol="paper",
                    prompts_dir=PROMPTS_DIR)
    finally:
        env.close()
    tagged, bare = list(read_trajectories(tmp_path / "tagged.jsonl")), list(read_trajectories(tmp_path / "bare.jsonl"))
    assert [record["score"] for record in tagged] == [1.0, 1.0]
    assert [record["answer"] for record in tagged] == list(gold.values())
    assert all(record["answer"] == record["messages"][-1]["content"] and record["score"] == 0.0 for record in bare)


def test_paper_cot_without_prompts_dir_is_refused_before_anything_is_asked(tmp_path: Path) -> None:
    env = gym.make("AgentMath-Synthetic-v0")
    policy = Fixed("<answer>1</answer>")
    try:
        with pytest.raises(UserError, match="protocol='paper' needs prompts_dir=DIR: .*teacher_model.yaml"):
            collect_cot(policy, env, range(2), out=tmp_path / "x.jsonl", protocol="paper")
    finally:
        env.close()
    with pytest.raises(UserError, match="needs prompts_dir"):
        evaluate_cot(policy, "AgentMath-Synthetic-v0", {"split": "test"}, limit=2, out_dir=tmp_path / "e",
                     protocol="paper")
    assert policy.calls == 0 and not (tmp_path / "x.jsonl").exists() and not (tmp_path / "e").exists()


def test_a_paper_cot_evaluation_keeps_its_directory_to_itself(tmp_path: Path) -> None:
    row = evaluate_cot("expert", "AgentMath-Synthetic-v0", {"split": "test"}, limit=2, out_dir=tmp_path,
                       protocol="paper", prompts_dir=PROMPTS_DIR)
    assert row.accuracy == 1.0  # the expert boxes its answer without tags: the whole response, then its box
    records = list(read_trajectories(tmp_path / "cot" / "AgentMath-Synthetic-v0.jsonl"))
    assert records[0]["messages"][0]["content"] == PaperPrompts.load(PROMPTS_DIR).teacher_system_prompt
    with pytest.raises(OutputConflictError, match="protocol"):
        evaluate_cot("expert", "AgentMath-Synthetic-v0", {"split": "test"}, limit=2, out_dir=tmp_path)
