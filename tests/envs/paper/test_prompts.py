"""The paper's prompts, read from its own files in ../shared/data and rendered as its code renders them.

The SHA-256 figures were taken from the paper's own CodeAgent (its repository at 0f6cae3, run on CPU with the
model and retriever replaced): the same bytes must come out of our rendering.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agentdistill.envs.paper.prompts import PROMPT_FILES, PaperPrompts, authorized_imports
from agentdistill.errors import UserError
from tests.conftest import SHARED_DATA

PROMPTS_DIR = SHARED_DATA / "agent-distillation" / "prompts"


@pytest.fixture(scope="module")
def prompts() -> PaperPrompts:
    return PaperPrompts.load(PROMPTS_DIR)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_the_system_prompts_are_the_papers_byte_for_byte(prompts: PaperPrompts) -> None:
    full, short = prompts.system_prompt("full"), prompts.system_prompt("short")
    assert (len(full), _sha(full)) == (8619, "bf45eac56929b90017262092ee5b920bc630d18e6a623ba0f975c391e7ec6225")
    assert (len(short), _sha(short)) == (1723, "313ca7cbea54c67479575c751c13919890782ed4980dc7c7edcb3e0ff06f5c28")
    tools = (
        "you only have access to these tools:\n"
        "- web_search: Uses semantic search to retrieve the parts of 2018 wikipedia that could be most relevant to "
        "answer your query.\n"
        "    Takes inputs: {'query': {'type': 'string', 'description': 'The query to perform. This should be "
        "semantically close to your target documents. Use the affirmative form rather than a question.'}}\n"
        "    Returns an output of type: string\n"
        "- final_answer: Provides a final answer to the given problem.\n"
        "    Takes inputs: {'answer': {'type': 'any', 'description': 'The final answer to the problem'}}\n"
        "    Returns an output of type: any\n\n"
    )
    assert tools in full and tools in short
    assert f"following list of modules: {authorized_imports()}" in full
    assert short.endswith("Now Begin! If you solve the task correctly, you will receive a reward of $1,000,000.")


def test_task_turn_final_answer_call_and_judge(prompts: PaperPrompts) -> None:
    instruction = (PROMPTS_DIR / "task_instruction.txt").read_text()
    assert prompts.task_turn("Who wrote Ulysses?") == "New task:\nWho wrote Ulysses?" + instruction
    assert instruction.startswith("\n\nIMPORTANT: Always provide a 'Thought:' sequence")
    assert prompts.final_answer_system().startswith("An agent tried to answer a user query but it got stuck")
    assert prompts.final_answer_request("Who wrote Ulysses?") == (
        "Based on the above, please provide an answer to the following user task:\nWho wrote Ulysses?"
    )
    judged = prompts.judge_prompt("Q?", "James Joyce", "Joyce")
    assert "Question: Q?\nPredicted answer: James Joyce\nGold answer: Joyce\n" in judged
    assert (_sha(prompts.teacher_system_prompt)[:8], prompts.teacher_system_prompt[-10:]) == ("cd4355b7", "question: ")


def test_missing_prompt_files_are_named_with_where_the_paper_keeps_them(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"protocol='paper' needs prompts_dir=DIR: .*code_agent.yaml \(the paper's src/smolagents"):
        PaperPrompts.load(None)
    (tmp_path / "code_agent.yaml").write_text((PROMPTS_DIR / "code_agent.yaml").read_text())
    with pytest.raises(UserError, match=r"lacks teacher_model.yaml, judge_prompt.txt, task_instruction.txt"):
        PaperPrompts.load(tmp_path)
    assert set(PROMPT_FILES) == {path.name for path in PROMPTS_DIR.iterdir()}
