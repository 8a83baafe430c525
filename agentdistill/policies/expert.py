"""Scripted experts for the synthetic envs: teachers that need no LLM.

They solve ``AgentQA-Synthetic-v0`` and ``AgentMath-Synthetic-v0`` the way a good teacher does — a
thought, a search or a computation, then the final answer — from the generator's plan, which the env
returns in ``reset``'s info (the rollout loop passes it as the request's ``context``; it never reaches a
prompt). Their thoughts restate what the previous observation showed ("Voro was directed by Kemi"),
which is exactly the copying a student has to learn.

``error_rate`` makes an expert write broken code now and then (a random subset of its samples), which is
how tests show that SAG's voting lowers the invalid-action rate.
"""

from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

from agentdistill.envs.codeact import END_CODE
from agentdistill.policies.base import Completion, PolicyRequest, SamplingParams


def _action(thought: str, code: str) -> str:
    return f"Thought: {thought}\n```py\n{code}\n```{END_CODE}"


def _search_thought(plan: Sequence[Mapping[str, Any]], step: int) -> str:
    entry = plan[step]
    relation = str(entry.get("relation", "next fact")).replace("_", " ")
    if step == 0:
        return f"I need the {relation} of {entry['query']}. I will search for {entry['query']}."
    previous = plan[step - 1]
    return (
        f"The search shows that the {str(previous.get('relation', 'answer')).replace('_', ' ')} is "
        f"{previous['expect']}. Now I need the {relation} of {entry['query']}, so I search for it."
    )


def _answer_thought(plan: Sequence[Mapping[str, Any]], step: int) -> str:
    answer = plan[step]["answer"]
    if step == 0:
        return f"The answer is {answer}."
    previous = plan[step - 1]
    if previous.get("action") == "code":
        return f"The code printed {previous.get('expect', answer)}, so the answer is {answer}."
    return f"The search shows that the {str(previous.get('relation', 'answer')).replace('_', ' ')} is {answer}."


def expert_action(plan: Sequence[Mapping[str, Any]], step: int) -> str:
    """The expert's action at ``step`` (0-based) of an episode following ``plan``."""
    if not plan:
        raise ValueError("the expert needs the generator's plan in the request context (info['plan'])")
    entry = plan[min(step, len(plan) - 1)]
    step = min(step, len(plan) - 1)
    kind = entry.get("action")
    if kind == "search":
        return _action(_search_thought(plan, step), f"print(web_search({entry['query']!r}))")
    if kind == "code":
        return _action("I will compute this exactly with code.", str(entry["code"]))
    if kind == "final_answer":
        return _action(_answer_thought(plan, step), f"final_answer({entry['answer']!r})")
    raise ValueError(f"unknown plan step {kind!r}; expected 'search', 'code' or 'final_answer'")


def chain_of_thought(plan: Sequence[Mapping[str, Any]]) -> str:
    """A plain chain-of-thought answer whose first paragraph plans the solution (an FTP prefix)."""
    searches = [entry for entry in plan if entry.get("action") == "search"]
    answer = plan[-1].get("answer")
    if searches:
        hops = ", then ".join(
            f"the {str(entry.get('relation', 'fact')).replace('_', ' ')} of {entry['query']}" if index == 0
            else f"the {str(entry.get('relation', 'fact')).replace('_', ' ')} of that"
            for index, entry in enumerate(searches)
        )
        plan_text = f"To answer this I need {hops}."
    else:
        plan_text = "To answer this I need to compute the quantity exactly from the numbers in the question."
    return f"{plan_text}\n\nWorking through it, the answer is \\boxed{{{answer}}}."


def _break_code(action: str) -> str:
    """The same action with a syntax error in its code (an unclosed call)."""
    return action.replace(f")\n```{END_CODE}", f"\n```{END_CODE}", 1)


class ExpertPolicy:
    """Follows each request's plan; the step is the number of assistant turns already taken.

    Args:
        error_rate: probability that one sample's code is broken (a syntax error).
        seed: seeds the error draws when the sampling settings give no seed.
    """

    name = "expert"

    def __init__(self, *, error_rate: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate!r}")
        self.error_rate = error_rate
        self._seed = seed
        if error_rate:
            self.name = f"expert(error_rate={error_rate:g})"

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        rng = random.Random(params.seed if params.seed is not None else self._seed)
        self._seed += 1  # later calls without a seed draw fresh errors
        return [self._complete(request, params, rng) for request in requests]

    def _complete(self, request: PolicyRequest, params: SamplingParams, rng: random.Random) -> list[Completion]:
        plan = request.context.get("plan")
        if not plan:
            return [Completion.failed("the expert needs the generator's plan (info['plan'] of a synthetic env)")] * params.n
        if request.context.get("purpose") == "chain_of_thought":
            text = chain_of_thought(plan)
            return [Completion(text=text, completion_tokens=len(text.split()))] * params.n
        step = sum(1 for message in request.messages if message.get("role") == "assistant")
        action = expert_action(plan, step - 1 if request.continues_assistant else step)
        prefix = request.messages[-1].get("content", "") if request.continues_assistant else ""
        completions = []
        for _ in range(params.n):
            text = _break_code(action) if rng.random() < self.error_rate else action
            completions.append(Completion(text=_continuation(text, prefix), completion_tokens=len(text.split())))
        return completions

    def close(self) -> None:
        """Nothing to release."""


def _continuation(action: str, prefix: str) -> str:
    """What follows ``prefix`` when the expert continues a partial first turn (FTP).

    The prefix holds a teacher's own first thought, which the expert cannot extend sensibly; it ends
    the thought there and writes its code block.
    """
    if not prefix:
        return action
    code_start = action.find("\n```py")
    return action[code_start:] if code_start != -1 else action
