"""The paper's CodeAct text formats: how its agent reads an action and words what happened.

Kang et al.'s agent is a smolagents ``CodeAgent``; everything a model sees after its first turn is written
by that code, and a student distilled from it learns exactly those strings. This module produces the same
bytes from our own execution (a real CPython worker instead of smolagents' interpreter):

- the assistant turn: the model's text, with ``<end_code>`` appended when it ends on a closing fence;
- code extraction: every ```` ```py ```` / ```` ``` ```` block (``\\n`` after the fence, ``\\n`` before the closing
  one), joined by a blank line, else the whole text when it parses as Python, else a parse error whose wording
  (and indentation quirk: the template is dedented after the model's text is inserted) is smolagents';
- observation turns: ``Call id: call_K`` + ``Observation:`` + ``Execution logs:`` (the prints) + ``Last output
  from code snippet:`` (the last statement's value, ``None`` included), errors as ``Error:`` + the message +
  the retry advice; an error after some prints shows both, as one user turn (the paper merges consecutive turns
  of one role with no separator);
- retrieved documents as the paper's ``web_search`` prints them (0-based, the score to 2 decimals).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass
from textwrap import dedent

from agentdistill.envs.codeact import END_CODE

PAPER_STOP: tuple[str, ...] = (END_CODE, "Observation:", "Calling tools:")
"""The stop strings the paper's agent sends with every action request."""

RETRY_ADVICE = (
    "\nNow let's retry: take care not to repeat previous errors! If you have retried several times, try a "
    "completely different approach.\n"
)
"""What follows every error the paper's agent reports to the model."""

MAX_OUTPUT_CHARS = 20_000
"""The paper truncates the last output to this many characters (its head and tail)."""

MAX_LOG_CHARS = 50_000
"""And the printed logs to this many."""

_CODE_BLOCK = r"```(?:py|python)?\n(.*?)\n```"
_FINAL_ANSWER_ASSIGNMENT = re.compile(r"(?<!\.)(?<!\w)\bfinal_answer\s*=")


@dataclass(frozen=True)
class PaperParse:
    """An action as the paper's agent reads it: the code to run, or the parse error to report."""

    code: str | None
    error: str | None


def assistant_turn(text: str) -> str:
    """The assistant message the paper records for a model's text (``<end_code>`` restored, then stripped)."""
    if text.strip().endswith("```"):
        text += END_CODE
    return text.strip()


def parse_action(text: str) -> PaperParse:
    """The code of an action (given as :func:`assistant_turn` made it), or the paper's parse error message."""
    blocks = re.findall(_CODE_BLOCK, text, re.DOTALL)
    if blocks:
        return PaperParse(code=_rename_final_answer_variable("\n\n".join(block.strip() for block in blocks)), error=None)
    try:
        ast.parse(text)
    except SyntaxError:
        return PaperParse(code=None, error=_parse_error(text))
    return PaperParse(code=_rename_final_answer_variable(text), error=None)


def _parse_error(text: str) -> str:
    """smolagents' message, built as it builds it: the model's text goes into an indented template that is
    dedented afterwards (so a multi-line text usually leaves the template's indentation in place)."""
    if "final" in text and "answer" in text:
        detail = dedent(
            f"""
                Your code snippet is invalid, because the regex pattern {_CODE_BLOCK} was not found in it.
                Here is your code snippet:
                {text}
                It seems like you're trying to return the final answer, you can do it as follows:
                Code:
                ```py
                final_answer("YOUR FINAL ANSWER HERE")
                ```<end_code>
                """
        ).strip()
    else:
        detail = dedent(
            f"""
            Your code snippet is invalid, because the regex pattern {_CODE_BLOCK} was not found in it.
            Here is your code snippet:
            {text}
            Make sure to include code with the correct pattern, for instance:
            Thoughts: Your thoughts
            Code:
            ```py
            # Your python code here
            ```<end_code>
            """
        ).strip()
    return f"Error in code parsing:\n{detail}\nMake sure to provide correct code blobs."


def _rename_final_answer_variable(code: str) -> str:
    """A variable named ``final_answer`` in code that also calls ``final_answer(...)`` is renamed
    ``final_answer_variable``, as the paper's executor does, so the call still reaches the tool."""
    if "final_answer(" not in code or not _FINAL_ANSWER_ASSIGNMENT.search(code):
        return code
    code = re.sub(r"(?<!\.)(?<!\w)(\bfinal_answer)(\s*=)", r"final_answer_variable\2", code)
    return re.sub(r"(?<!\.)(?<!\w)(\bfinal_answer\b)(?!\s*\()", "final_answer_variable", code)


def truncate_content(content: str, max_length: int = MAX_OUTPUT_CHARS) -> str:
    """Head and tail of ``content`` within ``max_length``, with the paper's marker between them."""
    if len(content) <= max_length:
        return content
    return (
        content[: max_length // 2]
        + f"\n..._This content has been truncated to stay below {max_length} characters_...\n"
        + content[-max_length // 2 :]
    )


def call_header(call_number: int) -> str:
    return f"Call id: call_{call_number}\n"


def observation_turn(call_number: int, logs: str, last_output: str) -> str:
    """The user turn after code that ran: its prints, then the value of its last statement."""
    return (
        call_header(call_number)
        + "Observation:\nExecution logs:\n"
        + truncate_content(logs, MAX_LOG_CHARS)
        + "Last output from code snippet:\n"
        + truncate_content(last_output)
    )


def error_turn(call_number: int | None, logs: str, error: str) -> str:
    """The user turn after code that failed (``call_number``) or an action that did not parse (``None``):
    the prints that came before the failure, if any, then the error and the retry advice."""
    header = call_header(call_number) if call_number is not None else ""
    printed = header + "Observation:\nExecution logs:\n" + truncate_content(logs, MAX_LOG_CHARS) if logs else ""
    return printed + header + "Error:\n" + error + RETRY_ADVICE


@dataclass(frozen=True)
class PaperDocument:
    """One retrieved passage as the paper prints it: the corpus row's ``contents`` and the retriever's score."""

    contents: str
    score: float


def search_results(documents: Sequence[PaperDocument]) -> str:
    """What the paper's ``web_search`` returns: a header, then each document numbered from 0 with its score."""
    return "\nRetrieved documents:" + "".join(
        f"\n\n===== Document {index}, similarity: {document.score:.2f} =====\n" + document.contents
        for index, document in enumerate(documents)
    )
