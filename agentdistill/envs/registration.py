"""The env ids of agentdistill and their registration with gymnasium.

Importing :mod:`agentdistill` registers them, so ``gym.make("AgentQA-HotpotQA-v0")`` works after
``import agentdistill``, and ``gym.make("agentdistill:AgentQA-HotpotQA-v0")`` works without it
(gymnasium imports the module named before the colon). Episode length is the env's own ``max_steps``
(the paper's 5), not gymnasium's ``TimeLimit``, so ``max_episode_steps`` stays unset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Mapping

import gymnasium as gym

Domain = Literal["factual", "math"]
"""The two halves of the paper's results table: QA over retrieved documents, and math."""


@dataclass(frozen=True)
class EnvEntry:
    """One registered id: the class that implements it, its fixed constructor arguments, and what evaluation
    and experiment checks need to know about it without building it.

    The mappings are made read-only: the entries are shared by every caller of this process.
    """

    env_id: str
    entry_point: str
    domain: Domain
    benchmark: str
    """The short name results tables and charts show (``HotpotQA``; ``QA-Synthetic`` and ``Math-Synthetic``,
    which would otherwise read the same)."""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    synthetic: bool = False
    """Generates its tasks: unlimited, with a ``train`` split for teachers and a held-out ``test`` split."""
    local_data: Mapping[str, str] = field(default_factory=dict)
    """Env arguments naming files of the shared data folder (``../shared/data``, relative to it) that stand in
    for the hub's benchmark without network (empty: none mapped); the comments of :data:`ENV_ENTRIES` say how
    each differs from the paper's setting."""
    paper_data: Mapping[str, str] = field(default_factory=dict)
    """The same under ``protocol="paper"``: the paper's own test list."""

    def __post_init__(self) -> None:
        for name in ("kwargs", "local_data", "paper_data"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))


_QA = "agentdistill.envs.qa:AgentQAEnv"
_MATH = "agentdistill.envs.math:AgentMathEnv"
_WIKI18_SAMPLE = "corpora/flashrag_wiki18_sample_1000.jsonl"
"""A 1,000-passage sample of the paper's wiki-18 dump (it holds few answers): the stand-in corpus of the QA
lists that carry no paragraphs; real runs pass ``retriever=`` the full wiki-18 index or server."""
_PAPER_QA = "agent-distillation/qa_dataset/test"
_PAPER_MATH = "agent-distillation/math_dataset/test"

ENV_ENTRIES: tuple[EnvEntry, ...] = (
    # HotpotQA: the paper's list (hard dev questions) has no paragraphs, and no local corpus covers it (only 94
    # of its 500 questions are in the local HotpotQA files). 500 other hard dev questions in the distractor
    # setting stand in; their 5,000 pooled paragraphs are the search corpus.
    EnvEntry(
        "AgentQA-HotpotQA-v0", _QA, "factual", "HotpotQA", {"task_name": "HotpotQA"},
        local_data={"data_path": "hotpotqa/distractor_dev_500_hf.jsonl"},
        paper_data={"data_path": f"{_PAPER_QA}/hotpotqa_500_20250422.json", "corpus": _WIKI18_SAMPLE},
    ),
    # Bamboogle: the paper's 125 questions, over the wiki-18 sample.
    EnvEntry(
        "AgentQA-Bamboogle-v0", _QA, "factual", "Bamboogle", {"task_name": "Bamboogle"},
        local_data={"data_path": f"{_PAPER_QA}/bamboogle_125_20250507.json", "corpus": _WIKI18_SAMPLE},
        paper_data={"data_path": f"{_PAPER_QA}/bamboogle_125_20250507.json", "corpus": _WIKI18_SAMPLE},
    ),
    # MuSiQue: as for HotpotQA, 200 answerable dev questions with their own 20 paragraphs each (the paper's
    # 500-question list overlaps the local file in 17 questions only).
    EnvEntry(
        "AgentQA-MuSiQue-v0", _QA, "factual", "MuSiQue", {"task_name": "MuSiQue"},
        local_data={"data_path": "musique/musique_ans_dev_200.jsonl"},
        paper_data={"data_path": f"{_PAPER_QA}/musique_500_20250504.json", "corpus": _WIKI18_SAMPLE},
    ),
    # 2Wiki: the paper's 500 questions over the 6,119 paragraphs behind a 1,000-question dev sample; the answer
    # text occurs in that corpus for about 43 % of them, so scores are a lower bound.
    EnvEntry(
        "AgentQA-2WikiMultiHopQA-v0", _QA, "factual", "2WikiMultiHopQA", {"task_name": "2WikiMultiHopQA"},
        local_data={"data_path": f"{_PAPER_QA}/2wikimultihopqa_500_20250511.json", "corpus": "2wiki/2wiki_corpus_6119.json"},
        paper_data={"data_path": f"{_PAPER_QA}/2wikimultihopqa_500_20250511.json", "corpus": _WIKI18_SAMPLE},
    ),
    EnvEntry("AgentMath-MATH-v0", _MATH, "math", "MATH", {"task_name": "MATH"}),
    # Math needs no corpus: the paper's exact lists, under either protocol.
    EnvEntry(
        "AgentMath-MATH500-v0", _MATH, "math", "MATH500", {"task_name": "MATH500"},
        local_data={"data_path": f"{_PAPER_MATH}/math_500_20250414.json"},
        paper_data={"data_path": f"{_PAPER_MATH}/math_500_20250414.json"},
    ),
    EnvEntry(
        "AgentMath-GSMHard-v0", _MATH, "math", "GSMHard", {"task_name": "GSMHard"},
        local_data={"data_path": f"{_PAPER_MATH}/gsm_hard_500_20250507.json"},
        paper_data={"data_path": f"{_PAPER_MATH}/gsm_hard_500_20250507.json"},
    ),
    EnvEntry(
        "AgentMath-AIME-v0", _MATH, "math", "AIME", {"task_name": "AIME"},
        local_data={"data_path": f"{_PAPER_MATH}/aime_90_20250504.json"},
        paper_data={"data_path": f"{_PAPER_MATH}/aime_90_20250504.json"},
    ),
    EnvEntry(
        "AgentMath-OlymMATH-v0", _MATH, "math", "OlymMATH", {"task_name": "OlymMATH"},
        local_data={"data_path": f"{_PAPER_MATH}/olymath_200_20250511.json"},
        paper_data={"data_path": f"{_PAPER_MATH}/olymath_200_20250511.json"},
    ),
    EnvEntry(
        "AgentQA-Synthetic-v0", "agentdistill.envs.synthetic.envs:SyntheticQAEnv", "factual", "QA-Synthetic",
        synthetic=True,
    ),
    EnvEntry(
        "AgentMath-Synthetic-v0", "agentdistill.envs.synthetic.envs:SyntheticMathEnv", "math", "Math-Synthetic",
        synthetic=True,
    ),
)

ENV_IDS: tuple[str, ...] = tuple(entry.env_id for entry in ENV_ENTRIES)


def register_envs() -> None:
    """Register every id that gymnasium does not know yet (importing twice registers nothing twice)."""
    for entry in ENV_ENTRIES:
        if entry.env_id not in gym.registry:
            gym.register(id=entry.env_id, entry_point=entry.entry_point, kwargs=dict(entry.kwargs))


def env_entry_for(env_id: str) -> EnvEntry:
    """The registration of ``env_id``; an unknown id is a :class:`~agentdistill.errors.UserError` that
    suggests the closest known ids and lists them all."""
    for entry in ENV_ENTRIES:
        if entry.env_id == env_id:
            return entry
    from difflib import get_close_matches

    from agentdistill.errors import UserError

    close = get_close_matches(str(env_id), ENV_IDS, n=2, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(name) for name in close)}? " if close else ""
    raise UserError(f"unknown env id {env_id!r}; {hint}known ids: {', '.join(ENV_IDS)}")


def domain_of(env_id: str) -> Domain:
    """``"factual"`` for QA envs, ``"math"`` for math envs (the two halves of the paper's table)."""
    return env_entry_for(env_id).domain


def benchmark_name(env_id: str) -> str:
    """The short name of an env id in tables: ``AgentQA-HotpotQA-v0`` -> ``HotpotQA``, ``AgentQA-Synthetic-v0``
    -> ``QA-Synthetic``."""
    return env_entry_for(env_id).benchmark


def env_arguments(env_id: str) -> tuple[str, ...]:
    """The constructor arguments a user may pass to ``env_id`` (those the registration fixes excluded),
    collected along the class hierarchy as far as ``**kwargs`` forwards them."""
    import importlib
    import inspect

    entry = env_entry_for(env_id)
    module_name, _, class_name = entry.entry_point.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names += [p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return tuple(sorted(set(names) - set(entry.kwargs)))


def check_env_arguments(env_id: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse, before anything is built, arguments ``env_id`` does not take, naming the valid ones."""
    valid = env_arguments(env_id)
    unknown = sorted(set(kwargs) - set(valid))
    if not unknown:
        return
    from difflib import get_close_matches

    from agentdistill.errors import UserError

    hints = [f"{name!r} (did you mean {close[0]!r}?)" if (close := get_close_matches(name, valid, n=1)) else repr(name)
             for name in unknown]
    raise UserError(f"{env_id} takes no argument {', '.join(hints)}; its arguments are: {', '.join(valid)}")
