"""Turning queries and passages into unit vectors for dense retrieval.

Dense retrieval needs the *same* text treatment at index time and at query time: the model's
query/passage prefixes (e5 was trained with ``"query: "`` and ``"passage: "``), the way a passage's
title is joined to its text, and L2 normalisation so that FAISS's inner product is cosine similarity.
:class:`TextEncoder` keeps those choices in one place, so an index built by
:mod:`~agentdistill.envs.tools.retrieval.index_store` and the retriever serving it cannot drift apart.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agentdistill.envs.tasks import Document

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_ENCODER = "intfloat/e5-base-v2"
"""The encoder of the paper's (Search-R1's) Wikipedia index."""

E5_QUERY_PREFIX = "query: "
E5_PASSAGE_PREFIX = "passage: "

# One component of a hub id or a local path ("intfloat/e5-base-v2", ".../models--intfloat--e5-base-v2",
# "/models/multilingual-e5-large"). The instruction-tuned e5 variants (e5-mistral-7b-instruct,
# multilingual-e5-large-instruct) expect "Instruct: ...\nQuery: " prompts instead, so they do not match.
_E5_COMPONENT = re.compile(r"^(?:multilingual-)?e5-(?:small|base|large)(?!.*instruct)", re.IGNORECASE)


def default_prefixes(model_name_or_path: str) -> tuple[str, str]:
    """The ``(query_prefix, passage_prefix)`` a model was trained with: e5's pair, else none."""
    components = re.split(r"[/\\]|--", model_name_or_path)
    if any(_E5_COMPONENT.match(component) for component in components):
        return E5_QUERY_PREFIX, E5_PASSAGE_PREFIX
    return "", ""


def passage_text(document: Document) -> str:
    """The text a passage is encoded from: a Search-R1/FlashRAG row's raw ``contents``, as Search-R1's and
    FlashRAG's index builders encode it (so the same query finds the same passages as the paper's index);
    otherwise ``"{title}\\n{text}"``, or just the text when untitled.

    The passage prefix (if any, e5's ``"passage: "``) is added by :meth:`TextEncoder.encode_passages`, not here.
    """
    if document.contents is not None:
        return document.contents
    return f"{document.title}\n{document.text}" if document.title else document.text


class TextEncoder:
    """A sentence-transformers model with its prefixes, returning L2-normalised float32 vectors.

    Args:
        model_name_or_path: a hub id (loaded from the local Hugging Face cache when offline) or a local
            model directory; defaults to the paper's ``intfloat/e5-base-v2``.
        device: where the model runs; CPU unless given (pass ``"cuda"`` on a GPU machine).
        query_prefix, passage_prefix: prepended to every query / passage; ``None`` picks the model's
            own (``"query: "`` / ``"passage: "`` for the e5 family, nothing for other models).
        batch_size: texts per forward pass.
        max_length: token limit per text (longer texts are truncated); ``None`` keeps the model's.
        model: an already loaded ``SentenceTransformer`` to wrap instead of loading one (its
            ``device`` is left as is); ``model_name_or_path`` then only names it.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] = DEFAULT_ENCODER,
        *,
        device: str = "cpu",
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        model: SentenceTransformer | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive number of texts, got {batch_size!r}")
        self.name = _canonical_name(model_name_or_path)
        default_query, default_passage = default_prefixes(self.name)
        self.query_prefix = default_query if query_prefix is None else query_prefix
        self.passage_prefix = default_passage if passage_prefix is None else passage_prefix
        self.batch_size = batch_size
        self.model = model if model is not None else _load_model(self.name, device)
        if max_length is not None:
            self.model.max_seq_length = max_length
        self.dimension = self._embedding_dimension()

    def __repr__(self) -> str:
        return (
            f"TextEncoder({self.name!r}, dimension={self.dimension}, query_prefix={self.query_prefix!r}, "
            f"passage_prefix={self.passage_prefix!r})"
        )

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dimension)`` float32 unit vectors for search queries."""
        return self._encode([self.query_prefix + str(text) for text in texts])

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dimension)`` float32 unit vectors for passages (see :func:`passage_text`)."""
        return self._encode([self.passage_prefix + str(text) for text in texts])

    def encode_documents(self, documents: Sequence[Document]) -> np.ndarray:
        """:meth:`encode_passages` of each document's :func:`passage_text`."""
        return self.encode_passages([passage_text(document) for document in documents])

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors: Any = self.model.encode(
            texts,
            prompt="",  # the prefixes are already in the texts; "" stops a model-configured default prompt
            batch_size=self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _embedding_dimension(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or getattr(
            self.model, "get_sentence_embedding_dimension", None
        )
        dimension = getter() if getter is not None else None
        if dimension is None:  # a model that does not declare it: measure one vector
            dimension = int(self._encode_probe().shape[1])
        return int(dimension)

    def _encode_probe(self) -> np.ndarray:
        return np.asarray(self.model.encode(["probe"], prompt="", show_progress_bar=False, convert_to_numpy=True))


def _canonical_name(model_name_or_path: str | os.PathLike[str]) -> str:
    """Local model directories become absolute paths (an index records the name to reload it from
    anywhere); hub ids stay as written."""
    name = os.fspath(model_name_or_path)
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def _load_model(name: str, device: str) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer  # heavy (torch); only dense retrieval needs it

    return SentenceTransformer(name, device=device)
