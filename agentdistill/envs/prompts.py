"""CodeAct system prompts: the agent's role, the Thought / code / Observation cycle, examples and rules.

Two variants share one tool list. The *full* prompt is for teachers (large models prompted zero-shot);
the *short* one drops the examples and rules, for fine-tuned students whose weights already hold the
format (the paper trains and evaluates students this way). The wording is ours; the structure follows
the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Literal, Sequence

PromptVariant = Literal["full", "short"]


@dataclass(frozen=True)
class ToolSpec:
    """How a tool is described to the agent: its call signature and what it does."""

    name: str
    signature: str
    description: str

    def render(self) -> str:
        return f"- {self.name}{self.signature}: {self.description}"


FINAL_ANSWER_TOOL = ToolSpec(
    name="final_answer",
    signature="(answer: any) -> None",
    description="Give the final answer to the task. This ends the task; call it exactly once.",
)


def web_search_tool(k: int) -> ToolSpec:
    """The retrieval tool, described with the number of documents it returns."""
    return ToolSpec(
        name="web_search",
        signature="(query: str) -> str",
        description=(
            f"Search a Wikipedia-like collection and return the {k} most relevant documents, each with "
            "its title and text. Use short, specific queries (an entity name works best)."
        ),
    )


QA_EXAMPLES: tuple[str, ...] = (
    """Task: Which river flows through the city where the composer of the opera Tosca was born?

Thought: I need the composer of Tosca first, then his birthplace, then the river of that city.
```py
print(web_search("Tosca opera composer"))
```<end_code>
Observation:
Execution logs:
Document 1 | Title: Tosca
Tosca is an opera in three acts by Giacomo Puccini ...

Thought: Tosca was composed by Giacomo Puccini. Now I find where he was born.
```py
print(web_search("Giacomo Puccini birthplace"))
```<end_code>
Observation:
Execution logs:
Document 1 | Title: Giacomo Puccini
Giacomo Puccini (born in Lucca, 22 December 1858) was an Italian composer ...

Thought: Puccini was born in Lucca. Which river flows through Lucca?
```py
print(web_search("Lucca river"))
```<end_code>
Observation:
Execution logs:
Document 1 | Title: Lucca
Lucca is a city in Tuscany, on the river Serchio ...

Thought: The river is the Serchio.
```py
final_answer("Serchio")
```<end_code>""",
)

MATH_EXAMPLES: tuple[str, ...] = (
    """Task: What is the sum of all positive divisors of 360?

Thought: I will list the divisors with a loop and add them up.
```py
divisors = [d for d in range(1, 361) if 360 % d == 0]
print(len(divisors), sum(divisors))
```<end_code>
Observation:
Execution logs:
24 1170

Thought: 360 has 24 divisors and their sum is 1170.
```py
final_answer(1170)
```<end_code>""",
    """Task: Solve x^2 - 5x + 6 = 0 and give the larger root.

Thought: I will solve the equation exactly with sympy.
```py
import sympy
x = sympy.symbols("x")
roots = sympy.solve(x**2 - 5*x + 6, x)
print(roots)
```<end_code>
Observation:
Execution logs:
[2, 3]

Thought: The roots are 2 and 3, so the larger one is 3.
```py
final_answer(3)
```<end_code>""",
)

_ROLE = (
    "You are an expert assistant who solves tasks by writing Python code. You work in a cycle of "
    "'Thought:', code, and 'Observation:' steps."
)

_CYCLE = """At each step, first write 'Thought:' with your reasoning about what to do next, then a Python code \
block that starts with '```py' and ends with '```<end_code>'. The code runs in a persistent Python session: \
variables and imports stay available in later steps. Use print() to see values; what you print comes back to \
you as the 'Observation:' of the next step. When you know the answer, call final_answer(...) in a code block."""

_RULES = """Rules:
1. Always write 'Thought:' and then a code block that ends with '```<end_code>'; anything else fails.
2. Use only the tools listed above, and call them with plain values (strings and numbers).
3. Do not chain many dependent tool calls in one block: print the results and read them in the next step.
4. Do not name a variable like a tool (for example, never write final_answer = ...).
5. Only import the modules listed below.
6. Don't give up: if a step fails, read the error and try something different."""


def build_system_prompt(
    tools: Sequence[ToolSpec],
    *,
    variant: PromptVariant = "full",
    examples: Sequence[str] = (),
    allowed_imports: Collection[str] | None = None,
) -> str:
    """Assemble the system prompt for an env's tools.

    Args:
        tools: every tool model code can call, ``final_answer`` included.
        variant: ``"full"`` (role, cycle, examples, rules) or ``"short"`` (role, cycle, tools).
        examples: worked episodes shown in the full prompt.
        allowed_imports: modules the code may import (``None``: no restriction is stated).
    """
    if variant not in ("full", "short"):
        raise ValueError(f"prompt variant must be 'full' or 'short', got {variant!r}")
    sections = [_ROLE, _CYCLE, "You can call these tools from your code:\n" + "\n".join(t.render() for t in tools)]
    if variant == "full":
        if examples:
            sections.append("Here are examples of solved tasks:\n\n" + "\n\n---\n\n".join(examples))
        sections.append(_RULES)
    if allowed_imports is not None:
        modules = ", ".join(sorted(allowed_imports)) or "none"
        sections.append(f"Modules you may import: {modules}.")
    if variant == "full":
        sections.append("Now begin! Solve the task correctly; you will be rewarded for a correct final answer.")
    return "\n\n".join(sections)
