"""The Search-R1 retrieval-server wire format, kept in one place for the server and the client.

The paper's e5 + FAISS retriever runs as its own process (its index needs a GPU and tens of GB), as in
Search-R1 (``search_r1/search/retrieval_server.py``), and envs reach it over HTTP. Speaking exactly
that format lets our client use a stock Search-R1 server and lets Search-R1 clients use ours:

* request: ``POST /retrieve`` with ``{"queries": [str, ...], "topk": int, "return_scores": bool}``;
  ``topk`` may be left out (the server's default applies), ``return_scores`` defaults to false.
* response: ``{"result": [hits_of_query_0, hits_of_query_1, ...]}``, one list per query, best first.
  With ``return_scores`` each hit is ``{"document": doc, "score": float}``; without, it is ``doc``.
* ``doc`` is a corpus row: ``{"id": str, "contents": "\\"Title\\"\\ntext"}`` from the dense (FAISS)
  retriever, ``{"title", "text", "contents"}`` from Search-R1's BM25 one. Clients read ``contents``.

Documents we send carry ``id``, ``contents``, ``title`` and ``text``: ``contents`` for Search-R1
clients, the corpus row's own string byte for byte when the corpus is a Search-R1/FlashRAG one (so they
read exactly what Search-R1's server would send), ``title``/``text`` so that our own client gets titles
and texts back exactly (a title line cannot hold every string ``contents`` would need). Decoding prefers
``title``/``text`` when both are strings and falls back to splitting ``contents``; a ``contents`` string
is kept as the document's own.

Everything a peer sends is checked here; anything else raises :class:`RetrievalProtocolError` with the
JSON path of the first bad value, so that a misbehaving server reads as a clear message, never as a
``KeyError`` deep in an env.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentdistill.envs.tasks import Document
from agentdistill.envs.tools.retrieval.base import SearchHit
from agentdistill.envs.tools.retrieval.corpus import split_contents

RETRIEVE_PATH = "/retrieve"
"""Where Search-R1 servers answer queries."""

HEALTH_PATH = "/health"
"""Liveness endpoint of our server (stock Search-R1 servers have none)."""

DEFAULT_MAX_QUERIES = 1024
"""Most queries one request may carry; a request is one batch, so this bounds server memory."""

DEFAULT_MAX_TOPK = 100
"""Largest ``topk`` a server accepts; agents read a handful of documents."""

DEFAULT_MAX_QUERY_CHARS = 4096
"""Longest query accepted; dense encoders truncate at a few hundred tokens anyway."""


class RetrievalProtocolError(ValueError):
    """A request or response that does not follow the retrieval wire format."""


@dataclass(frozen=True)
class RetrieveRequest:
    """A validated ``POST /retrieve`` body."""

    queries: tuple[str, ...]
    topk: int
    return_scores: bool


def encode_request(queries: Sequence[str], k: int, *, return_scores: bool = True) -> dict[str, Any]:
    """The JSON body asking for the top-``k`` documents of every query."""
    return {"queries": list(queries), "topk": k, "return_scores": return_scores}


def decode_request(
    payload: Any,
    *,
    default_topk: int | None = None,
    max_queries: int = DEFAULT_MAX_QUERIES,
    max_topk: int = DEFAULT_MAX_TOPK,
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
) -> RetrieveRequest:
    """Check a parsed request body; a missing or null ``topk`` takes ``default_topk`` as in Search-R1.

    Unlike Search-R1, ``topk: 0`` is an error rather than a silent fallback to the default.
    """
    if not isinstance(payload, Mapping):
        raise RetrievalProtocolError(f"request body must be a JSON object, got {_json_type(payload)}")
    if "queries" not in payload:
        raise RetrievalProtocolError('request body is missing "queries" (a list of strings)')
    queries = payload["queries"]
    if not isinstance(queries, list):
        raise RetrievalProtocolError(f'"queries" must be a list of strings, got {_json_type(queries)}')
    if len(queries) > max_queries:
        raise RetrievalProtocolError(f'"queries" holds {len(queries)} queries; at most {max_queries} per request')
    for index, query in enumerate(queries):
        if not isinstance(query, str):
            raise RetrievalProtocolError(f'"queries"[{index}] must be a string, got {_json_type(query)}')
        if len(query) > max_query_chars:
            raise RetrievalProtocolError(
                f'"queries"[{index}] is {len(query)} characters long; at most {max_query_chars}'
            )
    topk = payload.get("topk")
    if topk is None:
        if default_topk is None:
            raise RetrievalProtocolError('request body is missing "topk" (a positive integer)')
        topk = default_topk
    if isinstance(topk, bool) or not isinstance(topk, int):
        raise RetrievalProtocolError(f'"topk" must be a positive integer, got {_json_type(topk)} {topk!r}')
    if not 1 <= topk <= max_topk:
        raise RetrievalProtocolError(f'"topk" must be between 1 and {max_topk}, got {topk}')
    return_scores = payload.get("return_scores", False)
    if not isinstance(return_scores, bool):
        raise RetrievalProtocolError(f'"return_scores" must be true or false, got {_json_type(return_scores)}')
    return RetrieveRequest(queries=tuple(queries), topk=topk, return_scores=return_scores)


def document_to_wire(document: Document) -> dict[str, str]:
    """A document as a corpus row: Search-R1's ``id``/``contents`` plus exact ``title``/``text``."""
    return {
        "id": document.doc_id,
        "contents": document.contents if document.contents is not None else f'"{document.title}"\n{document.text}',
        "title": document.title,
        "text": document.text,
    }


def encode_response(hits: Sequence[Sequence[SearchHit]], *, return_scores: bool = True) -> dict[str, Any]:
    """The JSON body answering a request: one list per query, in the order of the queries.

    Scores must be finite: JSON has no NaN or infinity, and a client could not rank by them.
    """
    result: list[list[Any]] = []
    for query_index, query_hits in enumerate(hits):
        entries: list[Any] = []
        for rank, hit in enumerate(query_hits):
            score = float(hit.score)
            if not math.isfinite(score):
                raise RetrievalProtocolError(
                    f"result[{query_index}][{rank}]: the retriever gave a non-finite score {score!r}"
                )
            document = document_to_wire(hit.document)
            entries.append({"document": document, "score": score} if return_scores else document)
        result.append(entries)
    return {"result": result}


def decode_response(payload: Any, n_queries: int, k: int | None = None) -> list[list[SearchHit]]:
    """The hits in a response to ``n_queries`` queries, best first.

    Hits may be scored (``{"document", "score"}``) or bare documents, whose score is then 0.0 (the
    order still ranks them). With ``k``, lists longer than ``k`` are cut to ``k``.
    """
    if not isinstance(payload, Mapping):
        raise RetrievalProtocolError(f'response must be a JSON object with "result", got {_json_type(payload)}')
    if "result" not in payload:
        keys = ", ".join(repr(key) for key in list(payload)[:5]) or "none"
        raise RetrievalProtocolError(f'response has no "result" field (its fields: {keys})')
    result = payload["result"]
    if not isinstance(result, list):
        raise RetrievalProtocolError(f'"result" must be a list with one list per query, got {_json_type(result)}')
    if len(result) != n_queries:
        raise RetrievalProtocolError(
            f'"result" holds {len(result)} lists for {n_queries} queries; expected one list per query'
        )
    decoded: list[list[SearchHit]] = []
    for query_index, entries in enumerate(result):
        where = f"result[{query_index}]"
        if not isinstance(entries, list):
            raise RetrievalProtocolError(f"{where} must be a list of hits, got {_json_type(entries)}")
        if k is not None:
            entries = entries[:k]
        decoded.append([_decode_hit(entry, f"{where}[{rank}]") for rank, entry in enumerate(entries)])
    return decoded


def document_from_wire(row: Any, where: str = "document") -> Document:
    """A corpus row (``title``/``text`` or ``contents``, optional ``id``) as a :class:`Document`."""
    if not isinstance(row, Mapping):
        raise RetrievalProtocolError(f"{where} must be an object, got {_json_type(row)}")
    title, text = row.get("title"), row.get("text")
    contents = row.get("contents")
    if contents is not None and not isinstance(contents, str):
        raise RetrievalProtocolError(f"{where}.contents must be a string, got {_json_type(contents)}")
    if not (isinstance(title, str) and isinstance(text, str)):
        if contents is None:
            raise RetrievalProtocolError(f'{where} has neither "contents" nor "title" and "text"')
        title, text = split_contents(contents)
    doc_id = row.get("id")
    if doc_id is None:
        doc_id = ""
    elif isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        raise RetrievalProtocolError(f"{where}.id must be a string or an integer, got {_json_type(doc_id)}")
    return Document(title=title, text=text, doc_id=str(doc_id), contents=contents)


def _decode_hit(entry: Any, where: str) -> SearchHit:
    if not isinstance(entry, Mapping):
        raise RetrievalProtocolError(f"{where} must be an object, got {_json_type(entry)}")
    if "document" not in entry:
        if "score" in entry:
            raise RetrievalProtocolError(f'{where} has a "score" but no "document"')
        return SearchHit(document_from_wire(entry, where), 0.0)
    if "score" not in entry:
        raise RetrievalProtocolError(f'{where} has a "document" but no "score"')
    score = entry["score"]
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise RetrievalProtocolError(f"{where}.score must be a number, got {_json_type(score)} {score!r}"[:300])
    if not math.isfinite(score):
        raise RetrievalProtocolError(f"{where}.score must be finite, got {score!r}")
    return SearchHit(document_from_wire(entry["document"], f"{where}.document"), float(score))


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
