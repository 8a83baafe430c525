"""A fake OpenAI-compatible judge server on 127.0.0.1, for the paper judge's tests.

It stands in for gpt-4o-mini behind the OpenAI API (no network here). It records every request body, reads
the predicted and gold answers back out of the paper's judge prompt, and answers with the paper's JSON
``{"explanation", "score"}``: score 1 when the gold answer occurs in the prediction (case aside), else 0. A
test scripts, per predicted answer, what each attempt gets instead: a reply text (garbage, fenced JSON ...)
or an HTTP status to fail with; the last scripted entry repeats for every later attempt.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from agentdistill.envs.tools.retrieval.server import ServerThread
from tests.conftest import SHARED_DATA

PROMPTS_DIR = SHARED_DATA / "agent-distillation" / "prompts"
"""The paper's four prompt files, as its repository has them."""

JUDGE_MODEL = "gpt-4o-mini"

_FIELDS = re.compile(
    r"\nPredicted answer: (?P<predicted>.*)\nGold answer: (?P<gold>.*)\n\nOutput your evaluation", re.DOTALL
)

Reply = str | int
"""What the server answers one attempt with: the reply's text, or an HTTP status code to fail with."""


def paper_prompt(question: str, predicted: str, gold: str) -> str:
    """The judge prompt as the paper's f-string fills it, from ``judge_prompt.txt`` (built here
    independently of the code under test)."""
    template = (PROMPTS_DIR / "judge_prompt.txt").read_text(encoding="utf-8")
    return template.format(question=question, predicted=predicted, gold=gold)


def verdict_json(score: Any, explanation: str = "scripted") -> str:
    return json.dumps({"explanation": explanation, "score": score})


@dataclass
class FakeJudge:
    """State of the fake judge server (shared by the app's handler and the tests)."""

    scripts: dict[str, list[Reply]] = field(default_factory=dict)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.scripts.clear()
            self.bodies.clear()
            self.attempts.clear()

    def prompts(self) -> list[str]:
        return [body["messages"][-1]["content"] for body in self.bodies]

    def predictions(self) -> list[str]:
        return [_fields(prompt)[0] for prompt in self.prompts()]

    def answer(self, body: dict[str, Any]) -> Reply:
        predicted, gold = _fields(body["messages"][-1]["content"])
        with self.lock:
            self.bodies.append(body)
            attempt = self.attempts[predicted] = self.attempts.get(predicted, 0) + 1
            script = self.scripts.get(predicted)
        if script:
            return script[min(attempt, len(script)) - 1]
        score = int(gold.lower() in predicted.lower())
        return verdict_json(score, f"gold {'found' if score else 'not found'} in the prediction")


def _fields(prompt: str) -> tuple[str, str]:
    found = _FIELDS.search(prompt)
    assert found is not None, f"not the paper's judge prompt: {prompt!r}"
    return found.group("predicted"), found.group("gold")


def create_app(state: FakeJudge) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        reply = state.answer(await request.json())
        if isinstance(reply, int):
            return JSONResponse({"error": {"message": f"scripted HTTP {reply}"}}, reply)
        choice = {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
        usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        return JSONResponse({"id": "judge", "object": "chat.completion", "model": JUDGE_MODEL, "choices": [choice],
                             "usage": usage})

    return app


@contextmanager
def running_fake_judge() -> Iterator[tuple[FakeJudge, str]]:
    """The server's state and its base URL (``http://127.0.0.1:PORT/v1``)."""
    state = FakeJudge()
    with ServerThread(create_app(state), health_path=None, shutdown_timeout_s=4.0) as server:
        yield state, f"{server.url}/v1"


def judge_spec(base_url: str) -> str:
    return f"openai:{base_url}#{JUDGE_MODEL}"


def shared_prompts_dir() -> Path:
    assert PROMPTS_DIR.is_dir(), f"the paper's prompt files are missing: expected them at {PROMPTS_DIR}"
    return PROMPTS_DIR
