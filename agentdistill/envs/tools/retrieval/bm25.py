"""Lexical retrieval with bm25s: the default ``web_search`` backend, fast to build and needing no model."""

from __future__ import annotations

from typing import Sequence

import bm25s
import numpy as np

from agentdistill.envs.tasks import Document
from agentdistill.envs.tools.retrieval.base import SearchHit


class BM25Retriever:
    """A BM25 index over ``documents`` (title and text), with English stop words and stemming.

    Args:
        documents: the corpus; at least one document.
        stem: use the Snowball English stemmer (PyStemmer) so "directed" matches "director"'s stem.
    """

    def __init__(self, documents: Sequence[Document], *, stem: bool = True) -> None:
        if not documents:
            raise ValueError("BM25Retriever needs at least one document to index, got an empty corpus")
        self.documents = tuple(documents)
        self._stemmer = _english_stemmer() if stem else None
        corpus_tokens = bm25s.tokenize(
            [f"{doc.title}\n{doc.text}" for doc in self.documents],
            stopwords="en",
            stemmer=self._stemmer,
            show_progress=False,
        )
        self._index = bm25s.BM25()
        self._index.index(corpus_tokens, show_progress=False)

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        """Top-``k`` documents per query; documents that share no term with the query are left out."""
        if k < 1:
            raise ValueError(f"k must be a positive number of documents, got {k!r}")
        if not queries:
            return []
        query_tokens = bm25s.tokenize(
            [str(query) for query in queries],
            stopwords="en",
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )
        indices, scores = self._index.retrieve(
            query_tokens, k=min(k, len(self.documents)), show_progress=False, n_threads=0
        )
        return [self._hits(row_indices, row_scores) for row_indices, row_scores in zip(indices, scores)]

    def _hits(self, row_indices: np.ndarray, row_scores: np.ndarray) -> list[SearchHit]:
        return [
            SearchHit(self.documents[int(index)], float(score))
            for index, score in zip(row_indices, row_scores)
            if score > 0
        ]


def _english_stemmer() -> object:
    import Stemmer  # PyStemmer: a C extension, imported lazily so stem=False needs nothing extra

    return Stemmer.Stemmer("english")
