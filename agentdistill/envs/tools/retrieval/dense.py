"""Dense (embedding) retrieval over a FAISS index: the paper's ``web_search`` backend.

BM25 matches words; a dense retriever matches meaning, which is what Search-R1 used (e5-base-v2 over
a flat inner-product index of Wikipedia). This module holds the FAISS side: choosing and configuring
an index type for a corpus size, and answering a batch of queries with one encoder call and one
``index.search``. Building and loading indexes on disk is :mod:`.index_store`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from agentdistill.envs.tasks import Document
from agentdistill.envs.tools.retrieval.base import SearchHit
from agentdistill.envs.tools.retrieval.encoders import TextEncoder

if TYPE_CHECKING:
    import faiss

    from agentdistill.envs.tools.retrieval.index_store import IndexInfo

INDEX_TYPES = ("flat", "hnsw", "ivfpq")
"""``flat``: exact search (the paper's). ``hnsw``: a graph, fast and near-exact, but stores the full
vectors plus the graph. ``ivfpq``: clustered and compressed (~d/8 bytes a vector), for when the flat
vectors do not fit in memory; approximate."""

HNSW_M = 32
"""Graph neighbours per node: the usual recall/memory balance for 768-d text embeddings."""
HNSW_EF_CONSTRUCTION = 100
HNSW_EF_SEARCH = 128

PQ_BITS = 8
"""Bits per sub-quantizer code: 256 centroids each, FAISS's fast path."""
IVFPQ_MIN_VECTORS = 2**PQ_BITS
"""Training a product quantizer needs at least one vector per centroid."""
IVF_MIN_POINTS_PER_LIST = 39
"""FAISS's k-means wants at least 39 training vectors per cluster; fewer lists than that are used."""


@dataclass(frozen=True)
class IndexParams:
    """The settings :func:`make_index` chose; recorded in an index directory's ``meta.json``."""

    index_type: str
    hnsw_m: int = 0
    ef_construction: int = 0
    ef_search: int = 0
    nlist: int = 0
    pq_m: int = 0
    pq_bits: int = 0
    nprobe: int = 0

    def as_dict(self) -> dict[str, int | str]:
        """The non-zero settings, for ``meta.json``."""
        fields = {
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "nlist": self.nlist,
            "pq_m": self.pq_m,
            "pq_bits": self.pq_bits,
            "nprobe": self.nprobe,
        }
        return {"index_type": self.index_type, **{key: value for key, value in fields.items() if value}}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> IndexParams:
        """Inverse of :meth:`as_dict`."""
        names = ("hnsw_m", "ef_construction", "ef_search", "nlist", "pq_m", "pq_bits", "nprobe")
        return cls(index_type=str(values["index_type"]), **{name: int(values.get(name, 0)) for name in names})


def check_index_type(index_type: str) -> str:
    """``index_type`` if it is one of :data:`INDEX_TYPES`, else a ValueError naming the allowed ones."""
    if index_type not in INDEX_TYPES:
        allowed = ", ".join(repr(name) for name in INDEX_TYPES)
        raise ValueError(f"unknown dense index type {index_type!r}; expected one of {allowed}")
    return index_type


def index_params(index_type: str, dimension: int, n_vectors: int) -> IndexParams:
    """The settings an index of ``index_type`` gets for ``n_vectors`` vectors of ``dimension``.

    ``ivfpq``: about ``4·sqrt(N)`` inverted lists (a power of two), never more than N/39 so k-means has
    enough points per list; ``pq_m`` sub-quantizers of ~8 dimensions each (a divisor of ``dimension``);
    ``nprobe`` = nlist/128 but at least 16 lists (all of them for small corpora).
    """
    check_index_type(index_type)
    if dimension < 1:
        raise ValueError(f"dimension must be positive, got {dimension!r}")
    if index_type == "flat":
        return IndexParams("flat")
    if index_type == "hnsw":
        return IndexParams("hnsw", hnsw_m=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION, ef_search=HNSW_EF_SEARCH)
    if n_vectors < IVFPQ_MIN_VECTORS:
        raise ValueError(
            f"corpus too small for an ivfpq index: {n_vectors} passages, but ivfpq needs at least "
            f"{IVFPQ_MIN_VECTORS} to train its {PQ_BITS}-bit product quantizer; use 'flat' (exact, and "
            f"fast at this size) or 'hnsw'"
        )
    target = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n_vectors))))
    nlist = max(1, min(target, n_vectors // IVF_MIN_POINTS_PER_LIST))
    nprobe = min(nlist, max(16, nlist // 128))
    return IndexParams("ivfpq", nlist=nlist, pq_m=_pq_subquantizers(dimension), pq_bits=PQ_BITS, nprobe=nprobe)


def make_index(index_type: str, dimension: int, n_vectors: int) -> faiss.Index:
    """An empty inner-product FAISS index of ``index_type`` sized for ``n_vectors`` vectors.

    ``ivfpq`` comes untrained: call :func:`train_index` before adding vectors.
    """
    return _build_empty(index_params(index_type, dimension, n_vectors), dimension)


def apply_search_params(index: faiss.Index, params: IndexParams) -> None:
    """Set the search-time knobs (HNSW ``efSearch``, IVF ``nprobe``) on a built or loaded index."""
    import faiss

    if params.index_type == "hnsw" and params.ef_search:
        faiss.downcast_index(index).hnsw.efSearch = params.ef_search
    elif params.index_type == "ivfpq" and params.nprobe:
        faiss.extract_index_ivf(index).nprobe = params.nprobe


def train_index(index: faiss.Index, sample: np.ndarray) -> None:
    """Train ``index`` (k-means and product quantizer for ivfpq) on a sample of the vectors; a no-op
    for index types that need no training."""
    if index.is_trained:
        return
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    pq = getattr(index, "pq", None)
    if pq is not None:
        # The sample is already as large as the corpus allows (see index_store); FAISS's advice to
        # bring 39 points per PQ centroid cannot be followed for small corpora, so do not print it.
        pq.cp.min_points_per_centroid = 1
    index.train(sample)


class DenseRetriever:
    """Top-``k`` documents by cosine similarity between encoded queries and passages.

    Args:
        index: a FAISS inner-product index whose vector ``i`` is ``documents[i]``'s.
        documents: the documents, by vector id: a tuple in memory or an on-disk
            :class:`~agentdistill.envs.tools.retrieval.index_store.DocumentStore`.
        encoder: encodes the queries; must be the one (model and prefixes) that encoded the passages.
        info: what :func:`~agentdistill.envs.tools.retrieval.index_store.load_index` knows about the
            index directory (``None`` for an in-memory index).
    """

    def __init__(
        self,
        index: faiss.Index,
        documents: Sequence[Document],
        encoder: TextEncoder,
        *,
        info: IndexInfo | None = None,
    ) -> None:
        if index.d != encoder.dimension:
            raise ValueError(
                f"encoder {encoder.name!r} gives {encoder.dimension}-d vectors but the index holds {index.d}-d ones"
            )
        if index.ntotal != len(documents):
            raise ValueError(f"the index holds {index.ntotal} vectors but there are {len(documents)} documents")
        self.index = index
        self.documents = documents
        self.encoder = encoder
        self.info = info

    @classmethod
    def build(cls, documents: Sequence[Document], encoder: TextEncoder, index_type: str = "flat") -> DenseRetriever:
        """Encode ``documents`` (see :func:`~.encoders.passage_text`) and index them in memory."""
        check_index_type(index_type)
        documents = tuple(documents)
        if not documents:
            raise ValueError("DenseRetriever needs at least one document to index, got an empty corpus")
        if index_type == "ivfpq":
            index_params(index_type, encoder.dimension, len(documents))  # too small? say so before encoding
        return cls.from_vectors(encoder.encode_documents(documents), documents, encoder, index_type)

    @classmethod
    def from_vectors(
        cls,
        vectors: np.ndarray,
        documents: Sequence[Document],
        encoder: TextEncoder,
        index_type: str = "flat",
    ) -> DenseRetriever:
        """Index already encoded passages (row ``i`` of ``vectors`` is ``documents[i]``)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(documents):
            raise ValueError(
                f"expected one vector per document ({len(documents)}), got an array of shape {vectors.shape}"
            )
        params = index_params(index_type, vectors.shape[1], len(vectors))
        index = _build_empty(params, vectors.shape[1])
        train_index(index, vectors)
        index.add(vectors)
        apply_search_params(index, params)
        return cls(index, tuple(documents), encoder)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def close(self) -> None:
        """Release the document store's file (for an index loaded from disk); in-memory: a no-op."""
        close = getattr(self.documents, "close", None)
        if close is not None:
            close()

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        """Best-first hits for each query; all queries are encoded in one batch and searched at once.

        Scores are cosine similarities. Approximate indexes may return fewer than ``k`` hits.
        """
        if k < 1:
            raise ValueError(f"k must be a positive number of documents, got {k!r}")
        if not queries:
            return []
        vectors = self.encoder.encode_queries([str(query) for query in queries])
        scores, ids = self.index.search(vectors, min(k, len(self)))
        return [
            [SearchHit(self.documents[int(i)], float(score)) for i, score in zip(row_ids, row_scores) if i >= 0]
            for row_ids, row_scores in zip(ids, scores)
        ]


def _build_empty(params: IndexParams, dimension: int) -> faiss.Index:
    import faiss  # imported here so the package imports without faiss when dense retrieval is unused

    if params.index_type == "flat":
        return faiss.IndexFlatIP(dimension)
    if params.index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
        return index
    quantizer = faiss.IndexFlatIP(dimension)
    index = faiss.IndexIVFPQ(
        quantizer, dimension, params.nlist, params.pq_m, params.pq_bits, faiss.METRIC_INNER_PRODUCT
    )
    index.nprobe = params.nprobe
    return index


def _pq_subquantizers(dimension: int) -> int:
    """The divisor of ``dimension`` closest to ``dimension / 8`` (8 dimensions per PQ code byte)."""
    divisors = [m for m in range(1, dimension + 1) if dimension % m == 0]
    return min(divisors, key=lambda m: (abs(m - dimension / 8), m))
