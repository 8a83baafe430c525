"""Teacher trajectories to SFT rows: the student's view of an episode and the paper's filter.

The trajectories are real: the rollout loop runs the scripted expert (which writes broken code 40% of
the time) on both synthetic envs with a 3-step budget, so the files hold correct episodes, episodes that
recovered from an execution error, and truncated ones. Cases the expert never produces (an unreadable
action, a duplicate, a policy failure, a wrong final answer) are hand-edited copies of real records.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import datasets
import gymnasium as gym
import pytest

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.distill.sft.paper_import import (
    import_paper_trajectories,
    load_paper_trajectories,
    paper_env_system_prompt,
)
from agentdistill.distill.sft.trajectories import (
    DROP_REASONS,
    FilterRules,
    short_system_prompt,
    trajectories_to_dataset,
)
from agentdistill.envs.codeact import parse_error_observation
from agentdistill.errors import UserError
from agentdistill.policies.expert import ExpertPolicy
from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts
from agentdistill.rollouts.records import read_trajectories

SYNTHETIC_ENVS = ("AgentQA-Synthetic-v0", "AgentMath-Synthetic-v0")
EPISODES = 20


@pytest.fixture(scope="module")
def prompts() -> dict[str, dict[str, str]]:
    """Each synthetic env's full and short system prompts, from the env itself."""
    result = {}
    for env_id in SYNTHETIC_ENVS:
        env = gym.make(env_id)
        try:
            result[env_id] = {variant: env.unwrapped.system_prompt(variant) for variant in ("full", "short")}
        finally:
            env.close()
    return result


@pytest.fixture(scope="module")
def rollout_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real teacher trajectories: an error-prone expert, 3 steps per episode, on both synthetic envs."""
    folder = tmp_path_factory.mktemp("trajectories")
    files = {}
    for env_id in SYNTHETIC_ENVS:
        out = folder / f"{env_id}.jsonl"
        envs = make_rollout_envs(env_id, 4, max_steps=3)
        try:
            run_rollouts(
                envs,
                ExpertPolicy(error_rate=0.4),
                env_id=env_id,
                task_indices=range(EPISODES),
                out=str(out),
                progress=False,
            )
        finally:
            envs.close()
        files[env_id] = out
    return files


@pytest.fixture(scope="module")
def records(rollout_files: dict[str, Path]) -> list[dict[str, Any]]:
    return [record for path in rollout_files.values() for record in read_trajectories(path)]


def _had_execution_error(record: dict[str, Any]) -> bool:
    return any(step.get("execution_error") is not None for step in record["steps"])


def _good(records: list[dict[str, Any]], *, recovered: bool = False) -> dict[str, Any]:
    """A real correct episode (one that recovered from an execution error, if asked)."""
    for record in records:
        if record["score"] == 1.0 and not record["truncated"] and _had_execution_error(record) == recovered:
            return copy.deepcopy(record)
    raise AssertionError("the rollouts produced no such episode; the fixture no longer covers this case")


# --- the short system prompt ----------------------------------------------------------------------


@pytest.mark.parametrize("env_id", SYNTHETIC_ENVS)
def test_short_prompt_is_rebuilt_exactly_from_the_long_one(env_id: str, prompts: dict[str, dict[str, str]]) -> None:
    full, short = prompts[env_id]["full"], prompts[env_id]["short"]
    assert full != short
    assert short_system_prompt(full) == short
    assert short_system_prompt(short) == short  # already short: unchanged


def test_short_prompt_refuses_a_prompt_without_tools() -> None:
    with pytest.raises(ValueError, match="tools"):
        short_system_prompt("You are a helpful assistant.")


def test_paper_envs_get_the_prompts_of_our_envs(prompts: dict[str, dict[str, str]]) -> None:
    # HotpotQA and MATH share tools, imports and examples with the synthetic QA and math envs
    assert paper_env_system_prompt("AgentQA-HotpotQA-v0") == prompts["AgentQA-Synthetic-v0"]["full"]
    assert paper_env_system_prompt("AgentMath-MATH-v0") == prompts["AgentMath-Synthetic-v0"]["full"]
    with pytest.raises(ValueError):
        paper_env_system_prompt("CartPole-v1")


# --- real rollouts --------------------------------------------------------------------------------


def test_real_rollouts_are_filtered_with_the_right_reasons(rollout_files: dict[str, Path], records: list[dict]) -> None:
    dataset, report = trajectories_to_dataset(list(rollout_files.values()), report=False)

    truncated = [r for r in records if r["truncated"]]
    correct = [r for r in records if not r["truncated"] and r["score"] == 1.0]
    assert truncated and correct, "the fixture must produce both truncated and finished episodes"
    assert all(not step["parse_error"] for r in records for step in r["steps"])  # broken code runs, and fails
    assert report.total == len(records) == 2 * EPISODES
    assert report.dropped["truncated"] == len(truncated)
    assert report.kept == len(correct) == len(dataset)
    assert report.kept + sum(report.dropped.values()) == report.total
    assert set(report.dropped) == set(DROP_REASONS)


def test_kept_conversations_are_the_students_view(
    rollout_files: dict[str, Path], records: list[dict], prompts: dict[str, dict[str, str]]
) -> None:
    dataset, _ = trajectories_to_dataset(list(rollout_files.values()), report=False)
    by_task = {(r["env_id"], r["task_index"]): r for r in records}
    assert len(dataset) > 0
    for row in dataset:
        record = by_task[(row["env_id"], row["task_index"])]
        messages = row["messages"]
        assert messages[0] == {"role": "system", "content": prompts[row["env_id"]]["short"]}
        assert messages[1] == record["messages"][1] and messages[1]["content"].startswith("Task: ")
        assert [m["role"] for m in messages[2:]] == ["assistant", "user"] * (len(messages) // 2 - 1) + ["assistant"]
        assert "final_answer(" in messages[-1]["content"]
        # only the final observation is gone; every other turn is the teacher's, unchanged
        assert (
            record["messages"][-1]["content"].startswith("Observation:")
            and "Final answer:" in record["messages"][-1]["content"]
        )
        assert messages[1:] == record["messages"][1:-1]
        assert row["num_steps"] == record["num_steps"] == (len(messages) - 2 + 1) // 2
        assert row["task_id"] == record["task_id"] and row["score"] == 1.0


def test_an_episode_that_recovered_from_an_execution_error_is_kept(records: list[dict]) -> None:
    recovered = _good(records, recovered=True)
    dataset, report = trajectories_to_dataset([recovered], report=False)
    assert report.kept == 1 and dataset[0]["task_id"] == recovered["task_id"]
    assert any("Error" in m["content"] for m in dataset[0]["messages"] if m["role"] == "user")

    strict = FilterRules(keep_recovered_errors=False)
    dataset, report = trajectories_to_dataset([recovered], filters=strict, report=False)
    assert len(dataset) == 0 and report.dropped["execution_error"] == 1


# --- hand-edited edge cases -----------------------------------------------------------------------


def _with_parse_error(record: dict[str, Any]) -> dict[str, Any]:
    """The same episode with an unreadable first action (no code block) that the teacher then fixed."""
    edited = copy.deepcopy(record)
    observation = parse_error_observation("no code block was found")
    edited["messages"][2:2] = [
        {"role": "assistant", "content": "Thought: I will look this up."},
        {"role": "user", "content": observation},
    ]
    edited["steps"].insert(
        0, {"thought": "I will look this up.", "code": None, "parse_error": True, "observation": observation}
    )
    edited["num_steps"] += 1
    return edited


def test_hand_edited_edge_cases_are_dropped_once_each(records: list[dict], rollout_files: dict[str, Path]) -> None:
    good = _good(records)
    failed = {**copy.deepcopy(good), "failed": "HTTPError: 500 from the teacher", "score": 0.0, "terminated": False}
    wrong = {**copy.deepcopy(good), "score": 0.0, "answer": "something else"}
    batch = [good, copy.deepcopy(good), _with_parse_error(good), failed, wrong]

    dataset, report = trajectories_to_dataset(batch, report=False)

    assert report.kept == len(dataset) == 1 and dataset[0]["task_id"] == good["task_id"]
    expected = {"duplicate": 1, "parse_error": 1, "failed": 1, "low_score": 1}
    assert {reason: count for reason, count in report.dropped.items() if count} == expected

    # a file and in-memory records mix; the copy of a task already in the file is a duplicate
    source = rollout_files[good["env_id"]]
    dataset, report = trajectories_to_dataset([source, copy.deepcopy(good)], report=False)
    assert report.dropped["duplicate"] == 1 and report.kept == len(dataset)

    dataset, report = trajectories_to_dataset(
        batch, filters=FilterRules(deduplicate=False, drop_parse_errors=False), report=False
    )
    assert report.kept == 3 and report.dropped["duplicate"] == 0


def test_broken_conversations_are_counted_not_raised(records: list[dict]) -> None:
    good = _good(records)
    no_task = {**copy.deepcopy(good), "task_index": 1001}
    del no_task["messages"][1]  # system, then straight to an action
    no_answer = {**copy.deepcopy(good), "task_index": 1002}
    no_answer["messages"][-2] = {"role": "assistant", "content": "Thought: done.\n```py\nprint('Goze')\n```<end_code>"}
    foreign_prompt = {**copy.deepcopy(good), "task_index": 1003}
    foreign_prompt["messages"][0] = {"role": "system", "content": "You are a helpful assistant."}

    dataset, report = trajectories_to_dataset([no_task, no_answer, foreign_prompt], report=False)

    assert len(dataset) == 0
    assert report.dropped["malformed"] == 2 and report.dropped["no_final_answer"] == 1
    with pytest.raises(ValueError, match="system_prompt_variant"):
        trajectories_to_dataset([good], system_prompt_variant="tiny", report=False)


def test_score_threshold_and_unscored_episodes(records: list[dict]) -> None:
    good = _good(records)
    partial = {**copy.deepcopy(good), "score": 0.5}
    unscored = {**copy.deepcopy(good), "score": None, "task_index": 999}
    _, report = trajectories_to_dataset([partial, unscored], report=False)
    assert report.kept == 0 and report.dropped["low_score"] == 1 and report.dropped["unscored"] == 1
    dataset, report = trajectories_to_dataset(
        [partial, unscored], filters=FilterRules(min_score=0.5, keep_unscored=True, deduplicate=False), report=False
    )
    assert report.kept == 2 and dataset["score"] == [0.5, None]


def test_full_variant_keeps_the_teachers_prompt(records: list[dict], prompts: dict[str, dict[str, str]]) -> None:
    good = _good(records)
    dataset, _ = trajectories_to_dataset([good], system_prompt_variant="full", report=False)
    assert dataset[0]["messages"][0]["content"] == good["messages"][0]["content"] == prompts[good["env_id"]]["full"]


def test_an_empty_input_keeps_the_schema() -> None:
    dataset, report = trajectories_to_dataset([], report=False)
    assert len(dataset) == 0 and report.total == 0
    assert dataset.column_names == ["messages", "task_id", "env_id", "task_index", "score", "num_steps"]


def test_the_report_is_logged_not_printed(records: list[dict], caplog: pytest.LogCaptureFixture, capsys) -> None:
    with caplog.at_level(logging.INFO, logger="agentdistill.distill.sft.trajectories"):
        _, report = trajectories_to_dataset([_good(records)])
    assert "kept 1 of 1 episodes" in caplog.text
    assert capsys.readouterr().out == ""
    report.describe()
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["kept", "1"] and "duplicate" in table


# --- the paper's released trajectories ------------------------------------------------------------

PAPER_SYSTEM = (
    "You are an expert assistant who can solve any task using code blobs. You will be given a task to solve "
    "as best you can.\n...\nOn top of performing computations in the Python code snippets that you create, you "
    "only have access to these tools:\n"
    "- web_search: Uses semantic search to retrieve the parts of 2018 wikipedia that could be most relevant.\n"
    "    Takes inputs: {'query': {'type': 'string', 'description': 'The query to perform.'}}\n"
    "    Returns an output of type: string\n"
    "- final_answer: Provides a final answer to the given problem.\n"
    "    Takes inputs: {'answer': {'type': 'any', 'description': 'The final answer to the problem'}}\n"
    "    Returns an output of type: any\n\n"
    "Now Begin! If you solve the task correctly, you will receive a reward of $1,000,000."
)
TEACHER_INSTRUCTION = (
    "\n\nIMPORTANT: Always provide a 'Thought:' sequence, and a 'Code:\n```py' sequence ending with "
    "'```<end_code>' sequence, else you will fail."
)
RETRY = (
    "\nNow let's retry: take care not to repeat previous errors! "
    "If you have retried several times, try a completely different approach.\n"
)


def _parts(text: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": text}]


def _code(thought: str, code: str) -> str:
    return f"Thought: {thought}\nCode:\n```py\n{code}\n```<end_code>"


def _tool_call(call: int, code: str) -> dict[str, Any]:
    arguments = {
        "id": f"call_{call}",
        "type": "function",
        "function": {"name": "python_interpreter", "arguments": code},
    }
    return {"role": "tool-call", "content": _parts(f"Calling tools:\n{[arguments]}")}


def _paper_log(question: str, turns: list[tuple[str, str | None, str]], *, enum_roles: bool = False) -> dict[str, Any]:
    """A smolagents 1.13 run log: ``turns`` are (model output, code or None if unparsable, tool response)."""

    def role(name: str) -> str:
        return f"MessageRole.{name.upper().replace('-', '_')}" if enum_roles else name

    messages = [
        {"role": role("system"), "content": _parts(PAPER_SYSTEM)},
        {"role": role("user"), "content": _parts(f"New task:\n{question}{TEACHER_INSTRUCTION}")},
    ]
    for call, (output, code, response) in enumerate(turns, start=1):
        messages.append({"role": role("assistant"), "content": _parts(output)})
        if code is not None:
            messages.append({**_tool_call(call, code), "role": role("tool-call")})
            response = f"Call id: call_{call}\n{response}"
        messages.append({"role": role("tool-response"), "content": _parts(response)})
    return {
        "messages": messages,
        "original_memory": {"steps": []},
        "metadata": {"task": question, "total_steps": len(turns) + 1},
    }


QA_TURNS = [
    (
        _code("I will search for Lucca.", 'print(web_search(query="Lucca")'),
        'print(web_search(query="Lucca")',
        "Error:\nCode parsing failed on line 1 due to: SyntaxError\n"
        "print(web_search(query=\"Lucca\")\n ^\nError: '(' was never closed" + RETRY,
    ),
    (
        _code("I missed a parenthesis.", 'print(web_search(query="Lucca"))'),
        'print(web_search(query="Lucca"))',
        (
            "Observation:\nExecution logs:\nLucca is a city in Tuscany, on the river Serchio.\n"
            "Last output from code snippet:\nNone"
        ),
    ),
    (
        _code("The river is the Serchio.", 'final_answer("Serchio")'),
        'final_answer("Serchio")',
        "Observation:\nExecution logs:\nLast output from code snippet:\nSerchio",
    ),
]
MATH_TURNS = [
    (
        _code("I compute the product.", "print(17 * 23)"),
        "print(17 * 23)",
        "Observation:\nExecution logs:\n391\nLast output from code snippet:\nNone",
    ),
    (
        _code("The product is 391.", "final_answer(391)"),
        "final_answer(391)",
        "Observation:\nExecution logs:\nLast output from code snippet:\n391",
    ),
]
UNPARSABLE_TURNS = [
    (
        "Thought: I know this one, it is 6.",
        None,
        "Error:\nError in code parsing:\n"
        "Your code snippet is invalid, because the regex pattern ```(?:py|python)?\\n(.*?)\\n``` "
        "was not found in it.\nMake sure to provide correct code blobs." + RETRY,
    ),
    (
        _code("I give the answer.", "final_answer(6)"),
        "final_answer(6)",
        "Observation:\nExecution logs:\nLast output from code snippet:\n6",
    ),
]
OUT_OF_STEPS_TURNS = [
    (
        _code("I search.", 'print(web_search(query="Tosca"))'),
        'print(web_search(query="Tosca"))',
        "Observation:\nExecution logs:\nTosca is an opera by Giacomo Puccini.\nLast output from code snippet:\nNone",
    ),
]


def _paper_rows() -> list[dict[str, Any]]:
    """Rows as the hub serves them: ``log_data`` is JSON text; the last run crashed and left none."""

    def row(question: str, answer: str, generated: str | None, score: int, turns: list, **log_options: Any) -> dict:
        log = json.dumps(_paper_log(question, turns, **log_options))
        return {
            "model_id": "Qwen/Qwen2.5-32B-Instruct",
            "question": question,
            "true_answer": answer,
            "generated_answer": generated,
            "score": score,
            "log_data": log,
        }

    return [
        row("Which river flows through Lucca?", "Serchio", "Serchio", 1, QA_TURNS),
        row("What is 17 * 23?", "391", "391", 1, MATH_TURNS, enum_roles=True),
        row("What is 2 * 3?", "6", "6", 1, UNPARSABLE_TURNS),
        row("What is 17 * 23?", "392", "391", 0, MATH_TURNS),
        row("Who composed Tosca?", "Giacomo Puccini", "Giacomo Puccini", 1, OUT_OF_STEPS_TURNS),
        {
            "model_id": "Qwen/Qwen2.5-32B-Instruct",
            "question": "Who wrote Duno?",
            "true_answer": "Pame",
            "generated_answer": None,
            "score": 0,
            "log_data": None,
        },
    ]


@pytest.fixture
def paper_dataset(tmp_path: Path) -> datasets.Dataset:
    """Stands in for ``load_dataset("agent-distillation/Qwen2.5-32B-Instruct_agent_trajectories_2k")``
    (no hub here): the same row shape, written locally and loaded with the same library."""
    path = tmp_path / "paper_trajectories.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in _paper_rows()))
    return datasets.load_dataset("json", data_files=str(path), split="train")


def test_paper_trajectories_import_into_rows(
    paper_dataset: datasets.Dataset, prompts: dict[str, dict[str, str]]
) -> None:
    records = import_paper_trajectories(paper_dataset)
    # the env comes from the row's data (a number asked of numbers is math), not from whether it searched
    assert [r["env_id"] for r in records] == [
        "AgentQA-HotpotQA-v0",
        "AgentMath-MATH-v0",
        "AgentMath-MATH-v0",
        "AgentMath-MATH-v0",
        "AgentQA-HotpotQA-v0",
        "AgentQA-HotpotQA-v0",
    ]
    assert records[-1]["failed"] and records[-1]["messages"] == []

    dataset, report = trajectories_to_dataset(records, report=False)

    assert report.total == 6 and report.kept == len(dataset) == 2
    assert {k: v for k, v in report.dropped.items() if v} == {
        "parse_error": 1,
        "low_score": 1,
        "truncated": 1,
        "failed": 1,
    }
    qa, math = dataset[0], dataset[1]
    assert qa["messages"] == [
        {"role": "system", "content": prompts["AgentQA-Synthetic-v0"]["short"]},
        {"role": "user", "content": "Task: Which river flows through Lucca?"},
        {"role": "assistant", "content": QA_TURNS[0][0]},
        {"role": "user", "content": QA_TURNS[0][2]},  # the recovered execution error stays, without its call id
        {"role": "assistant", "content": QA_TURNS[1][0]},
        {"role": "user", "content": QA_TURNS[1][2]},
        {"role": "assistant", "content": QA_TURNS[2][0]},
    ]
    assert qa["score"] == 1.0 and qa["num_steps"] == 3 and qa["task_id"].startswith("paper-")
    assert math["messages"][0]["content"] == prompts["AgentMath-Synthetic-v0"]["short"]  # MessageRole.X roles read too
    assert [m["role"] for m in math["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert math["messages"][-1]["content"] == MATH_TURNS[-1][0]


def test_paper_import_accepts_dict_logs_and_fixed_env(prompts: dict[str, dict[str, str]]) -> None:
    rows = [
        {
            "question": "What is 17 * 23?",
            "true_answer": "391",
            "score": True,
            "log_data": _paper_log("What is 17 * 23?", MATH_TURNS),
        }
    ]
    records = import_paper_trajectories(rows, env_id="AgentQA-HotpotQA-v0")
    assert records[0]["env_id"] == "AgentQA-HotpotQA-v0" and records[0]["score"] == 1.0
    assert records[0]["messages"][0]["content"] == prompts["AgentQA-Synthetic-v0"]["full"]
    # the record keeps the final observation, like the rollout loop's records
    assert records[0]["messages"][-1] == {"role": "user", "content": MATH_TURNS[-1][2]}
    dataset, report = trajectories_to_dataset(records, report=False)
    assert report.kept == 1 and dataset[0]["messages"][0]["content"] == prompts["AgentQA-Synthetic-v0"]["short"]


def test_load_paper_trajectories_goes_through_load_dataset(
    paper_dataset: datasets.Dataset, monkeypatch: pytest.MonkeyPatch, prompts: dict[str, dict[str, str]]
) -> None:
    """The hub cannot be reached here: ``load_dataset`` is replaced by one serving the same rows locally."""
    calls = []

    def fake_load_dataset(hub_id: str, split: str) -> datasets.Dataset:
        calls.append((hub_id, split))
        return paper_dataset

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = load_paper_trajectories("agent-distillation/Qwen2.5-32B-Instruct_agent_trajectories_2k_prefix")
    assert calls == [("agent-distillation/Qwen2.5-32B-Instruct_agent_trajectories_2k_prefix", "train")]
    assert rows == paper_dataset.to_list()
    # the rows themselves go to the converter, which recognises them and imports them for this package's envs
    dataset, report = trajectories_to_dataset(rows, report=False)
    assert report.total == 6 and report.kept == 2
    assert dataset[0]["messages"][0]["content"] == prompts["AgentQA-Synthetic-v0"]["short"]


def test_a_file_of_released_rows_is_recognised_and_imported(tmp_path: Path, prompts: dict[str, dict[str, str]]) -> None:
    path = tmp_path / "released.jsonl"
    text = "".join(json.dumps(row) + "\n" for row in _paper_rows())
    path.write_text(text[:-1])  # an exported file may end without a newline: its last row still counts
    from_file, report = trajectories_to_dataset(path, report=False)
    from_rows, _ = trajectories_to_dataset(import_paper_trajectories(_paper_rows()), report=False)
    assert report.total == 6 and from_file.to_list() == from_rows.to_list()


def test_a_line_that_is_no_episode_is_named_with_its_file_and_line(tmp_path: Path, records: list[dict]) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(_good(records)) + "\n" + json.dumps({"question": "Q?", "answer": "A"}) + "\n")
    with pytest.raises(UserError, match=rf"{path}: line 2 is neither a trajectory record of agentdistill"):
        trajectories_to_dataset(path, report=False)
    path.write_text('[{"question": "Q?"}]\n')
    with pytest.raises(UserError, match=rf"{path}: line 1 is a JSON list, not an object"):
        trajectories_to_dataset(path, report=False)


def test_records_of_the_papers_protocol_are_not_converted_as_ours(tmp_path: Path, records: list[dict]) -> None:
    paper = _good(records)
    paper["run"] = {**paper["run"], "protocol": "paper"}
    path = tmp_path / "paper.jsonl"
    path.write_text(json.dumps(_good(records)) + "\n" + json.dumps(paper) + "\n")
    with pytest.raises(UserError, match=rf"{path}: line 2 was played under protocol 'paper'"):
        trajectories_to_dataset(path, report=False)
