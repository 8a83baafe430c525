"""``rescore``: the paper's judge on finished trajectory files, without running them again.

The inputs are real trajectory files, written by the rollout loop on the shared HotpotQA and MATH-500 files
with a scripted policy that gives chosen answers, plus records in the shape the paper protocol writes
(built by hand: the task turn ``"New task:\\n" + question + instruction`` and a max-steps answer). The judge
is a fake OpenAI-compatible server on 127.0.0.1 (``tests/policies/fake_judge.py``; gpt-4o-mini cannot be
reached from here) asked through the real HTTP policy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from agentdistill.errors import OutputConflictError, UserError
from agentdistill.policies.base import Completion, PolicyRequest, SamplingParams
from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts
from agentdistill.rollouts.records import read_trajectories
from agentdistill.rollouts.rescore import NO_ANSWER_EXPLANATION, rescore
from tests.conftest import SHARED_DATA, code_action
from tests.policies.fake_judge import (
    JUDGE_MODEL,
    FakeJudge,
    judge_spec,
    paper_prompt,
    running_fake_judge,
    shared_prompts_dir,
    verdict_json,
)

QA_ENV = "AgentQA-HotpotQA-v0"
MATH_ENV = "AgentMath-MATH500-v0"
QA_ARGS = {"data_path": str(SHARED_DATA / "hotpotqa/distractor_dev_500_hf.jsonl"), "max_steps": 2}
MATH_ARGS = {"data_path": str(SHARED_DATA / "agent-distillation/math_dataset/test/math_500_20250414.json")}
QUESTIONS = {
    0: "Between Harvey Pekar and Denise Levertov who was born earlier?",
    1: "Are Centaurium and Dacrydium both genuses of plant species?",
    2: "In what 2 countries did both X-Large and A Bathing Ape have stores?",
    4: "What is the former name of the animal whose habitat the Réserve Naturelle Lomako Yokokala was established "
    "to protect?",
    5: "Kiskiack is a building that still stands at what York County, Virginia naval base?",
}
GOLDS = {0: "Denise Levertov", 1: "yes", 2: "Japan and Hong Kong", 4: "pygmy chimpanzee",
         5: "Naval Weapons Station Yorktown"}
ANSWERS = {0: "the poet Denise Levertov", 1: "yes", 2: "Japan", 4: "a mystery", 5: "Naval Weapons Station Yorktown"}
"""What the scripted policy answers per HotpotQA task; task 3 gets no answer (it only prints, and hits the
step limit). The fake judge accepts an answer that contains the gold one: 0 and 1 are right (0 not by
exact match), 2 is wrong, and 4 is scripted to get replies without a verdict."""


class Scripted:
    """Stands in for an agent: answers each task as :data:`ANSWERS` says, at once."""

    name = "scripted"

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        return [[Completion(self._action(request.context["task_index"]))] for request in requests]

    @staticmethod
    def _action(index: int) -> str:
        if index not in ANSWERS:
            return code_action('print("still looking")')
        return code_action(f"final_answer({ANSWERS[index]!r})")

    def close(self) -> None:
        pass


def roll_out(env_id: str, env_args: dict[str, Any], indices: Sequence[int], out: Path) -> Path:
    envs = make_rollout_envs(env_id, 2, **env_args)
    try:
        run_rollouts(envs, Scripted(), env_id=env_id, task_indices=indices, out=str(out), progress=False,
                     env_args=env_args)
    finally:
        envs.close()
    return out


@pytest.fixture(scope="module")
def judge_server() -> Iterator[tuple[FakeJudge, str]]:
    with running_fake_judge() as running:
        yield running


@pytest.fixture()
def server(judge_server: tuple[FakeJudge, str]) -> FakeJudge:
    state, _ = judge_server
    state.reset()
    state.scripts["a mystery"] = ["I cannot decide."]
    return state


@pytest.fixture()
def spec(judge_server: tuple[FakeJudge, str]) -> str:
    return judge_spec(judge_server[1])


@pytest.fixture()
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    qa = roll_out(QA_ENV, QA_ARGS, range(5), tmp_path / "in" / "hotpotqa.jsonl")
    math = roll_out(MATH_ENV, MATH_ARGS, range(2), tmp_path / "in" / "math500.jsonl")
    return qa, math


def _by_task(path: Path, env_id: str = QA_ENV) -> dict[int, dict[str, Any]]:
    return {record["task_index"]: record for record in read_trajectories(path) if record["env_id"] == env_id}


def test_qa_answers_get_the_judges_verdict_math_keeps_its_score_and_the_inputs_are_untouched(
    tmp_path: Path, server: FakeJudge, spec: str, inputs: tuple[Path, Path]
) -> None:
    qa, math = inputs
    before = {path: path.read_bytes() for path in inputs}
    out = tmp_path / "judged.jsonl"
    summary = rescore([qa, math], spec, out=out, prompts_dir=shared_prompts_dir(), progress=False)

    assert {path: path.read_bytes() for path in inputs} == before
    judged = _by_task(out)
    assert (judged[0]["score"], judged[0]["metrics"]["judge"], judged[0]["metrics"]["em"]) == (1.0, 1.0, 0.0)
    assert judged[0]["metrics"]["f1"] == pytest.approx(0.8)
    assert judged[0]["metrics"]["judge_explanation"] == "gold found in the prediction"
    assert (judged[1]["score"], judged[1]["metrics"]["em"], judged[2]["score"]) == (1.0, 1.0, 0.0)
    assert judged[0]["judged"]["status"] == "judged" and judged[0]["judged"]["judge"] == f"{spec}"
    assert judged[0]["judged"]["source"]["path"] == str(qa.resolve())
    no_answer = judged[3]
    assert no_answer["answer"] is None and no_answer["truncated"] and no_answer["judged"]["status"] == "no_answer"
    assert no_answer["metrics"] == {"em": 0.0, "f1": 0.0, "judge": 0.0, "judge_explanation": NO_ANSWER_EXPLANATION}
    failed = judged[4]
    assert failed["score"] == 0.0 and failed["judged"]["status"] == "failed" and failed["judged"]["attempts"] == 3
    assert "unreadable judge reply 'I cannot decide.'" in failed["judged"]["failure"]
    originals = _by_task(math, MATH_ENV)
    for index, record in _by_task(out, MATH_ENV).items():
        assert record["judged"]["status"] == "not_factual"
        assert (record["score"], record["metrics"]) == (originals[index]["score"], originals[index]["metrics"])
        assert "judge" not in record["metrics"]

    asked = [paper_prompt(QUESTIONS[index], ANSWERS[index], GOLDS[index]) for index in (0, 1, 2, 4)]
    assert sorted(server.prompts()) == sorted(asked + [asked[-1]] * 2), "raw questions; 3 attempts for task 4"
    rows = {row.env_id: row for row in summary.rows}
    assert (rows[QA_ENV].metric, rows[QA_ENV].episodes, rows[QA_ENV].accuracy) == ("judge", 5, 0.4)
    assert (rows[QA_ENV].grader_metrics["em"], rows[QA_ENV].judge_failures) == (0.2, 1)
    assert rows[MATH_ENV].metric == "math" and rows[MATH_ENV].judge_failures == 0
    assert (summary.judged_now, summary.failed_now) == (4, 1)
    text = summary.to_text()
    assert f"LLM judge ({spec}, the paper's prompt)" in text
    assert f"{QA_ENV}: 5 episodes; judged accuracy 40.0%, EM 20.0%, F1 " in text and "judge failures 1" in text
    assert f"{MATH_ENV}: 2 episodes; answer equivalence (math-verify) 0.0% (not judged" in text


def test_a_rerun_resumes_asks_failed_verdicts_again_and_judges_only_new_input_lines(
    tmp_path: Path, server: FakeJudge, spec: str, inputs: tuple[Path, Path]
) -> None:
    qa, math = inputs
    out = tmp_path / "judged.jsonl"
    rescore([qa, math], spec, out=out, prompts_dir=shared_prompts_dir(), progress=False)
    lines = out.read_bytes().splitlines()

    server.reset()
    server.scripts["a mystery"] = [verdict_json(0, "a mystery is not a chimpanzee")]  # the judge is fixed now
    again = rescore([qa, math], spec, out=out, prompts_dir=shared_prompts_dir(), progress=False)
    assert server.predictions() == ["a mystery"], "only the failed verdict is asked again"
    assert out.read_bytes().splitlines()[: len(lines)] == lines and len(out.read_bytes().splitlines()) == len(lines) + 1
    assert _by_task(out)[4]["judged"]["status"] == "judged"  # the later record supersedes the failed one
    assert {row.env_id: row.judge_failures for row in again.rows} == {QA_ENV: 0, MATH_ENV: 0}
    assert (again.judged_now, again.failed_now) == (1, 0)

    server.reset()
    roll_out(QA_ENV, QA_ARGS, range(6), qa)  # the eval goes on: task 5 is added to the input
    grown = rescore([qa, math], spec, out=out, prompts_dir=shared_prompts_dir(), progress=False)
    assert server.predictions() == [ANSWERS[5]]
    assert {row.env_id: (row.episodes, row.accuracy) for row in grown.rows}[QA_ENV] == (6, 0.5)


def test_a_rescore_killed_mid_line_resumes_from_its_complete_records(
    tmp_path: Path, server: FakeJudge, spec: str
) -> None:
    qa = roll_out(QA_ENV, QA_ARGS, range(2), tmp_path / "hotpotqa.jsonl")
    out = tmp_path / "judged.jsonl"
    rescore([qa], spec, out=out, prompts_dir=shared_prompts_dir(), progress=False)
    complete = out.read_bytes()
    last = json.loads(complete.splitlines()[-1])
    out.write_bytes(complete[: len(complete) - len(complete.splitlines()[-1]) // 2])  # killed halfway through a line
    server.reset()
    rescore([qa], spec, out=out, prompts_dir=shared_prompts_dir(), progress=False)
    assert last["answer"] == ANSWERS[1] and server.predictions() == [ANSWERS[1]]
    assert out.read_bytes() == complete


def test_outputs_that_are_not_this_rescores_are_refused_untouched(
    tmp_path: Path, server: FakeJudge, spec: str, inputs: tuple[Path, Path]
) -> None:
    qa, math = inputs
    with pytest.raises(UserError, match=r"--out .*hotpotqa\.jsonl is one of the inputs; rescore never writes into"):
        rescore([qa, math], spec, out=qa, prompts_dir=shared_prompts_dir(), progress=False)
    notes = tmp_path / "notes.jsonl"
    notes.write_text("my notes\n")
    with pytest.raises(OutputConflictError, match=r"notes\.jsonl: line 1 is not a record rescore wrote"):
        rescore([qa], spec, out=notes, prompts_dir=shared_prompts_dir(), progress=False)
    assert notes.read_text() == "my notes\n"
    trajectories = tmp_path / "copy.jsonl"
    trajectories.write_bytes(math.read_bytes())
    with pytest.raises(OutputConflictError, match=r"copy\.jsonl: line 1 is not a record rescore wrote"):
        rescore([qa], spec, out=trajectories, prompts_dir=shared_prompts_dir(), progress=False)
    assert trajectories.read_bytes() == math.read_bytes()
    assert not server.bodies, "nothing is judged before the output is known to be ours"

    out = tmp_path / "judged.jsonl"
    rescore([qa, math], spec, out=out, prompts_dir=shared_prompts_dir(), progress=False)
    written = out.read_bytes()
    server.reset()
    other_judge = spec.replace(JUDGE_MODEL, "gpt-4o")
    with pytest.raises(OutputConflictError, match=r"holds verdicts of another judge \(line 1: judge: '.*#gpt-4o-mini' "
                       r"before, '.*#gpt-4o' now\); rerun with the same judge"):
        rescore([qa, math], other_judge, out=out, prompts_dir=shared_prompts_dir(), progress=False)
    with pytest.raises(OutputConflictError, match=r"line 1 judged line 1 of input 1 \(.*hotpotqa\.jsonl\), which holds "
                       r"another record now: it is a rescore of other inputs"):
        rescore([math, qa], spec, out=out, prompts_dir=shared_prompts_dir(), progress=False)
    with pytest.raises(OutputConflictError, match=r"judged line 1 of input 2 \(.*math500\.jsonl\), which is not among"):
        rescore([qa], spec, out=out, prompts_dir=shared_prompts_dir(), progress=False)
    assert out.read_bytes() == written and not server.bodies


def test_inputs_that_are_not_trajectory_files_are_named_with_their_line(tmp_path: Path, spec: str) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# notes\n")
    with pytest.raises(UserError, match=r"README\.md: line 1 is not a trajectory record \('# notes'\)"):
        rescore([readme], spec, out=tmp_path / "out.jsonl", prompts_dir=shared_prompts_dir(), progress=False)
    with pytest.raises(UserError, match=r"missing\.jsonl: no such trajectory file"):
        rescore([tmp_path / "missing.jsonl"], spec, out=tmp_path / "out.jsonl", prompts_dir=shared_prompts_dir())
    with pytest.raises(UserError, match=r"rescore needs a list of trajectory files to judge; give at least one"):
        rescore([], spec, out=tmp_path / "out.jsonl")
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps(paper_record(0, QUESTIONS[0], "", "x", max_steps=False)) + "\n")
    with pytest.raises(UserError, match=r"needs prompts_dir=DIR \(--prompts-dir\)"):
        rescore([records], spec, out=tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def paper_record(task_index: int, question: str, instruction: str, answer: str, *, max_steps: bool) -> dict[str, Any]:
    """A record in the shape the paper protocol writes: its task turn, and (when ``max_steps``) the answer
    of the final-answer call made after the step limit."""
    final = {"role": "assistant", "content": f"Thought: done.\nCode:\n```py\nfinal_answer({answer!r})\n```<end_code>"}
    messages = [
        {"role": "system", "content": "<the paper's short system prompt>"},
        {"role": "user", "content": "New task:\n" + question + instruction},
        final,
        {"role": "user", "content": f"Call id: call_1\nObservation:\nExecution logs:\nLast output from code snippet:\n"
                                    f"{answer}"},
    ]
    record: dict[str, Any] = {
        "version": 1, "env_id": QA_ENV, "task_index": task_index, "task_id": f"t{task_index}", "messages": messages,
        "steps": [{"parse_error": False, "execution_error": None, "observation": messages[-1]["content"]}],
        "answer": answer, "gold": GOLDS[task_index], "score": 0.0, "metrics": {"em": 0.0, "f1": 0.0},
        "terminated": not max_steps, "truncated": max_steps, "run": {"protocol": "paper"},
    }
    if max_steps:
        record["final_answer_call"] = {"messages": [], "answer": answer}
    return record


def test_paper_protocol_records_are_judged_on_their_raw_question(tmp_path: Path, server: FakeJudge, spec: str) -> None:
    instruction = (shared_prompts_dir() / "task_instruction.txt").read_text(encoding="utf-8")
    records = [
        paper_record(0, QUESTIONS[0], instruction, "Denise Levertov", max_steps=False),
        paper_record(5, QUESTIONS[5], instruction, "The base is Naval Weapons Station Yorktown.", max_steps=True),
    ]
    source = tmp_path / "paper.jsonl"
    source.write_text("".join(json.dumps(record) + "\n" for record in records))
    summary = rescore([source], spec, out=tmp_path / "judged.jsonl", prompts_dir=shared_prompts_dir(), progress=False)
    assert sorted(server.prompts()) == sorted([
        paper_prompt(QUESTIONS[0], "Denise Levertov", GOLDS[0]),
        paper_prompt(QUESTIONS[5], "The base is Naval Weapons Station Yorktown.", GOLDS[5]),
    ])
    judged = _by_task(tmp_path / "judged.jsonl")
    assert judged[5]["score"] == 1.0 and judged[5]["truncated"] and judged[5]["metrics"]["em"] == 0.0
    assert summary.rows[0].accuracy == 1.0
