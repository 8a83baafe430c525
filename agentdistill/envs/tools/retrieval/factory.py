"""Turning an env's ``retriever=`` argument into a retriever.

One spelling per backend, so that every QA env (and every config file) chooses retrieval the same way:

- ``"bm25"``: BM25 over the env's corpus (the default; no model needed);
- ``"dense"``: a flat FAISS index over the env's corpus, built in memory with ``encoder`` (default
  e5-base-v2, the paper's; encoding is slow on a CPU, so prefer a prebuilt index for large corpora);
- a directory built by ``agentdistill index build``: loaded memory-mapped, with the encoder it was
  built with (or ``encoder``);
- an ``http://`` / ``https://`` URL: a retrieval server speaking the Search-R1 protocol (``agentdistill
  serve-retriever`` or the user's own GPU retriever); the shared service for many envs;
- any object with the :class:`~agentdistill.envs.tools.retrieval.base.Retriever` interface.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence, Union

from agentdistill.envs.tasks import Document
from agentdistill.envs.tools.retrieval.base import Retriever

RetrieverSpec = Union[str, "os.PathLike[str]", Retriever]
NAMED_BACKENDS = ("bm25", "dense")


def make_retriever(
    spec: RetrieverSpec,
    *,
    documents: Callable[[], Sequence[Document]],
    encoder: str | None = None,
) -> Retriever:
    """Build the retriever ``spec`` names; ``documents`` is called only by backends that index the
    env's own corpus (``"bm25"``, ``"dense"``)."""
    if not isinstance(spec, (str, os.PathLike)):
        return spec
    text = os.fspath(spec)
    if text == "bm25":
        from agentdistill.envs.tools.retrieval.bm25 import BM25Retriever

        return BM25Retriever(documents())
    if text == "dense":
        from agentdistill.envs.tools.retrieval.dense import DenseRetriever
        from agentdistill.envs.tools.retrieval.encoders import DEFAULT_ENCODER, TextEncoder

        return DenseRetriever.build(documents(), TextEncoder(encoder or DEFAULT_ENCODER))
    if text.startswith(("http://", "https://")):
        from agentdistill.envs.tools.retrieval.remote import RemoteRetriever

        return RemoteRetriever(text)
    if Path(text).is_dir():
        from agentdistill.envs.tools.retrieval.index_store import load_index

        return load_index(text, encoder=encoder)  # a name keeps the prefixes recorded at build time
    raise ValueError(
        f"retriever={text!r} is not a backend name, an index directory or a server URL; expected one of "
        f"{list(NAMED_BACKENDS)}, the directory of an index built with `agentdistill index build`, an "
        "http(s):// retrieval server URL, or a Retriever object"
    )


def uses_env_corpus(spec: RetrieverSpec) -> bool:
    """Whether ``spec`` indexes the env's own corpus (so ``corpus=`` matters)."""
    return isinstance(spec, str) and spec in NAMED_BACKENDS
