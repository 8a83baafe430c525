"""An env with protocol="paper" speaks the paper's texts, byte for byte, on hand-written episodes over the shared
HotpotQA and MATH500 files; the rollout loop makes the paper's extra answer call after the last step.

Expected strings are the paper's (its repository at 0f6cae3, `src/smolagents/agents.py`, `memory.py`, `utils.py`,
`default_tools.py`), written out here as its code builds them. The policy in the loop test is scripted: it stands
for a model, whose texts these are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import pytest

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.envs.paper.codeact import PAPER_STOP, RETRY_ADVICE
from agentdistill.envs.paper.prompts import PaperPrompts
from agentdistill.envs.sag import encode_candidates
from agentdistill.errors import UserError
from agentdistill.policies.base import Completion, PolicyRequest, SamplingParams
from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts
from agentdistill.rollouts.records import read_trajectories
from tests.conftest import SHARED_DATA

PROMPTS = SHARED_DATA / "agent-distillation" / "prompts"
MATH500 = SHARED_DATA / "agent-distillation" / "math_dataset" / "test" / "math_500_20250414.json"
HOTPOT = SHARED_DATA / "hotpotqa" / "distractor_dev_500_hf.jsonl"
FENCE = "```"


def _code(code: str, thought: str = "I compute.") -> str:
    return f"Thought: {thought}\nCode:\n{FENCE}py\n{code}\n{FENCE}"


@pytest.fixture(scope="module")
def prompts() -> PaperPrompts:
    return PaperPrompts.load(PROMPTS)


@pytest.fixture()
def math_env() -> gym.Env:
    env = gym.make("AgentMath-MATH500-v0", data_path=str(MATH500), protocol="paper", prompts_dir=str(PROMPTS))
    yield env
    env.close()


def test_math_episode_texts(math_env: gym.Env, prompts: PaperPrompts) -> None:
    observation, info = math_env.reset(options={"task_index": 0})
    question = math_env.unwrapped.task.question
    assert observation == "New task:\n" + question + (PROMPTS / "task_instruction.txt").read_text()
    assert info["system_prompt"] == prompts.system_prompt("full") and info["protocol"] == "paper"
    assert math_env.unwrapped.system_prompt("short") == prompts.system_prompt("short")

    observation, _, _, _, info = math_env.step(_code("x = 2 + 3\nprint(x)"))
    assert info["action"] == _code("x = 2 + 3\nprint(x)") + "<end_code>"
    assert observation == "Call id: call_1\nObservation:\nExecution logs:\n5\nLast output from code snippet:\nNone"
    observation, *_ = math_env.step(_code("import numpy as np\ny = int(np.sum([x, 1]))"))
    assert observation == "Call id: call_2\nObservation:\nExecution logs:\nLast output from code snippet:\n6"
    observation, *_ = math_env.step(_code("print('partial')\nz = undefined_var + 1"))
    assert observation == (
        "Call id: call_3\nObservation:\nExecution logs:\npartial\n"
        "Call id: call_3\nError:\nCode execution failed at line 'z = undefined_var + 1' due to: NameError: name "
        "'undefined_var' is not defined" + RETRY_ADVICE
    )
    observation, *_ = math_env.step("Thought: no code here")
    assert observation == (
        "Error:\nError in code parsing:\nYour code snippet is invalid, because the regex pattern "
        "```(?:py|python)?\\n(.*?)\\n``` was not found in it.\nHere is your code snippet:\nThought: no code here\n"
        "Make sure to include code with the correct pattern, for instance:\nThoughts: Your thoughts\nCode:\n"
        "```py\n# Your python code here\n```<end_code>\nMake sure to provide correct code blobs." + RETRY_ADVICE
    )
    observation, reward, terminated, truncated, info = math_env.step(
        _code('final_answer("\\\\left( 3, \\\\frac{\\\\pi}{2} \\\\right)")', "I answer.")
    )
    assert terminated and not truncated and reward == 1.0 and info["score"] == 1.0
    assert observation == (
        "Call id: call_5\nObservation:\nExecution logs:\nLast output from code snippet:\n"
        "\\left( 3, \\frac{\\pi}{2} \\right)"
    )


def test_a_parse_error_over_several_lines_keeps_the_papers_indentation(math_env: gym.Env) -> None:
    math_env.reset(options={"task_index": 0})
    observation, *_ = math_env.step("Thought: all bad\nno code")
    assert "was not found in it.\n            Here is your code snippet:\n            Thought: all bad\nno code\n" in observation
    observation, *_ = math_env.step("Thought: I have the final answer\nbut no code")
    assert "\n                It seems like you're trying to return the final answer, you can do it as follows:" in observation
    assert "Call id" not in observation


def test_the_step_limit_asks_for_an_answer_and_grades_it(prompts: PaperPrompts) -> None:
    env = gym.make("AgentMath-MATH500-v0", data_path=str(MATH500), protocol="paper", prompts_dir=str(PROMPTS), max_steps=2)
    try:
        env.reset(options={"task_index": 0})
        _, _, _, truncated, info = env.step(_code("a = 1"))
        assert not truncated and "final_answer_request" not in info
        _, _, terminated, truncated, info = env.step(_code("print(a)"))
        assert not terminated and not truncated
        question = env.unwrapped.task.question
        assert info["final_answer_request"] == {
            "system": prompts.final_answer_system(), "append_to_last_user": prompts.final_answer_request(question)
        }
        _, reward, terminated, truncated, info = env.step("The point is (3, pi/2), that is \\boxed{(3,\\frac{\\pi}{2})}")
        assert truncated and not terminated and info["final_answer_call"] and reward == info["score"] == 1.0
    finally:
        env.close()


def test_search_results_are_the_papers(prompts: PaperPrompts) -> None:
    env = gym.make("AgentQA-HotpotQA-v0", data_path=str(HOTPOT), protocol="paper", prompts_dir=str(PROMPTS))
    try:
        env.reset(options={"task_index": 0})
        observation, *_ = env.step(_code('print(web_search(query="Denise Levertov"))'))
    finally:
        env.close()
    header = "Call id: call_1\nObservation:\nExecution logs:\n\nRetrieved documents:\n\n===== Document 0, similarity: "
    assert observation.startswith(header) and observation.endswith("\nLast output from code snippet:\nNone")
    documents = re.findall(r"\n\n===== Document (\d), similarity: (\d+\.\d\d) =====\n\"([^\"]+)\"\n", observation)
    assert len(documents) >= 2 and [int(number) for number, _, _ in documents] == list(range(len(documents)))
    assert documents[0][2] == "Denise Levertov"  # numbered from 0, the title in quotes as the corpus row writes it


def test_sag_votes_on_printed_output_with_logs() -> None:
    env = gym.make("AgentMath-MATH500-v0", data_path=str(MATH500), protocol="paper", prompts_dir=str(PROMPTS))
    try:
        candidates = [_code('final_answer("7")'), _code('final_answer("9")'), _code('final_answer("9")')]
        env.reset(options={"task_index": 0})
        *_, info = env.step(encode_candidates(candidates, vote="logs"))
        assert info["answer"] == "7" and info["sag"]["vote"] == "logs"  # all print nothing: a tie, the first wins
        env.reset(options={"task_index": 0})
        *_, info = env.step(encode_candidates(candidates, vote="answer"))
        assert info["answer"] == "9" and info["sag"]["votes"] == 2
    finally:
        env.close()


def test_prompts_dir_is_needed_and_only_with_the_paper_protocol() -> None:
    with pytest.raises(UserError, match="protocol='paper' needs prompts_dir=DIR"):
        gym.make("AgentMath-MATH500-v0", data_path=str(MATH500), protocol="paper")
    with pytest.raises(UserError, match="prompts_dir is read only with protocol='paper'"):
        gym.make("AgentMath-MATH500-v0", data_path=str(MATH500), prompts_dir=str(PROMPTS))
    with pytest.raises(UserError, match="protocol must be one of agentdistill, paper"):
        gym.make("AgentMath-MATH500-v0", data_path=str(MATH500), protocol="smolagents")


class Scripted:
    """Stands for a model: answers action requests from a script and the final-answer call with free text."""

    name = "scripted"

    def __init__(self, actions: Sequence[str], final: str) -> None:
        self.actions = list(actions)
        self.final = final
        self.calls: list[tuple[tuple[dict[str, str], ...], SamplingParams]] = []

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        answers = []
        for request in requests:
            self.calls.append((tuple(request.messages), params))
            final = request.messages[0]["content"].startswith("An agent tried")
            text = self.final if final else self.actions[sum(m["role"] == "assistant" for m in request.messages)]
            answers.append([Completion(text=text, prompt_tokens=1, completion_tokens=1, finish_reason="stop")])
        return answers

    def close(self) -> None:
        pass


def test_the_loop_makes_the_final_answer_call_and_records_it(tmp_path: Path, prompts: PaperPrompts) -> None:
    policy = Scripted([_code("a = 2"), _code("print(a * 3)")], final="It is \\boxed{(3,\\frac{\\pi}{2})}")
    envs = make_rollout_envs("AgentMath-MATH500-v0", 1, data_path=str(MATH500), protocol="paper",
                             prompts_dir=str(PROMPTS), max_steps=2)
    try:
        run_rollouts(envs, policy, env_id="AgentMath-MATH500-v0", task_indices=[0], out=str(tmp_path / "t.jsonl"),
                     sampling=SamplingParams(stop=("<end_code>",)), progress=False)
    finally:
        envs.close()
    (record,) = read_trajectories(tmp_path / "t.jsonl")
    assert record["run"]["protocol"] == "paper" and record["run"]["sampling"]["stop"] == list(PAPER_STOP)
    assert record["score"] == 1.0 and record["truncated"] and record["num_steps"] == 2
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant", "user", "assistant", "user"]
    last_observation = "Call id: call_2\nObservation:\nExecution logs:\n6\nLast output from code snippet:\nNone"
    assert record["messages"][-1]["content"] == last_observation
    call = record["final_answer_call"]
    question = MATH500_QUESTION()
    assert call["messages"][0] == {"role": "system", "content": prompts.final_answer_system()}
    assert call["messages"][1:-1] == record["messages"][1:-1]
    assert call["messages"][-1]["content"] == last_observation + prompts.final_answer_request(question)
    assert call["answer"] == record["answer"] == "It is \\boxed{(3,\\frac{\\pi}{2})}"
    final_params = policy.calls[-1][1]
    assert final_params.stop == () and final_params.n == 1 and policy.calls[0][1].stop == PAPER_STOP


def MATH500_QUESTION() -> str:  # noqa: N802 - reads like the constant it stands for
    env = gym.make("AgentMath-MATH500-v0", data_path=str(MATH500))
    try:
        return env.unwrapped.task_at(0).question
    finally:
        env.close()


def test_rollout_cli_under_the_paper_protocol_votes_on_logs(tmp_path: Path) -> None:
    from agentdistill.cli import main

    out = tmp_path / "t.jsonl"
    argv = ["rollout", "--env", "AgentMath-Synthetic-v0", "--policy", "expert:0.3", "--episodes", "2", "--num-envs", "2",
            "--sag", "3", "--protocol", "paper", "--prompts-dir", str(PROMPTS), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    records = list(read_trajectories(out))
    assert {record["run"]["protocol"] for record in records} == {"paper"}
    assert all(record["sag"]["vote"] == "logs" for record in records)
    assert all(step["sag"]["vote"] == "logs" for record in records for step in record["steps"])
    assert records[0]["messages"][1]["content"].startswith("New task:\n")
    without_prompts = [arg for arg in argv if arg not in ("--prompts-dir", str(PROMPTS))]
    assert main([*without_prompts[:-3], "--out", str(tmp_path / "u.jsonl")]) == 1  # --protocol paper, no directory
    assert not (tmp_path / "u.jsonl").exists()


def test_a_paper_math_agent_searches_the_retriever_it_is_given() -> None:
    """The paper's math agents had web_search too: here over a real retrieval server on 127.0.0.1 serving BM25
    over the wiki-18 sample."""
    from agentdistill.envs.tools.retrieval.bm25 import BM25Retriever
    from agentdistill.envs.tools.retrieval.corpus import load_corpus
    from agentdistill.envs.tools.retrieval.server import ServerThread

    corpus = SHARED_DATA / "corpora" / "flashrag_wiki18_sample_1000.jsonl"
    rows = {document.doc_id: document.contents for document in load_corpus(corpus)}
    with ServerThread.for_retriever(BM25Retriever(load_corpus(corpus))) as server:
        env = gym.make("AgentMath-MATH500-v0", data_path=str(MATH500), protocol="paper", prompts_dir=str(PROMPTS),
                       retriever=server.url)
        try:
            env.reset(options={"task_index": 0})
            observation, *_ = env.step(_code('print(web_search(query="polar coordinates"))'))
        finally:
            env.close()
    assert observation.startswith("Call id: call_1\nObservation:\nExecution logs:\n\nRetrieved documents:\n\n===== Document 0")
    first = observation.split(" =====\n", 1)[1].split("\n\n===== Document 1")[0]
    assert first in rows.values()  # the corpus row as written
    with pytest.raises(UserError, match="math envs search only under protocol='paper'"):
        gym.make("AgentMath-MATH500-v0", data_path=str(MATH500), retriever=server.url)


def test_a_paper_math_agent_without_a_retriever_sees_why_its_search_failed(math_env: gym.Env) -> None:
    math_env.reset(options={"task_index": 0})
    observation, *_ = math_env.step(_code('web_search(query="x")'))
    assert "Error:\nCode execution failed at line 'web_search(query=\"x\")' due to: " in observation
    assert "web_search has no retriever in this env: pass retriever=" in observation
