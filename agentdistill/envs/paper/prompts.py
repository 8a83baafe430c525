"""The paper's own prompt texts, read from the files its code uses and rendered as its code renders them.

``protocol="paper"`` reproduces Kang et al.'s agent byte for byte, and its long texts (the CodeAct system
prompts with their few-shot examples, the chain-of-thought prompt first-thought prefixes come from, the
judge prompt, the instruction appended to every task) are the paper's, not ours: they are read at run time
from a directory the user points at (``prompts_dir``), holding the four files of :data:`PROMPT_FILES` as the
paper's repository has them. The YAML templates are rendered with Jinja and ``StrictUndefined``, the tools
as smolagents' ``Tool`` objects render (``{{tool.inputs}}`` is the Python ``repr`` of the inputs dict), so
the system prompt a model sees is the one the paper's teacher and students saw.

The two tool descriptions (:data:`WEB_SEARCH_TOOL`, :data:`FINAL_ANSWER_TOOL`) come from the paper's Python
code (``src/smolagents/default_tools.py``), not from a prompt file, so they are spelt out here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from agentdistill.errors import UserError

PROMPT_FILES: Mapping[str, str] = MappingProxyType(
    {
        "code_agent.yaml": "src/smolagents/prompts/code_agent.yaml",
        "teacher_model.yaml": "src/smolagents/prompts/teacher_model.yaml",
        "judge_prompt.txt": "exps_research/unified_framework/score_answers.py (the judge f-string)",
        "task_instruction.txt": "exps_research/unified_framework/processors/agent.py (the `instruction` string)",
    }
)
"""The files ``prompts_dir`` must hold, and where the paper's repository (Nardien/agent-distillation) keeps each."""

BASE_BUILTIN_MODULES: tuple[str, ...] = (
    "collections", "datetime", "itertools", "math", "queue", "random", "re", "stat", "statistics", "time", "unicodedata",
)
"""The modules smolagents lets agent code import by default."""

PAPER_ADDITIONAL_IMPORTS: tuple[str, ...] = ("numpy", "sympy", "numpy.linalg")
"""What the paper's agents may import besides :data:`BASE_BUILTIN_MODULES` (QA and math alike)."""

PaperVariant = Literal["full", "short"]
"""``full``: the teacher's ``system_prompt`` (examples and rules); ``short``: the students' ``system_prompt_short``."""

_VARIANT_KEYS: Mapping[str, str] = MappingProxyType({"full": "system_prompt", "short": "system_prompt_short"})


@dataclass(frozen=True)
class PaperTool:
    """A tool as smolagents describes it in a system prompt (the attributes its Jinja templates read)."""

    name: str
    description: str
    inputs: Mapping[str, Mapping[str, str]]
    output_type: str


WEB_SEARCH_TOOL = PaperTool(
    name="web_search",
    description="Uses semantic search to retrieve the parts of 2018 wikipedia that could be most relevant to answer your query.",
    inputs={
        "query": {
            "type": "string",
            "description": "The query to perform. This should be semantically close to your target documents. "
            "Use the affirmative form rather than a question.",
        }
    },
    output_type="string",
)
"""The paper's retrieval tool (``WikipediaRetrieverTool``), given to every task, math included."""

FINAL_ANSWER_TOOL = PaperTool(
    name="final_answer",
    description="Provides a final answer to the given problem.",
    inputs={"answer": {"type": "any", "description": "The final answer to the problem"}},
    output_type="any",
)

PAPER_TOOLS: tuple[PaperTool, ...] = (WEB_SEARCH_TOOL, FINAL_ANSWER_TOOL)
"""The tools of every paper agent, in the order its prompt lists them."""


def authorized_imports() -> list[str]:
    """The sorted module list the paper's prompt (rule 8) shows and its executor allows."""
    return sorted(set(BASE_BUILTIN_MODULES) | set(PAPER_ADDITIONAL_IMPORTS))


@dataclass(frozen=True)
class PaperPrompts:
    """The paper's prompt texts, loaded from a ``prompts_dir`` (see :data:`PROMPT_FILES`)."""

    directory: Path
    code_agent: Mapping[str, Any]
    teacher_system_prompt: str
    judge_template: str
    task_instruction: str

    @classmethod
    def load(cls, directory: str | os.PathLike[str] | None) -> PaperPrompts:
        """Read the four files; a missing directory or file is a :class:`UserError` naming what is needed."""
        if directory is None:
            raise UserError(f"protocol='paper' needs prompts_dir=DIR: {_needed()}")
        root = Path(directory).expanduser()
        missing = [name for name in PROMPT_FILES if not (root / name).is_file()]
        if missing:
            raise UserError(f"prompts_dir {os.fspath(directory)!r} lacks {', '.join(missing)}: {_needed()}")
        code_agent = _yaml_mapping(root / "code_agent.yaml")
        teacher = _yaml_mapping(root / "teacher_model.yaml")
        for key in (*_VARIANT_KEYS.values(), "final_answer"):
            if key not in code_agent:
                raise UserError(f"{root / 'code_agent.yaml'} has no {key!r}: is it the paper's code_agent.yaml?")
        if "system_prompt" not in teacher:
            raise UserError(f"{root / 'teacher_model.yaml'} has no 'system_prompt': is it the paper's teacher_model.yaml?")
        return cls(
            directory=root,
            code_agent=MappingProxyType(dict(code_agent)),
            teacher_system_prompt=str(teacher["system_prompt"]),
            judge_template=(root / "judge_prompt.txt").read_text(encoding="utf-8"),
            task_instruction=(root / "task_instruction.txt").read_text(encoding="utf-8"),
        )

    def system_prompt(self, variant: PaperVariant, tools: Sequence[PaperTool] = PAPER_TOOLS) -> str:
        """The CodeAct system prompt as the paper's agent renders it: ``full`` for teachers, ``short`` for students."""
        if variant not in _VARIANT_KEYS:
            raise ValueError(f"variant must be 'full' or 'short', got {variant!r}")
        return render(
            self.code_agent[_VARIANT_KEYS[variant]],
            tools={tool.name: tool for tool in tools},
            managed_agents={},
            authorized_imports=str(authorized_imports()),
        )

    def task_turn(self, question: str) -> str:
        """The first user turn: ``"New task:\\n"``, the question, and the paper's instruction."""
        return "New task:\n" + question + self.task_instruction

    def final_answer_system(self) -> str:
        """The system turn of the call that asks for an answer after the last step (``final_answer.pre_messages``)."""
        return render(self.code_agent["final_answer"]["pre_messages"])

    def final_answer_request(self, question: str) -> str:
        """The user text closing that call (``final_answer.post_messages``), with the task as the paper passes it:
        the question with the instruction, cut at ``"\\n\\nIMPORTANT:"``."""
        task = (question + self.task_instruction).split("\n\nIMPORTANT:")[0]
        return render(self.code_agent["final_answer"]["post_messages"], task=task)

    def judge_prompt(self, question: str, predicted: str, gold: str) -> str:
        """The judge's prompt for one answer (the paper fills an f-string: plain substitution of the three fields)."""
        return (
            self.judge_template.replace("{question}", question)
            .replace("{predicted}", predicted)
            .replace("{gold}", gold)
        )


def render(template: str, **variables: Any) -> str:
    """A smolagents prompt template rendered as smolagents renders it (Jinja, undefined names are errors)."""
    from jinja2 import StrictUndefined, Template

    return Template(template, undefined=StrictUndefined).render(**variables)


def _yaml_mapping(path: Path) -> Mapping[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(loaded, Mapping):
        raise UserError(f"{path}: expected a mapping of prompt templates")
    return loaded


def _needed() -> str:
    files = "; ".join(f"{name} (the paper's {where})" for name, where in PROMPT_FILES.items())
    return f"a directory with the paper's prompt files: {files}"
