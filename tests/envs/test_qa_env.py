"""QA envs on real data: real BM25 over the pooled paragraphs, real worker processes, real grading."""

from __future__ import annotations

import gymnasium as gym
import pytest

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.envs.qa import AgentQAEnv
from agentdistill.envs.tools.sandbox import SandboxLimits
from tests.conftest import SHARED_DATA, code_action, env_kwargs

HOTPOT = str(SHARED_DATA / "hotpotqa/distractor_dev_500_hf.jsonl")


@pytest.fixture(scope="module")
def hotpot() -> AgentQAEnv:
    env = gym.make("AgentQA-HotpotQA-v0", data_path=HOTPOT, sandbox_limits=SandboxLimits(step_timeout_s=1.0, kill_grace_s=1.0))
    yield env
    env.close()


def test_reset_gives_the_question_and_the_prompt(hotpot: gym.Env) -> None:
    observation, info = hotpot.reset(options={"task_index": 0})
    assert observation == "Task: Between Harvey Pekar and Denise Levertov who was born earlier?"
    assert info["task_id"] == "5a7d5c175542991319bc93b1"
    assert "web_search(query: str) -> str" in info["system_prompt"]
    assert "final_answer" in info["system_prompt"] and "Here are examples" in info["system_prompt"]
    short = hotpot.unwrapped.system_prompt("short")
    assert "web_search" in short and "Here are examples" not in short and "Rules:" not in short


def test_seeded_reset_is_reproducible(hotpot: gym.Env) -> None:
    first = hotpot.reset(seed=123)
    second = hotpot.reset(seed=123)
    assert first[0] == second[0] and first[1]["task_index"] == second[1]["task_index"]


def test_hand_written_episode_searches_reads_and_is_rewarded(hotpot: gym.Env) -> None:
    hotpot.reset(options={"task_index": 0})
    observation, reward, terminated, truncated, info = hotpot.step(
        code_action('results = web_search("Denise Levertov")\nprint(results)', "Look up Levertov.")
    )
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert "Title: Denise Levertov" in observation and "1923" in observation
    assert info["tool_calls"][0]["name"] == "web_search" and info["tool_calls"][0]["args"] == ("Denise Levertov",)
    observation, *_ = hotpot.step(code_action('print(web_search("Harvey Pekar"))'))
    assert "Title: Harvey Pekar" in observation and "1939" in observation
    # `results` from step 1 is still defined in step 3: the worker keeps the episode's variables
    observation, reward, terminated, truncated, info = hotpot.step(
        code_action('assert "Levertov" in results\nfinal_answer("Denise Levertov")')
    )
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert info["answer"] == "Denise Levertov" and info["gold"] == "Denise Levertov" and info["score"] == 1.0
    assert info["metrics"]["em"] == 1.0


def test_wrong_answer_scores_zero(hotpot: gym.Env) -> None:
    hotpot.reset(options={"task_index": 0})
    _, reward, terminated, _, info = hotpot.step(code_action('final_answer("Harvey Pekar")'))
    assert terminated and reward == 0.0 and info["score"] == 0.0


def test_errors_are_observations_that_use_a_step(hotpot: gym.Env) -> None:
    hotpot.reset(options={"task_index": 1})
    observation, reward, terminated, truncated, info = hotpot.step("I think the answer is Paris.")
    assert observation.startswith("Error in code parsing") and info["parse_error"]
    assert not terminated and not truncated and info["step"] == 1
    observation, *_, info = hotpot.step(code_action("x = undefined_name + 1"))
    assert "Code execution failed at line 'x = undefined_name + 1' due to: NameError" in observation
    assert info["execution_error"] and not info["parse_error"]


def test_infinite_loop_is_stopped_and_the_next_step_works(hotpot: gym.Env) -> None:
    hotpot.reset(options={"task_index": 2})
    observation, *_, info = hotpot.step(code_action("while True:\n    pass"))
    assert "timed out" in observation and info["timed_out"]
    observation, *_ = hotpot.step(code_action("print(2 + 2)"))
    assert "Execution logs:\n4" in observation


def test_max_steps_truncates(hotpot: gym.Env) -> None:
    hotpot.reset(options={"task_index": 3})
    for step in range(1, 6):
        _, reward, terminated, truncated, info = hotpot.step(code_action(f"print({step})"))
        assert not terminated and reward == 0.0
        assert truncated == (step == 5)
    assert info["score"] == 0.0 and info["answer"] is None
    with pytest.raises(RuntimeError, match="reset"):
        hotpot.step(code_action("print('too late')"))


def test_task_index_is_validated(hotpot: gym.Env) -> None:
    with pytest.raises(ValueError, match=r"task_index.*\[0, 500\).*500"):
        hotpot.reset(options={"task_index": 500})


def test_f1_reward_gives_partial_credit() -> None:
    env = AgentQAEnv("HotpotQA", data_path=HOTPOT, reward="f1", max_tasks=5)
    try:
        env.reset(options={"task_index": 0})
        _, reward, *_ = env.step(code_action('final_answer("Levertov")'))
        assert reward == pytest.approx(2 / 3)
    finally:
        env.close()


def test_corpus_pooled_from_every_task_paragraph() -> None:
    env = AgentQAEnv("HotpotQA", data_path=HOTPOT, max_tasks=3)
    distinct = {(d.title, d.text) for task in env.tasks for d in task.documents}
    assert len(env.retriever.documents) == len(distinct) >= 25


def test_bamboogle_without_corpus_says_what_to_pass() -> None:
    with pytest.raises(ValueError, match=r"corpus=PATH.*wiki-18\.jsonl"):
        AgentQAEnv("Bamboogle", data_path=env_kwargs("AgentQA-Bamboogle-v0")["data_path"])


def test_corpus_file_replaces_the_pooled_paragraphs() -> None:
    env = gym.make("AgentQA-Bamboogle-v0", **env_kwargs("AgentQA-Bamboogle-v0"))
    try:
        env.reset(options={"task_index": 0})
        observation, *_ = env.step(code_action('print(web_search("Evan Morris lobbyist Genentech"))'))
        assert "Title: Evan Morris" in observation
        assert len(env.unwrapped.retriever.documents) == 1000
    finally:
        env.close()


def test_musique_answer_is_findable_by_search() -> None:
    env = gym.make("AgentQA-MuSiQue-v0", **env_kwargs("AgentQA-MuSiQue-v0"), max_tasks=20)
    try:
        _, info = env.reset(options={"task_index": 0})
        task = env.unwrapped.task
        supporting = [d for d in task.documents if task.answer in d.text]
        assert supporting, "the MuSiQue answer should appear in one of its paragraphs"
        observation, *_ = env.step(code_action(f"print(web_search({supporting[0].title!r}))"))
        assert task.answer in observation
    finally:
        env.close()


def test_e2b_sandbox_is_refused_at_construction_for_tools_that_live_here(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentdistill.envs.tools.sandbox import SandboxUnavailableError

    monkeypatch.setenv("E2B_API_KEY", "e2b_test_key_never_sent")  # no network call happens at construction
    with pytest.raises(SandboxUnavailableError, match="web_search"):
        AgentQAEnv("HotpotQA", data_path=HOTPOT, max_tasks=2, sandbox="e2b")
