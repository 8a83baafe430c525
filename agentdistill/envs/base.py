"""The CodeAct environment contract shared by every task.

An episode is one task. ``reset`` returns the task text and, in ``info``, what a policy needs to build
its prompt (the system prompt with this env's tools, the task id). ``step`` takes what a model wrote
(``Thought: ...`` plus a python code block), runs the code in the episode's sandbox with the tools
bound, and returns the observation text. ``final_answer(...)`` terminates the episode with the grader's
score as reward; ``max_steps`` truncates it. Nothing the model writes raises: a malformed action or a
failing cell is an observation that uses a step.

Subclasses supply the tasks, the parent-side tools, the allowed imports, the prompt examples and the
grader (see :class:`CodeActEnv`'s abstract methods).
"""

from __future__ import annotations

import abc
import os
from dataclasses import asdict
from typing import Any, Callable, Collection, Mapping, Sequence

import gymnasium as gym

from agentdistill.envs.codeact import (
    ParsedAction,
    execution_observation,
    final_observation,
    parse_action,
    parse_error_observation,
    truncate_middle,
)
from agentdistill.envs.graders import Grader
from agentdistill.envs.graders.qa import normalize_answer as normalize_qa_answer
from agentdistill.envs.paper import ProtocolName, check_protocol_name
from agentdistill.envs.paper.codeact import PaperParse
from agentdistill.envs.paper.codeact import assistant_turn as paper_assistant_turn
from agentdistill.envs.paper.codeact import parse_action as paper_parse_action
from agentdistill.envs.paper.prompts import PaperPrompts
from agentdistill.envs.paper.protocol import PaperEpisode, paper_module_roots
from agentdistill.envs.prompts import FINAL_ANSWER_TOOL, PromptVariant, ToolSpec, build_system_prompt
from agentdistill.envs.sag import CandidateOutcome, decode_sag, select_candidate, vote_key
from agentdistill.envs.spaces import BoundedText
from agentdistill.envs.tasks import Task
from agentdistill.envs.tools.sandbox import SandboxLimits, SandboxSpec, make_sandbox
from agentdistill.envs.tools.sandbox.base import ExecutionResult, ForkableSandbox, Sandbox, ToolFunction
from agentdistill.errors import UserError

DEFAULT_MAX_STEPS = 5
DEFAULT_MAX_OBSERVATION_CHARS = 20_000
DEFAULT_MAX_ACTION_CHARS = 131_072
UNLIMITED_TASK_SEEDS = 2**31 - 1
"""Range a seeded reset draws task indices from when the env generates unlimited tasks."""


class CodeActEnv(gym.Env[str, str], abc.ABC):
    """A task-solving episode in which the agent acts by writing python code.

    Args:
        max_steps: actions per episode before truncation (5 in the paper).
        prompt_variant: ``"full"`` system prompt (examples and rules, for teachers) or ``"short"``
            (for fine-tuned students). Both are always available from :meth:`system_prompt`.
        max_observation_chars: observations longer than this keep their head and tail.
        max_action_chars: longer actions are refused with an observation, unparsed.
        sandbox: ``"local"`` (a worker process per episode) or a factory, see
            :func:`agentdistill.envs.tools.sandbox.make_sandbox`.
        sandbox_limits: time, memory and output limits for the code.
        render_mode: ``"ansi"`` to get the episode transcript from :meth:`render`.
        protocol: ``"agentdistill"`` (our prompts and observation texts) or ``"paper"``: the paper's agent byte
            for byte (its system prompts, task turn, observation, error and document texts, tools and imports;
            :mod:`agentdistill.envs.paper.protocol`), for reproducing its numbers.
        prompts_dir: with ``protocol="paper"``, the directory holding the paper's prompt files
            (:data:`agentdistill.envs.paper.prompts.PROMPT_FILES`).
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 1}
    """``render_fps`` means nothing for a text transcript, but gymnasium's checker and its recording
    wrappers expect one beside any render mode."""

    def __init__(
        self,
        *,
        max_steps: int = DEFAULT_MAX_STEPS,
        prompt_variant: PromptVariant = "full",
        max_observation_chars: int = DEFAULT_MAX_OBSERVATION_CHARS,
        max_action_chars: int = DEFAULT_MAX_ACTION_CHARS,
        sandbox: SandboxSpec = "local",
        sandbox_limits: SandboxLimits | None = None,
        render_mode: str | None = None,
        protocol: ProtocolName = "agentdistill",
        prompts_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        _require_positive_int("max_steps", max_steps)
        check_protocol_name(protocol)
        if prompts_dir is not None and protocol != "paper":
            raise UserError("prompts_dir is read only with protocol='paper'; pass protocol='paper' too")
        self.protocol: ProtocolName = protocol
        self._paper = PaperEpisode(PaperPrompts.load(prompts_dir)) if protocol == "paper" else None
        if self._paper is not None:
            self.allowed_imports = paper_module_roots()
        _require_positive_int("max_observation_chars", max_observation_chars)
        _require_positive_int("max_action_chars", max_action_chars)
        if prompt_variant not in ("full", "short"):
            raise ValueError(f"prompt_variant must be 'full' or 'short', got {prompt_variant!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.max_steps = max_steps
        self.prompt_variant: PromptVariant = prompt_variant
        self.max_observation_chars = max_observation_chars
        self.render_mode = render_mode
        self.observation_space = BoundedText(max_observation_chars)
        self.action_space = BoundedText(max_action_chars)
        self._sandbox_spec = sandbox
        self._sandbox_limits = sandbox_limits or SandboxLimits()
        self._sandbox: Sandbox | None = None
        self._task: Task | None = None
        self._steps = 0
        self._done = True
        self._transcript: list[str] = []

    # --- what a task family provides ------------------------------------------------------------

    @property
    @abc.abstractmethod
    def num_tasks(self) -> int | None:
        """How many tasks the loaded split holds; ``None`` when tasks are generated without limit."""

    @abc.abstractmethod
    def task_at(self, index: int) -> Task:
        """The task with this index (``0 <= index < num_tasks``, or any non-negative int if unlimited)."""

    @abc.abstractmethod
    def _tools(self) -> Mapping[str, ToolFunction]:
        """Parent-side tools bound into model code, besides ``final_answer``."""

    @abc.abstractmethod
    def _tool_specs(self) -> Sequence[ToolSpec]:
        """How :meth:`_tools` are described in the system prompt."""

    allowed_imports: Collection[str] | None = None
    prompt_examples: Sequence[str] = ()
    _grader: Grader
    """Set by each task family's ``__init__``: scores a final answer against the gold answers."""

    @property
    def grader(self) -> Grader:
        """Scores a final answer against the task's gold answers."""
        return self._grader

    def _prepare_task(self, task: Task) -> None:
        """Hook run at reset before the first step (e.g. a per-task retrieval index)."""

    def _reset_info(self, task: Task) -> dict[str, Any]:
        """Extra keys for the ``info`` returned by :meth:`reset`."""
        return {}

    # --- the gymnasium API ------------------------------------------------------------------------

    @property
    def task(self) -> Task | None:
        """The current episode's task (``None`` before the first reset)."""
        return self._task

    def system_prompt(self, variant: PromptVariant | None = None) -> str:
        """The CodeAct system prompt with this env's tools, in the given (or the env's) variant."""
        if self._paper is not None:
            return self._paper.prompts.system_prompt(variant or self.prompt_variant)
        return build_system_prompt(
            [*self._tool_specs(), FINAL_ANSWER_TOOL],
            variant=variant or self.prompt_variant,
            examples=self.prompt_examples,
            allowed_imports=self.allowed_imports,
        )

    def describe_task(self, index: int) -> tuple[Task, dict[str, Any]]:
        """The task at ``index`` and the keys of :meth:`reset`'s ``info`` that depend only on it (``task_id``,
        ``task_index``, ``question`` and the family's extras, such as a synthetic task's ``plan``), without starting an episode.

        For code that asks a policy about tasks outside an episode (FTP prefixes): a reset would also reset the
        sandbox and build per-task tools, which costs far more than reading the task.
        """
        index = self._choose_task_index({"task_index": index})
        task = self.task_at(index)
        return task, {"task_id": task.task_id, "task_index": index, "question": task.question, **self._reset_info(task)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode on ``options["task_index"]``, or on a task the seeded RNG picks."""
        super().reset(seed=seed)
        task, described = self.describe_task(self._choose_task_index(options or {}))
        self._task = task
        self._steps = 0
        self._done = False
        self._ensure_sandbox().reset()
        self._prepare_task(task)
        if self._paper is not None:
            self._paper.start()
            observation = self._paper.prompts.task_turn(task.question)
        else:
            observation = truncate_middle(f"Task: {task.question}", self.max_observation_chars)
        self._transcript = [observation]
        info = {
            **described, "system_prompt": self.system_prompt(), "isolation": self._ensure_sandbox().isolation,
            "protocol": self.protocol,
        }
        return observation, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Parse and run one action; see the module docstring for the episode rules.

        An action made by :func:`agentdistill.envs.sag.encode_candidates` carries several candidate
        actions: the env runs them all from the current state, keeps the majority one (SAG) and steps
        with it; ``info["action"]`` is then the chosen action and ``info["sag"]`` the vote.
        """
        if self._task is None or self._done:
            raise RuntimeError("step() called on a finished or never-started episode: call reset() first")
        if not isinstance(action, str):
            raise TypeError(f"an action is the text a model wrote (str), got {type(action).__name__}")
        if self._paper is not None:
            return self._paper_step(action)
        self._steps += 1
        decoded = decode_sag(action)
        if decoded is None:
            chosen, parsed, result, sag = action, self._parse(action), None, None
            if parsed.code is not None:
                result = self._ensure_sandbox().run(parsed.code)
        else:
            chosen, parsed, result, sag = self._choose_candidate(*decoded)
        info: dict[str, Any] = {"task_id": self._task.task_id, "step": self._steps, "action": chosen}
        if sag is not None:
            info["sag"] = sag
        observation, reward, terminated = self._outcome(parsed, result, info)
        truncated = not terminated and self._steps >= self.max_steps
        if truncated:
            info.update(answer=None, gold=self._task.answer, score=0.0)
        self._done = terminated or truncated
        observation = truncate_middle(observation, self.max_observation_chars)
        self._transcript += [chosen, observation]
        return observation, reward, terminated, truncated, info

    def normalize_answer(self, answer: str) -> str:
        """How SAG compares final answers: QA envs compare SQuAD-normalised text (math envs override)."""
        return normalize_qa_answer(answer)

    def _parse(self, action: str) -> ParsedAction:
        if len(action) > self.action_space.max_length:
            reason = f"the action is {len(action)} characters long, more than the {self.action_space.max_length} allowed"
            return ParsedAction(thought="", code=None, error=reason)
        return parse_action(action)

    def _outcome(
        self, parsed: ParsedAction, result: ExecutionResult | None, info: dict[str, Any]
    ) -> tuple[str, float, bool]:
        """The observation, reward and termination of a parsed action and what running it produced."""
        info.update(thought=parsed.thought, code=parsed.code, parse_error=parsed.code is None)
        if parsed.code is None or result is None:
            return parse_error_observation(parsed.error or "unreadable action"), 0.0, False
        info.update(_execution_info(result))
        if result.is_final:
            reward = self._finish(result.final_answer or "", info)
            return final_observation(result.logs, result.final_answer or ""), reward, True
        return execution_observation(result.logs, result.value, result.error), 0.0, False

    def _choose_candidate(
        self, actions: list[str], vote: str = "answer"
    ) -> tuple[str, ParsedAction, ExecutionResult | None, dict[str, Any]]:
        """Run every parsable candidate from the current state, vote, and adopt the winner's state."""
        parsed = [self._parse(action) for action in actions]
        results, winner, info = self._vote(
            [p.code for p in parsed], vote, lambda _, result: execution_observation(result.logs, result.value, result.error)
        )
        return actions[winner], parsed[winner], results.get(winner), info

    def _paper_step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """One step of the paper's protocol (:class:`agentdistill.envs.paper.protocol.PaperEpisode`): an action
        step, or, after ``max_steps`` action steps without an answer, the free-text answer of the extra model call
        the paper makes then (``info["final_answer_request"]`` on the last action step says what to send)."""
        assert self._paper is not None and self._task is not None
        info: dict[str, Any] = {"task_id": self._task.task_id}
        if self._paper.awaiting_answer:
            info.update(step=self._steps, action=action, final_answer_call=True, parse_error=False)
            reward = self._finish(action, info)
            self._done = True
            self._transcript.append(action)
            return "", reward, False, True, info
        self._steps += 1
        info["step"] = self._steps
        decoded = decode_sag(action)
        if decoded is None:
            turn = paper_assistant_turn(action)
            parsed = paper_parse_action(turn)
            result = self._ensure_sandbox().run(parsed.code) if parsed.code is not None else None
        else:
            turn, parsed, result, info["sag"] = self._choose_paper_candidate(*decoded)
        info.update(action=turn, thought=parse_action(turn).thought, code=parsed.code, parse_error=parsed.code is None)
        if result is not None:
            info.update(_execution_info(result))
        observation = self._paper.observation(self._steps, parsed, result)
        terminated = result is not None and result.is_final
        reward = self._finish(result.final_answer or "", info) if terminated and result is not None else 0.0
        if not terminated and self._steps >= self.max_steps:
            info["final_answer_request"] = self._paper.final_answer_request(self._task.question)
        self._done = terminated
        self._transcript += [turn, observation]
        return observation, reward, terminated, False, info

    def _choose_paper_candidate(
        self, actions: list[str], vote: str
    ) -> tuple[str, PaperParse, ExecutionResult | None, dict[str, Any]]:
        """SAG under the paper's protocol: its parsing and, with ``vote="logs"``, its vote on printed output;
        the candidates still run in forks of the current state and the winner's state is adopted (never re-run)."""
        assert self._paper is not None
        paper = self._paper
        turns = [paper_assistant_turn(action) for action in actions]
        parsed = [paper_parse_action(turn) for turn in turns]
        results, winner, info = self._vote(
            [p.code for p in parsed], vote, lambda index, result: paper.observation(self._steps, parsed[index], result)
        )
        return turns[winner], parsed[winner], results.get(winner), info

    def _vote(
        self, codes: Sequence[str | None], vote: str, observation_of: Callable[[int, ExecutionResult], str]
    ) -> tuple[dict[int, ExecutionResult], int, dict[str, Any]]:
        """Run the candidates' ``codes`` (``None``: did not parse) from the current state, vote and adopt the
        winner's state; returns the results by candidate, the winner and ``info["sag"]``. A candidate is valid when
        it ran without error; it votes with its printed output (``vote="logs"``) or else its normalised answer,
        falling back to its observation (``observation_of``)."""
        runnable = [index for index, code in enumerate(codes) if code is not None]
        results = self._run_candidates([codes[index] or "" for index in runnable], runnable)
        outcomes = []
        for index in range(len(codes)):
            result = results.get(index)
            valid = result is not None and result.error is None and not result.state_lost
            if result is None:
                key = ""
            elif vote == "logs":
                key = result.logs
            else:
                key = vote_key(result.final_answer, observation_of(index, result), self.normalize_answer)
            outcomes.append(CandidateOutcome(valid, key))
        selection = select_candidate(outcomes)
        self._adopt(runnable, results, selection.winner)
        return results, selection.winner, {**selection.as_info(), "vote": vote}

    def _run_candidates(self, codes: list[str], runnable: list[int]) -> dict[int, ExecutionResult]:
        """Each candidate's result from the current state (in forks), by candidate index."""
        sandbox = self._ensure_sandbox()
        if not runnable:
            return {}
        if isinstance(sandbox, ForkableSandbox):
            return dict(zip(runnable, sandbox.run_candidates(codes)))
        return {runnable[0]: sandbox.run(codes[0])}  # a backend that cannot fork (E2B) runs the first, live

    def _adopt(self, runnable: list[int], results: Mapping[int, ExecutionResult], winner: int) -> None:
        """Make the winning candidate's state the episode's (a forking sandbox only)."""
        sandbox = self._ensure_sandbox()
        if isinstance(sandbox, ForkableSandbox) and winner in results and not results[winner].state_lost:
            sandbox.adopt(runnable.index(winner))

    def render(self) -> str | None:
        """The episode so far (task, actions, observations) as text, in ``"ansi"`` mode."""
        if self.render_mode != "ansi":
            return None
        return "\n\n".join(self._transcript)

    def close(self) -> None:
        """Stop the sandbox's worker and remove its files."""
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None
        super().close()

    # --- internals ------------------------------------------------------------------------------

    def _choose_task_index(self, options: Mapping[str, Any]) -> int:
        total = self.num_tasks
        if "task_index" in options:
            index = options["task_index"]
            if isinstance(index, bool) or not isinstance(index, int) or index < 0 or (total is not None and index >= total):
                expected = "a non-negative int" if total is None else f"an int in [0, {total})"
                raise ValueError(f"options['task_index'] must be {expected}, got {index!r}")
            return index
        return int(self.np_random.integers(total if total is not None else UNLIMITED_TASK_SEEDS))

    def _build_sandbox(self) -> None:
        """Build the sandbox now, at construction, so that a backend that cannot serve this env (an
        E2B VM cannot call tools that live in this process) fails here, not at the first step. Every
        env calls it at the end of ``__init__``, once its tools exist; it starts no process."""
        self._ensure_sandbox()

    def _ensure_sandbox(self) -> Sandbox:
        if self._sandbox is None:
            tools = self._paper.tools(self._tools()) if self._paper is not None else self._tools()
            self._sandbox = make_sandbox(
                self._sandbox_spec, tools=tools, allowed_imports=self.allowed_imports, limits=self._sandbox_limits
            )
        return self._sandbox

    def _finish(self, answer: str, info: dict[str, Any]) -> float:
        assert self._task is not None
        graded = self.grader.grade(answer, self._task)
        info.update(answer=answer, gold=self._task.answer, score=float(graded.score), metrics=dict(graded.metrics))
        return float(graded.score)


def _execution_info(result: ExecutionResult) -> dict[str, Any]:
    return {
        "execution_error": result.error,
        "timed_out": result.timed_out,
        "state_lost": result.state_lost,
        "tool_calls": [asdict(call) for call in result.tool_calls],
        "execution_seconds": result.duration_s,
    }


def _require_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class SplitEnv(CodeActEnv):
    """A task family served from a loaded split: a fixed list of tasks in :attr:`tasks`."""

    tasks: list[Task]

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def task_at(self, index: int) -> Task:
        return self.tasks[index]
