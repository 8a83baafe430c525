"""SFT data the paper's way (``protocol="paper"``): records of paper-protocol runs and the paper's released rows.

The prompts are the paper's own files in ../shared/data/agent-distillation/prompts, the questions and answers
come from the paper's training lists there. The episodes are written by hand in exactly the shapes the two
producers write: records as this package's paper-protocol rollouts record them (system prompt, task turn,
assistant turns, ``Call id: call_k`` observations, and for an episode that ran out of steps the final-answer
call), and released rows as the paper's code logs them (smolagents messages with ``tool-call`` and
``tool-response`` roles and lists of text parts; the hub itself cannot be reached here). The last test trains
a scratch student on a released-format file through ``agentdistill run``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from agentdistill.distill.sft.paper_import import (
    PAPER_MATH_ENV_ID,
    PAPER_QA_ENV_ID,
    released_row_conversations,
    released_row_env_id,
)
from agentdistill.distill.sft.trajectories import FilterRules, paper_student_conversations, trajectories_to_dataset
from agentdistill.envs.paper.prompts import PaperPrompts
from agentdistill.errors import UserError
from tests.conftest import SHARED_DATA

PROMPTS_DIR = SHARED_DATA / "agent-distillation" / "prompts"
SHORT_PROMPT_SHA256 = "313ca7cbea54c67479575c751c13919890782ed4980dc7c7edcb3e0ff06f5c28"
"""The paper's rendered ``system_prompt_short``, as its SFT data holds it (verified against the paper's code)."""
TINY_SFT = Path(__file__).resolve().parents[2] / "configs" / "distill" / "sft_cpu_tiny.yaml"
RETRY = (
    "\nNow let's retry: take care not to repeat previous errors! If you have retried several times, try a "
    "completely different approach.\n"
)


@pytest.fixture(scope="module")
def prompts() -> PaperPrompts:
    return PaperPrompts.load(PROMPTS_DIR)


def _examples(relative: str) -> list[dict[str, Any]]:
    return json.loads((SHARED_DATA / "agent-distillation" / relative).read_text())["examples"]


HOTPOT = _examples("qa_dataset/train/hotpotqa_1000_20250402.json")[0]
MATH = _examples("math_dataset/train/math_1000_20250414.json")[0]


def _code(thought: str, code: str) -> str:
    return f"Thought: {thought}\nCode:\n```py\n{code}\n```<end_code>"


def _observation(call: int, logs: str, last_output: str) -> str:
    return f"Call id: call_{call}\nObservation:\nExecution logs:\n{logs}Last output from code snippet:\n{last_output}"


SEARCH_RESULT = (
    "\nRetrieved documents:\n\n===== Document 0, similarity: 0.86 =====\n\"Milhouse Van Houten\"\nMilhouse was "
    "named after U.S. president Richard Nixon, whose middle name was Milhous."
)
QA_STEPS = [
    (_code("I will search for Milhouse.", 'print(web_search(query="Milhouse named after"))'),
     _observation(1, SEARCH_RESULT + "\n", "None")),
    (_code("He was named after Nixon.", "answer = nixon_full_name"),
     "Call id: call_2\nError:\nCode execution failed at line 'answer = nixon_full_name' due to: InterpreterError: "
     "The variable `nixon_full_name` is not defined." + RETRY),
    (_code("I give the answer.", 'final_answer("President Richard Nixon")'),
     _observation(3, "", "President Richard Nixon")),
]
MATH_STEPS = [
    (_code("The discriminant must be non-negative.", "import sympy\nb = sympy.symbols('b')\nprint(b**2 - 64)"),
     _observation(1, "b**2 - 64\n", "None")),
    (_code("So b**2 >= 64.", "print(sympy.solve(b**2 - 64 >= 0, b))"),
     _observation(2, "((-oo < b) & (b <= -8)) | ((8 <= b) & (b < oo))\n", "None")),
]
PARSE_ERROR_STEPS = [
    ("Thought: He was named after Richard Nixon.",
     "Error:\nError in code parsing:\nYour code snippet is invalid, because the regex pattern "
     "```(?:py|python)?\\n(.*?)\\n``` was not found in it.\nMake sure to provide correct code blobs." + RETRY),
    (_code("I give the answer.", 'final_answer("President Richard Nixon")'),
     _observation(2, "", "President Richard Nixon")),
]
MAX_STEPS_ANSWER = "The possible values are $b \\in (-\\infty,-8]\\cup [8,\\infty)$."


def _record(prompts: PaperPrompts, example: dict[str, Any], steps: list[tuple[str, str]], *, index: int,
            score: float, finished: bool = True) -> dict[str, Any]:
    """A record of a ``protocol="paper"`` rollout (the teacher's full prompt; a max-steps episode carries the
    final-answer call it made)."""
    messages = [
        {"role": "system", "content": prompts.system_prompt("full")},
        {"role": "user", "content": prompts.task_turn(example["question"])},
    ]
    for action, observation in steps:
        messages += [{"role": "assistant", "content": action}, {"role": "user", "content": observation}]
    record: dict[str, Any] = {
        "version": 1,
        "run": {"env_id": PAPER_QA_ENV_ID, "protocol": "paper"},
        "env_id": PAPER_QA_ENV_ID if example is HOTPOT else PAPER_MATH_ENV_ID,
        "task_index": index,
        "task_id": f"{example['id']}",
        "messages": messages,
        "steps": [
            {
                "parse_error": "Error in code parsing" in observation,
                "execution_error": observation if "\nError:\n" in observation else None,
                "observation": observation,
            }
            for _, observation in steps
        ],
        "answer": example["answer"] if score else "something else",
        "gold": example["answer"],
        "score": score,
        "terminated": finished,
        "truncated": not finished,
        "failed": None,
    }
    if not finished:
        last_user = {"role": "user", "content": messages[-1]["content"] + prompts.final_answer_request(example["question"])}
        request = [{"role": "system", "content": prompts.final_answer_system()}, *messages[1:-1], last_user]
        record["final_answer_call"] = {"messages": request, "answer": MAX_STEPS_ANSWER}
    return record


@pytest.fixture(scope="module")
def records(prompts: PaperPrompts) -> dict[str, dict[str, Any]]:
    recovered = _record(prompts, HOTPOT, QA_STEPS, index=0, score=1.0)
    return {
        "recovered": recovered,
        "max_steps": _record(prompts, MATH, MATH_STEPS, index=1, score=1.0, finished=False),
        "parse_error": _record(prompts, HOTPOT, PARSE_ERROR_STEPS, index=2, score=1.0),
        "wrong": {**copy.deepcopy(recovered), "task_index": 3, "score": 0.0},
        "repeated": {**copy.deepcopy(recovered), "task_index": 4},
    }


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- records of paper-protocol runs ---------------------------------------------------------------


def test_records_become_the_papers_conversations(records: dict[str, dict[str, Any]], prompts: PaperPrompts) -> None:
    dataset, report = trajectories_to_dataset(list(records.values()), protocol="paper", prompts_dir=PROMPTS_DIR,
                                              report=False)

    # correct and parse-error-free episodes stay, execution errors and running out of steps included;
    # the paper compares no conversations, so a repeated episode stays too
    assert (report.total, report.kept, report.extra_conversations) == (5, 3, 1)
    assert {reason: count for reason, count in report.dropped.items() if count} == {"parse_error": 1, "low_score": 1}
    assert dict(report.kept_notes) == {"execution_error": 2, "max_steps": 1}
    assert [(row["task_index"], row["num_steps"]) for row in dataset] == [(0, 3), (1, 2), (1, 3), (4, 3)]

    recovered = records["recovered"]["messages"]
    qa = dataset[0]["messages"]
    assert _sha256(qa[0]["content"]) == SHORT_PROMPT_SHA256 and qa[0]["role"] == "system"
    assert qa[1:] == recovered[1:-1]  # task turn with the instruction, call ids and the error turn, all kept
    assert qa[1]["content"] == "New task:\n" + HOTPOT["question"] + prompts.task_instruction
    assert qa[3]["content"].startswith("Call id: call_1\nObservation:\nExecution logs:\n\nRetrieved documents:")
    assert qa[-1]["content"].endswith('final_answer("President Richard Nixon")\n```<end_code>')

    trajectory, final_call = dataset[1]["messages"], dataset[2]["messages"]
    assert _sha256(trajectory[0]["content"]) == SHORT_PROMPT_SHA256
    assert trajectory[1:] == records["max_steps"]["messages"][1:-1]  # ends on the last action, its observation gone
    # the final-answer call keeps its own system prompt and the merged last observation + request
    assert final_call[0] == {"role": "system", "content": prompts.final_answer_system()}
    assert final_call[-2]["content"] == (
        MATH_STEPS[-1][1] + "Based on the above, please provide an answer to the following user task:\n" + MATH["question"]
    )
    assert final_call[-1] == {"role": "assistant", "content": MAX_STEPS_ANSWER}
    assert dataset[1]["task_id"] == dataset[2]["task_id"] == str(MATH["id"])
    assert dataset[3]["messages"] == qa
    assert "answered after the step limit 1" in report.summary() and "final-answer conversations" in report.table()


def test_the_teachers_prompt_stays_with_the_full_variant_and_filters_can_be_changed(
    records: dict[str, dict[str, Any]], prompts: PaperPrompts
) -> None:
    dataset, _ = trajectories_to_dataset(
        [records["recovered"]], protocol="paper", prompts_dir=PROMPTS_DIR, system_prompt_variant="full", report=False
    )
    assert dataset[0]["messages"][0]["content"] == prompts.system_prompt("full")
    strict = FilterRules(drop_truncated=True, keep_recovered_errors=False, deduplicate=True)
    _, report = trajectories_to_dataset(
        list(records.values()), protocol="paper", prompts_dir=PROMPTS_DIR, filters=strict, report=False
    )
    assert report.kept == 0
    assert {reason: count for reason, count in report.dropped.items() if count} == {
        "truncated": 1, "parse_error": 1, "low_score": 1, "execution_error": 2,
    }


def test_consecutive_turns_of_one_role_are_joined_with_no_separator(records: dict[str, dict[str, Any]]) -> None:
    split = copy.deepcopy(records["recovered"])
    observation = split["messages"][3]["content"]
    cut = observation.index("Last output")
    split["messages"][3:4] = [{"role": "user", "content": observation[:cut]},
                              {"role": "user", "content": observation[cut:]}]
    (conversation,) = paper_student_conversations(split, system_prompt="short prompt")
    assert conversation[3]["content"] == observation
    assert conversation[0] == {"role": "system", "content": "short prompt"}


def test_broken_paper_records_are_counted_not_raised(records: dict[str, dict[str, Any]]) -> None:
    no_task = copy.deepcopy(records["recovered"])
    del no_task["messages"][1]
    bad_call = copy.deepcopy(records["max_steps"])
    bad_call["final_answer_call"] = {"messages": bad_call["final_answer_call"]["messages"], "answer": None}
    _, report = trajectories_to_dataset([no_task, bad_call], protocol="paper", prompts_dir=PROMPTS_DIR, report=False)
    assert report.kept == 0 and report.dropped["malformed"] == 2


def test_records_are_converted_only_under_the_protocol_they_were_played_with(
    records: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    path = tmp_path / "paper.jsonl"
    path.write_text(json.dumps(records["recovered"]) + "\n")
    with pytest.raises(UserError, match=rf"{path}: line 1 was played under protocol 'paper'.*--protocol paper"):
        trajectories_to_dataset(path, report=False)
    ours = copy.deepcopy(records["recovered"])
    ours["run"]["protocol"] = "agentdistill"
    with pytest.raises(UserError, match="input record 0 was played under protocol 'agentdistill'"):
        trajectories_to_dataset([ours], protocol="paper", prompts_dir=PROMPTS_DIR, report=False)
    with pytest.raises(UserError, match="needs prompts_dir=DIR: .*code_agent.yaml"):
        trajectories_to_dataset(path, protocol="paper", report=False)
    with pytest.raises(UserError, match="protocol must be one of agentdistill, paper, got 'papers'"):
        trajectories_to_dataset(path, protocol="papers", prompts_dir=PROMPTS_DIR, report=False)  # type: ignore[arg-type]


# --- the paper's released rows --------------------------------------------------------------------


def _parts(text: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": text}]


def _message(role: str, text: str, enum_roles: bool) -> dict[str, Any]:
    name = f"MessageRole.{role.upper().replace('-', '_')}" if enum_roles else role
    return {"role": name, "content": _parts(text)}


def _tool_call(call: int, code: str, enum_roles: bool) -> dict[str, Any]:
    arguments = {"id": f"call_{call}", "type": "function", "function": {"name": "python_interpreter", "arguments": code}}
    return _message("tool-call", f"Calling tools:\n{[arguments]}", enum_roles)


def _log(prompts: PaperPrompts, task: str, steps: list[tuple[str, list[str]]], *, enum_roles: bool = False,
         final_answer: str | None = None) -> dict[str, Any]:
    """A smolagents log as the paper's agent writes it; each step is (model output, its tool responses)."""
    messages = [_message("system", prompts.system_prompt("full"), enum_roles), _message("user", "New task:\n" + task,
                                                                                       enum_roles)]
    for call, (output, responses) in enumerate(steps, start=1):
        messages.append(_message("assistant", output, enum_roles))
        if responses[0].startswith("Call id:"):
            messages.append(_tool_call(call, output.split("```py\n")[1].split("\n```")[0], enum_roles))
        messages += [_message("tool-response", response, enum_roles) for response in responses]
    memory_steps: list[dict[str, Any]] = [{}]
    if final_answer is not None:
        question = task.split("\n\nIMPORTANT:")[0]
        request = [_message("system", prompts.final_answer_system(), enum_roles), *messages[1:],
                   _message("user", prompts.final_answer_request(question), enum_roles)]
        memory_steps.append({"messages": [*request, _message("assistant", final_answer, enum_roles)]})
    return {"messages": messages, "original_memory": {"system_prompt": {}, "steps": memory_steps},
            "metadata": {"task": task, "total_steps": len(memory_steps) + len(steps)}}


PARTIAL_THEN_ERROR = [
    "Call id: call_2\nObservation:\nExecution logs:\nNixon\n",
    "Call id: call_2\nError:\nCode execution failed at line 'z = undefined_var + 1' due to: InterpreterError: "
    "The variable `undefined_var` is not defined." + RETRY,
]


def _released_rows(prompts: PaperPrompts) -> list[dict[str, Any]]:
    """Scored rows as the hub serves them (``log_data`` as JSON text), one of each kind the paper's data holds."""
    hotpot_task = HOTPOT["question"] + prompts.task_instruction
    math_task = MATH["question"] + prompts.task_instruction
    qa_steps = [
        (QA_STEPS[0][0], [QA_STEPS[0][1]]),
        (_code("I check the name.", "print('Nixon')\nz = undefined_var + 1"), PARTIAL_THEN_ERROR),
        (QA_STEPS[2][0], [QA_STEPS[2][1]]),
    ]
    reference = "<reference>\nUse this REFERENCE solution for solving problem.\n\nNixon.</reference>"
    rows = [
        {"question": HOTPOT["question"], "true_answer": HOTPOT["answer"], "generated_answer": HOTPOT["answer"],
         "score": 1, "explanation": "The predicted answer names the same president.",
         "log_data": _log(prompts, hotpot_task, qa_steps)},
        {"question": MATH["question"], "true_answer": MATH["answer"], "generated_answer": MAX_STEPS_ANSWER,
         "score": True, "explanation": "",
         "log_data": _log(prompts, math_task, [(a, [o]) for a, o in MATH_STEPS], enum_roles=True,
                          final_answer=MAX_STEPS_ANSWER)},
        {"question": HOTPOT["question"], "true_answer": HOTPOT["answer"], "generated_answer": HOTPOT["answer"],
         "score": 1, "log_data": _log(prompts, hotpot_task, [(a, [o]) for a, o in PARSE_ERROR_STEPS])},
        {"question": HOTPOT["question"], "true_answer": HOTPOT["answer"], "generated_answer": "Homer", "score": 0,
         "log_data": _log(prompts, hotpot_task, qa_steps)},
        {"question": HOTPOT["question"], "true_answer": HOTPOT["answer"], "generated_answer": HOTPOT["answer"],
         "score": 1, "log_data": _log(prompts, HOTPOT["question"] + reference + prompts.task_instruction, qa_steps)},
        {"model_id": "Qwen/Qwen2.5-32B-Instruct", "question": "Who wrote Duno?", "error": "ReadTimeout",
         "log_data": None, "cost": 0.0},
    ]
    for row in rows[:-1]:
        row["log_data"] = json.dumps(row["log_data"])
    return rows


def _expected_qa_conversation(prompts: PaperPrompts) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": prompts.system_prompt("short")},
        {"role": "user", "content": "New task:\n" + HOTPOT["question"] + prompts.task_instruction},
        {"role": "assistant", "content": QA_STEPS[0][0]},
        {"role": "user", "content": QA_STEPS[0][1]},
        {"role": "assistant", "content": _code("I check the name.", "print('Nixon')\nz = undefined_var + 1")},
        {"role": "user", "content": PARTIAL_THEN_ERROR[0] + PARTIAL_THEN_ERROR[1]},  # two responses, one turn
        {"role": "assistant", "content": QA_STEPS[2][0]},
    ]


def test_released_rows_are_converted_by_the_papers_rules(prompts: PaperPrompts, tmp_path: Path) -> None:
    path = tmp_path / "released.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in _released_rows(prompts)))

    dataset, report = trajectories_to_dataset(path, protocol="paper", prompts_dir=PROMPTS_DIR, report=False)

    assert (report.total, report.kept, report.extra_conversations) == (6, 3, 1)
    assert {reason: count for reason, count in report.dropped.items() if count} == {
        "parse_error": 1, "low_score": 1, "failed": 1,
    }
    assert dict(report.kept_notes) == {"execution_error": 2, "max_steps": 1}
    assert dataset["env_id"] == [PAPER_QA_ENV_ID, PAPER_MATH_ENV_ID, PAPER_MATH_ENV_ID, PAPER_QA_ENV_ID]
    assert dataset[0]["messages"] == _expected_qa_conversation(prompts)
    assert dataset[3]["messages"] == _expected_qa_conversation(prompts)  # the <reference> hint is cut

    math, final_call = dataset[1]["messages"], dataset[2]["messages"]
    assert math[0]["content"] == prompts.system_prompt("short")  # MessageRole.X roles are read as the paper reads them
    assert [m["content"] for m in math[2:]] == [MATH_STEPS[0][0], MATH_STEPS[0][1], MATH_STEPS[1][0]]
    assert final_call[0]["content"] == prompts.final_answer_system()
    assert final_call[-2]["content"] == MATH_STEPS[-1][1] + prompts.final_answer_request(MATH["question"])
    assert final_call[-1] == {"role": "assistant", "content": MAX_STEPS_ANSWER}


def test_a_released_row_with_a_log_object_converts_like_its_json_text(prompts: PaperPrompts) -> None:
    row = _released_rows(prompts)[0]
    as_object = {**row, "log_data": json.loads(row["log_data"])}
    assert released_row_conversations(as_object, None) == released_row_conversations(row, None)
    assert released_row_conversations(row, None)[0][0]["content"] == prompts.system_prompt("full")
    with pytest.raises(ValueError, match="no messages"):
        released_row_conversations({"question": "Q?", "log_data": None, "error": "boom"}, None)


def test_the_env_of_a_released_row_comes_from_its_data() -> None:
    # the scorer's mark decides: the judge explains a factual answer, math is scored without words
    assert released_row_env_id({"question": "How many?", "true_answer": "3", "explanation": "Same number."}) \
        == PAPER_QA_ENV_ID
    assert released_row_env_id({"question": "Who?", "true_answer": "Nixon", "explanation": ""}) == PAPER_MATH_ENV_ID
    # without it, the question and answer: checked on the paper's own lists, where every row's kind is known
    lists = {
        PAPER_QA_ENV_ID: ["qa_dataset/train/hotpotqa_1000_20250402.json", "qa_dataset/test/bamboogle_125_20250507.json"],
        PAPER_MATH_ENV_ID: ["math_dataset/train/math_1000_20250414.json",
                            "math_dataset/train/math_medium_1000_20250430.json",
                            "math_dataset/test/aime_90_20250504.json"],
    }
    for env_id, files in lists.items():
        for relative in files:
            rows = [{"question": e["question"], "true_answer": e["answer"]} for e in _examples(relative)]
            right = sum(released_row_env_id(row) == env_id for row in rows)
            assert right / len(rows) >= 0.96, (relative, right, len(rows))
    # searching says nothing: the paper's teacher had web_search in math tasks too
    assert released_row_env_id({"question": "What is 17 * 23?", "true_answer": 391.0}) == PAPER_MATH_ENV_ID


# --- end to end: a released-format file distilled into a scratch student -------------------------


def test_a_released_file_distils_with_the_papers_texts(
    prompts: PaperPrompts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentdistill.experiments import run_experiment

    for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HOME": str(tmp_path / "home")}.items():
        monkeypatch.setenv(key, value)
    released = tmp_path / "released.jsonl"
    released.write_text("".join(json.dumps(row) + "\n" for row in _released_rows(prompts)))
    config = tmp_path / "sft.yaml"
    config.write_text(f"""
kind: sft
student: scratch:tiny
out: {tmp_path / 'student'}
trajectories: [{released}]
protocol: paper
prompts_dir: {PROMPTS_DIR}
settings: {{base: {TINY_SFT}, max_steps: 2}}
""")
    printed: list[str] = []
    plan = run_experiment(config, write=printed.append)
    assert f"the paper's prompts from {PROMPTS_DIR}" in plan.steps[0][0]
    text = "".join(printed)
    assert "final-answer conversations" in text and "load it with --policy hf:" in text
    assert (tmp_path / "student" / "model.safetensors").exists()
    trained = [json.loads(line) for line in (tmp_path / "student" / "sft_data.jsonl").read_text().splitlines()]
    assert len(trained) == 4
    assert trained[0]["messages"] == _expected_qa_conversation(prompts)
    assert _sha256(trained[0]["messages"][0]["content"]) == SHORT_PROMPT_SHA256
    assert trained[2]["messages"][-1]["content"] == MAX_STEPS_ANSWER
    assert json.loads((tmp_path / "student" / "sft_result.json").read_text())["global_step"] == 2


def test_an_sft_config_of_the_papers_protocol_names_its_prompts(tmp_path: Path) -> None:
    from agentdistill.experiments import ConfigError, load_experiment

    config = tmp_path / "sft.yaml"
    config.write_text("kind: sft\nstudent: scratch:tiny\nout: o\ntrajectories: [t.jsonl]\nprotocol: paper\n")
    with pytest.raises(ConfigError, match="protocol: paper needs prompts_dir"):
        load_experiment(config)
    config.write_text(config.read_text() + f"prompts_dir: {tmp_path}\n")
    from agentdistill.experiments import run_experiment

    with pytest.raises(ConfigError, match=r"prompts_dir: prompts_dir .* lacks code_agent.yaml"):
        run_experiment(config, dry_run=True, write=lambda text: None)


def test_distill_protocol_paper_on_the_cli(prompts: PaperPrompts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentdistill.cli import main

    for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HOME": str(tmp_path / "home")}.items():
        monkeypatch.setenv(key, value)
    released = tmp_path / "released.jsonl"
    released.write_text("".join(json.dumps(row) + "\n" for row in _released_rows(prompts)))
    settings = tmp_path / "sft.yaml"
    settings.write_text("\n".join(line for line in TINY_SFT.read_text().splitlines() if not line.startswith("max_steps"))
                        + "\nmax_steps: 2\n")
    argv = ["distill", "--trajectories", str(released), "--student", "scratch:tiny", "--out", str(tmp_path / "s"),
            "--config", str(settings), "--no-wandb", "--protocol", "paper", "--prompts-dir", str(PROMPTS_DIR)]
    assert main(argv) == 0
    trained = [json.loads(line) for line in (tmp_path / "s" / "sft_data.jsonl").read_text().splitlines()]
    assert trained[0]["messages"] == _expected_qa_conversation(prompts)
