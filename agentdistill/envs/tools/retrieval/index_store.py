"""Dense indexes on disk: built resumably, loaded memory-mapped, documents read in place.

The paper's corpus is 21M Wikipedia passages (``wiki-18.jsonl``, 13 GB). Encoding it takes hours on a
GPU, so :func:`build_index` saves its work in shards as it goes and a rerun picks up where a crash
left off; the 60+ GB flat index is memory-mapped by :func:`load_index` instead of read into RAM; and
documents are served by seeking into the corpus file rather than from a second 13 GB copy.

Layout of an index directory::

    meta.json      what was built and how (format version, encoder and prefixes, dimension, index
                   type and its parameters, passage count, corpus path/size/mtime, ``complete``);
                   written first, rewritten atomically as the build advances, ``complete: true`` last
    offsets.npy    int64 byte offset of each document's line in the documents file (below)
    docs.jsonl     only for JSON-list corpora: one {"id", "title", "text"} line per document, so that
                   every corpus is served the same way; for JSON Lines corpora the documents file is
                   the corpus itself (absolute path in meta.json) and nothing is copied
    shards/NNNNN.npy  float32 passage embeddings, ``shard_size`` rows each (shard i holds documents
                   i*shard_size ...); present while building, deleted at the end unless ``keep_shards``
    index.faiss    the FAISS index; vector i is document i

Every file is written under a temporary name and moved into place with :func:`os.replace`, so a file
that exists is whole.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import shutil
import warnings
import weakref
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, overload

import numpy as np
from tqdm.auto import tqdm

from agentdistill.envs.data import DataFormatError
from agentdistill.envs.tasks import Document
from agentdistill.envs.tools.retrieval.corpus import document_from_record, iter_corpus
from agentdistill.envs.tools.retrieval.dense import (
    DenseRetriever,
    IndexParams,
    apply_search_params,
    check_index_type,
    index_params,
    make_index,
    train_index,
)
from agentdistill.envs.tools.retrieval.encoders import DEFAULT_ENCODER, TextEncoder

if TYPE_CHECKING:
    import faiss

FORMAT_VERSION = 1

PASSAGE_TEXT_RULE = "contents as written for {id, contents} rows (as Search-R1/FlashRAG encode them), else title\\ntext"
"""What this version encodes for each passage (:func:`~.encoders.passage_text`), recorded in ``meta.json``."""
LEGACY_PASSAGE_TEXT = "title\\ntext (an index built before the build recorded this; Search-R1 rows were re-formatted)"
"""What indexes whose ``meta.json`` records nothing encoded: the title, a newline and the text."""
DEFAULT_SHARD_SIZE = 50_000
"""Passages per shard: ~150 MB of 768-d vectors, well under a minute of GPU encoding, so a crash
loses little work and wiki-18 makes ~420 files."""

META_FILE = "meta.json"
INDEX_FILE = "index.faiss"
OFFSETS_FILE = "offsets.npy"
DOCS_FILE = "docs.jsonl"
SHARDS_DIR = "shards"
_KNOWN_ENTRIES = (META_FILE, INDEX_FILE, OFFSETS_FILE, DOCS_FILE, SHARDS_DIR)

_TRAIN_POINTS_PER_LIST = 64
_MIN_TRAIN_POINTS = 2**16  # what FAISS's product-quantizer training uses at most (256 per centroid)
_BOM = b"\xef\xbb\xbf"
_PROGRESS_CHUNK = 1 << 16  # lines between progress-bar updates while scanning the corpus


class IndexDirectoryError(ValueError):
    """An index directory that is incomplete, corrupt, or was started with other build settings."""


@dataclass(frozen=True)
class IndexInfo:
    """What an index directory holds, read from its ``meta.json`` and file listing.

    ``count`` and ``shards_total`` are ``None`` until the corpus has been scanned. ``load_mode`` says how
    :func:`load_index` maps the index into memory; on a loaded retriever's ``info`` it is what happened.
    """

    path: str
    complete: bool
    format_version: int
    encoder: str
    query_prefix: str
    passage_prefix: str
    dimension: int
    index_type: str
    count: int | None
    shard_size: int
    shards_done: int
    shards_total: int | None
    corpus_path: str
    corpus_size: int
    corpus_format: str
    documents_file: str
    size_on_disk: int
    created: str
    load_mode: str
    index_params: Mapping[str, Any] = field(default_factory=dict, compare=False)
    passage_text: str = LEGACY_PASSAGE_TEXT
    """How passages were turned into encoder input (:data:`PASSAGE_TEXT_RULE` for builds that record it)."""

    def describe(self) -> str:
        """A multi-line human summary (for ``agentdistill index info``)."""
        shards_total = "?" if self.shards_total is None else str(self.shards_total)
        if self.complete:
            state = "complete"
        else:
            state = f"UNFINISHED: {self.shards_done}/{shards_total} shards encoded; rerun the build to resume"
        count = "unknown (corpus not scanned yet)" if self.count is None else f"{self.count:,}"
        params = ", ".join(f"{key}={value}" for key, value in self.index_params.items() if key != "index_type")
        documents = (
            "read in place by byte offset"
            if self.documents_file == self.corpus_path
            else f"copied to {self.documents_file}"
        )
        lines = [
            f"Dense index {self.path} ({state})",
            f"  passages:     {count}",
            (
                f"  encoder:      {self.encoder} ({self.dimension}-d, query prefix {self.query_prefix!r}, "
                f"passage prefix {self.passage_prefix!r})"
            ),
            f"  passages as:  {self.passage_text}",
            f"  index type:   {self.index_type}" + (f" ({params})" if params else ""),
            f"  size on disk: {_human_bytes(self.size_on_disk)}",
            (
                f"  corpus:       {self.corpus_path} ({self.corpus_format}, {_human_bytes(self.corpus_size)}); "
                f"documents {documents}"
            ),
            f"  shards:       {self.shards_done}/{shards_total} of {self.shard_size:,} passages",
            f"  loading:      {self.load_mode}",
            f"  created:      {self.created or 'not yet'}",
        ]
        return "\n".join(lines)


class DocumentStore(Sequence[Document]):
    """Documents read on demand from a JSON Lines file through a table of line offsets.

    ``offsets[i]`` is the byte offset of document ``i``'s line. Reads use :func:`os.pread` on one file
    descriptor, so concurrent reads from several threads are safe and need no lock. Lines are
    ``{"id", "contents"}`` (FlashRAG) or ``{"title", "text"[, "id"]}`` records, parsed as
    :func:`~agentdistill.envs.tools.retrieval.corpus.iter_corpus` parses them.
    """

    def __init__(self, path: str | os.PathLike[str], offsets: np.ndarray) -> None:
        self.path = Path(path)
        self._offsets = offsets
        self._fd = os.open(self.path, os.O_RDONLY)
        self._end = os.fstat(self._fd).st_size
        self._closer = weakref.finalize(self, os.close, self._fd)

    def close(self) -> None:
        """Close the file; further reads fail."""
        self._closer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._offsets)

    @overload
    def __getitem__(self, index: int) -> Document: ...

    @overload
    def __getitem__(self, index: slice) -> list[Document]: ...

    def __getitem__(self, index: int | slice) -> Document | list[Document]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return self.read_range(start, stop)
            return [self[i] for i in range(start, stop, step)]
        position = int(index)
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError(f"document {index} out of range for a store of {len(self)} documents")
        return self.read_range(position, position + 1)[0]

    def __iter__(self) -> Iterator[Document]:
        batch = 1024
        for start in range(0, len(self), batch):
            yield from self.read_range(start, min(len(self), start + batch))

    def read_range(self, start: int, stop: int) -> list[Document]:
        """Documents ``start`` to ``stop - 1`` with one read of their contiguous bytes."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"range {start}:{stop} out of bounds for a store of {len(self)} documents")
        if start == stop:
            return []
        first = int(self._offsets[start])
        end = int(self._offsets[stop]) if stop < len(self) else self._end
        data = _pread_exact(self._fd, end - first, first)
        lines = [line for line in data.split(b"\n") if line.strip()]
        if len(lines) != stop - start:
            raise IndexDirectoryError(
                f"{self.path}: expected {stop - start} document lines at bytes {first}-{end}, found "
                f"{len(lines)}; the file changed after the index was built, rebuild the index"
            )
        return [self._parse(line, start + i) for i, line in enumerate(lines)]

    def _parse(self, line: bytes, position: int) -> Document:
        where = f"{self.path}: document {position} (byte {int(self._offsets[position])})"
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataFormatError(f"{where}: invalid JSON ({error})", source=str(self.path), index=position) from error
        return document_from_record(record, str(self.path), "document", position)


# ----------------------------------------------------------------------------------------------- build


def check_corpus(corpus_path: str | os.PathLike[str]) -> str:
    """The corpus layout, ``"jsonl"`` (JSON Lines) or ``"json"`` (a JSON list), after reading its first document.

    Cheap for the 13 GB wiki-18 (one line is parsed), so a command can call it before loading an encoder:
    a missing, empty or malformed corpus then fails in a second, not after minutes of model loading.
    :func:`build_index` calls it first too.

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: the file is not a corpus; the message names it, the line and the expected fields.
    """
    corpus = Path(corpus_path).expanduser()
    next(iter_corpus(corpus))
    with corpus.open("rb") as handle:
        head = handle.read(4096).removeprefix(_BOM).lstrip()
    return "json" if head.startswith(b"[") else "jsonl"


def build_index(
    corpus_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    encoder: TextEncoder | str = DEFAULT_ENCODER,
    index_type: str = "flat",
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: bool = True,
    overwrite: bool = False,
    keep_shards: bool = False,
    device: str = "cpu",
    on_shard: Callable[[int, int], None] | None = None,
) -> IndexInfo:
    """Encode a corpus into a dense index directory, resuming an interrupted build of the same one.

    Args:
        corpus_path: a corpus :func:`~agentdistill.envs.tools.retrieval.corpus.iter_corpus` reads
            (FlashRAG/Search-R1 JSON Lines such as ``wiki-18.jsonl``, or a JSON list).
        out_dir: the index directory (see the module docstring); created if absent.
        encoder: a :class:`TextEncoder`, or a model name/path loaded on ``device``.
        index_type: ``"flat"``, ``"hnsw"`` or ``"ivfpq"`` (see :mod:`.dense`).
        shard_size: passages encoded and saved together; a crash loses at most one shard.
        progress: show tqdm progress bars (corpus scan, passages encoded, vectors indexed).
        overwrite: discard whatever index ``out_dir`` holds instead of resuming it.
        keep_shards: keep ``shards/`` after the index is written (by default they are deleted: for a
            flat index they duplicate ``index.faiss``).
        device: where a model named by ``encoder`` runs ("cuda" on a GPU machine).
        on_shard: called as ``on_shard(shard_number, shards_total)`` after each shard is saved.

    Returns:
        :func:`index_info` of the finished directory. A directory that is already complete with the
        same settings is returned as is.

    Raises:
        IndexDirectoryError: ``out_dir`` holds a build with other settings (corpus, encoder, prefixes,
            index type, shard size), or something that is not an index directory; use a fresh
            ``out_dir`` or ``overwrite=True``.
    """
    check_index_type(index_type)
    if shard_size < 1:
        raise ValueError(f"shard_size must be a positive number of passages, got {shard_size!r}")
    corpus = Path(corpus_path).expanduser().resolve()
    corpus_format = check_corpus(corpus)
    out = Path(out_dir).expanduser().resolve()
    text_encoder = encoder if isinstance(encoder, TextEncoder) else TextEncoder(encoder, device=device)
    stat = corpus.stat()
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "complete": False,
        "encoder": text_encoder.name,
        "query_prefix": text_encoder.query_prefix,
        "passage_prefix": text_encoder.passage_prefix,
        "dimension": text_encoder.dimension,
        "passage_text": PASSAGE_TEXT_RULE,
        "index_type": index_type,
        "shard_size": shard_size,
        "corpus": {"path": str(corpus), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "format": corpus_format},
        "count": None,
        "started": _now(),
    }
    meta = _prepare_directory(out, meta, overwrite=overwrite)
    if meta["complete"] and (out / INDEX_FILE).is_file():
        return index_info(out)
    meta["complete"] = False

    store = _ensure_document_store(out, meta, progress=progress)
    try:
        index_params(index_type, text_encoder.dimension, len(store))  # e.g. too small for ivfpq: say so now
        _encode_shards(out, store, text_encoder, shard_size, progress=progress, on_shard=on_shard)
    finally:
        store.close()
    params = _write_faiss_index(out, meta, progress=progress)

    meta.update(complete=True, index_params=params.as_dict(), created=_now())
    _write_json_atomic(out / META_FILE, meta)
    if not keep_shards:
        shutil.rmtree(out / SHARDS_DIR, ignore_errors=True)
    return index_info(out)


def _prepare_directory(out: Path, meta: dict[str, Any], *, overwrite: bool) -> dict[str, Any]:
    """Start ``out`` afresh (writing ``meta``), or return the meta of the matching build it holds."""
    if out.exists() and not out.is_dir():
        raise IndexDirectoryError(f"{out}: exists and is not a directory; choose another index directory")
    if overwrite and out.is_dir():
        _remove_index_files(out)
    out.mkdir(parents=True, exist_ok=True)
    _remove_temporaries(out)
    meta_path = out / META_FILE
    if meta_path.exists():
        existing = _read_meta(out)
        differences = _differences(existing, meta)
        if differences:
            listed = "\n".join(
                f"  {name}: this directory has {old!r}, this build has {new!r}" for name, old, new in differences
            )
            raise IndexDirectoryError(
                f"{out}: holds an index built with other settings:\n{listed}\n"
                f"Use a fresh output directory, or overwrite it (overwrite=True / --overwrite)."
            )
        return existing
    foreign = [entry.name for entry in out.iterdir()]
    if foreign:
        raise IndexDirectoryError(
            f"{out}: is not empty ({', '.join(sorted(foreign)[:5])}...) and is not an index directory (no "
            f"{META_FILE}); use a fresh output directory"
        )
    _write_json_atomic(meta_path, meta)
    return meta


def _differences(existing: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """The build settings in which an existing directory's meta and a new build differ."""
    keys = ("format_version", "encoder", "query_prefix", "passage_prefix", "dimension", "index_type", "shard_size")
    found = [(key, existing.get(key), new[key]) for key in keys if existing.get(key) != new[key]]
    if existing.get("passage_text", LEGACY_PASSAGE_TEXT) != new["passage_text"]:
        found.append(("passage_text", existing.get("passage_text", LEGACY_PASSAGE_TEXT), new["passage_text"]))
    old_corpus, new_corpus = existing.get("corpus", {}), new["corpus"]
    for key in ("path", "size", "mtime_ns"):
        if old_corpus.get(key) != new_corpus[key]:
            found.append((f"corpus {key}", old_corpus.get(key), new_corpus[key]))
    return found


def _ensure_document_store(out: Path, meta: dict[str, Any], *, progress: bool) -> DocumentStore:
    """Open the document store, writing ``offsets.npy`` (and ``docs.jsonl``) on the first run."""
    corpus = Path(meta["corpus"]["path"])
    offsets_path = out / OFFSETS_FILE
    if meta["corpus"]["format"] == "jsonl":
        documents_file = corpus
        if not offsets_path.is_file():
            _save_npy_atomic(offsets_path, _scan_line_offsets(corpus, progress=progress))
    else:
        documents_file = out / DOCS_FILE
        if not offsets_path.is_file():
            _save_npy_atomic(offsets_path, _copy_documents(corpus, documents_file))
    offsets = np.load(offsets_path, mmap_mode="r")
    if meta.get("count") != len(offsets) or "documents" not in meta:
        meta["count"] = len(offsets)
        meta["documents"] = {
            "file": str(documents_file) if documents_file == corpus else DOCS_FILE,
            "size": documents_file.stat().st_size,
        }
        _write_json_atomic(out / META_FILE, meta)
    return DocumentStore(documents_file, offsets)


def _scan_line_offsets(corpus: Path, *, progress: bool) -> np.ndarray:
    """Byte offset of every non-blank line (= every document, as ``iter_corpus`` yields them)."""
    offsets = array("q")
    with (
        corpus.open("rb", buffering=1 << 20) as handle,
        tqdm(
            total=corpus.stat().st_size, unit="B", unit_scale=True, desc="scanning corpus", disable=not progress
        ) as bar,
    ):
        position = len(_BOM) if handle.read(len(_BOM)) == _BOM else 0
        handle.seek(position)
        reported = 0
        for number, line in enumerate(handle):
            if line.strip():
                offsets.append(position)
            position += len(line)
            if number % _PROGRESS_CHUNK == 0:
                bar.update(position - reported)
                reported = position
        bar.update(position - reported)
    return np.frombuffer(offsets, dtype=np.int64).copy()


def _copy_documents(corpus: Path, documents_file: Path) -> np.ndarray:
    """Write a JSON-list corpus as ``docs.jsonl`` and return its line offsets."""
    offsets = array("q")
    temporary = _temporary(documents_file)
    with temporary.open("wb") as handle:
        position = 0
        for document in iter_corpus(corpus):
            record = {"id": document.doc_id, "title": document.title, "text": document.text}
            line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
            offsets.append(position)
            handle.write(line)
            position += len(line)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, documents_file)
    return np.frombuffer(offsets, dtype=np.int64).copy()


def _encode_shards(
    out: Path,
    store: DocumentStore,
    encoder: TextEncoder,
    shard_size: int,
    *,
    progress: bool,
    on_shard: Callable[[int, int], None] | None,
) -> None:
    """Encode and save every shard not already on disk."""
    count = len(store)
    total = math.ceil(count / shard_size)
    (out / SHARDS_DIR).mkdir(exist_ok=True)
    todo = [
        number
        for number in range(total)
        if not _valid_shard(_shard_path(out, number), _shard_rows(number, shard_size, count), encoder.dimension)
    ]
    done_passages = count - sum(_shard_rows(number, shard_size, count) for number in todo)
    with tqdm(total=count, initial=done_passages, unit="passage", desc="encoding", disable=not progress) as bar:
        for number in todo:
            start = number * shard_size
            documents = store.read_range(start, start + _shard_rows(number, shard_size, count))
            vectors = encoder.encode_documents(documents)
            _save_npy_atomic(_shard_path(out, number), vectors)
            bar.update(len(documents))
            if on_shard is not None:
                on_shard(number, total)


def _write_faiss_index(out: Path, meta: Mapping[str, Any], *, progress: bool) -> IndexParams:
    """Build the FAISS index from the shards (training it first if it needs it) and save it."""
    import faiss

    count, dimension, shard_size = int(meta["count"]), int(meta["dimension"]), int(meta["shard_size"])
    params = index_params(meta["index_type"], dimension, count)
    index = make_index(meta["index_type"], dimension, count)
    shard_paths = [_shard_path(out, number) for number in range(math.ceil(count / shard_size))]
    if not index.is_trained:
        sample_size = min(count, max(_TRAIN_POINTS_PER_LIST * params.nlist, _MIN_TRAIN_POINTS))
        train_index(index, _sample_rows(shard_paths, shard_size, count, sample_size))
    with tqdm(total=count, unit="vector", desc="indexing", disable=not progress) as bar:
        for path in shard_paths:
            vectors = np.ascontiguousarray(np.load(path), dtype=np.float32)
            index.add(vectors)
            bar.update(len(vectors))
    apply_search_params(index, params)
    temporary = _temporary(out / INDEX_FILE)
    faiss.write_index(index, str(temporary))
    _fsync_path(temporary)
    os.replace(temporary, out / INDEX_FILE)
    return params


def _sample_rows(shard_paths: Sequence[Path], shard_size: int, count: int, size: int) -> np.ndarray:
    """A uniform random sample of ``size`` stored vectors (fixed seed), reading only those rows."""
    chosen = np.sort(np.random.default_rng(0).choice(count, size=size, replace=False))
    parts = []
    for number, path in enumerate(shard_paths):
        start = number * shard_size
        rows = chosen[(chosen >= start) & (chosen < start + shard_size)] - start
        if len(rows):
            parts.append(np.asarray(np.load(path, mmap_mode="r")[rows], dtype=np.float32))
    return np.concatenate(parts)


# ------------------------------------------------------------------------------------------------ load


def load_index(
    index_dir: str | os.PathLike[str],
    *,
    encoder: TextEncoder | str | None = None,
    mmap: bool = True,
    device: str = "cpu",
    corpus_path: str | os.PathLike[str] | None = None,
) -> DenseRetriever:
    """A :class:`~.dense.DenseRetriever` over a finished index directory.

    Args:
        index_dir: a directory written by :func:`build_index`.
        encoder: the query encoder; by default the model named in ``meta.json``, with its prefixes,
            loaded on ``device``. A given encoder must produce vectors of the index's dimension.
        mmap: memory-map the index instead of reading it into RAM where FAISS can (flat and HNSW
            vectors with ``IO_FLAG_MMAP_IFC``, IVF-PQ inverted lists with ``IO_FLAG_MMAP``); what
            happened is in the retriever's ``info.load_mode``.
        device: where a model loaded by name runs.
        corpus_path: where the corpus is now, if it moved since the build (JSON Lines corpora are read in
            place); it must be the same file (same size).
    """
    info = index_info(index_dir)
    out = Path(info.path)
    if not info.complete:
        total = "?" if info.shards_total is None else info.shards_total
        raise IndexDirectoryError(
            f"{out}: the index build is unfinished ({info.shards_done}/{total} shards encoded, no usable "
            f"{INDEX_FILE}); rerun the build with the same arguments to resume it"
        )
    meta = _read_meta(out)
    index_path = out / INDEX_FILE
    if not index_path.is_file():
        raise IndexDirectoryError(f"{out}: {INDEX_FILE} is missing; rebuild the index (--overwrite)")
    store = _open_store(out, meta, corpus_path)
    try:
        index, load_mode = _read_faiss_index(index_path, info.index_type, mmap=mmap)
        if index.ntotal != info.count or index.d != info.dimension:
            raise IndexDirectoryError(
                f"{index_path}: holds {index.ntotal} vectors of dimension {index.d}, but {META_FILE} says "
                f"{info.count} of dimension {info.dimension}; rebuild the index (--overwrite)"
            )
        apply_search_params(index, IndexParams.from_dict(meta.get("index_params") or {"index_type": info.index_type}))
        text_encoder = _query_encoder(info, encoder, device)
    except BaseException:
        store.close()
        raise
    return DenseRetriever(index, store, text_encoder, info=dataclasses.replace(info, load_mode=load_mode))


def _open_store(out: Path, meta: Mapping[str, Any], corpus_path: str | os.PathLike[str] | None) -> DocumentStore:
    offsets_path = out / OFFSETS_FILE
    if not offsets_path.is_file():
        raise IndexDirectoryError(f"{out}: {OFFSETS_FILE} (the document offsets) is missing; rebuild the index")
    try:
        offsets = np.load(offsets_path, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise IndexDirectoryError(f"{offsets_path}: unreadable ({error}); rebuild the index") from error
    if offsets.dtype != np.int64 or offsets.ndim != 1 or len(offsets) != meta["count"]:
        raise IndexDirectoryError(
            f"{offsets_path}: expected {meta['count']} int64 offsets, found shape {offsets.shape} "
            f"{offsets.dtype}; rebuild the index"
        )
    documents = meta["documents"]
    if documents["file"] == DOCS_FILE:
        documents_file = out / DOCS_FILE
    else:
        documents_file = (
            Path(corpus_path).expanduser().resolve() if corpus_path is not None else Path(documents["file"])
        )
    if not documents_file.is_file():
        raise IndexDirectoryError(
            f"{out}: documents file {documents_file} is missing; the index reads passages from it by byte "
            f"offset (pass corpus_path= if the corpus moved)"
        )
    size = documents_file.stat().st_size
    if size != documents["size"]:
        raise IndexDirectoryError(
            f"{documents_file}: is {size} bytes but was {documents['size']} when the index was built; the "
            f"document offsets no longer fit it, rebuild the index"
        )
    return DocumentStore(documents_file, offsets)


def _read_faiss_index(path: Path, index_type: str, *, mmap: bool) -> tuple[faiss.Index, str]:
    """Read the index, memory-mapped if asked and possible; returns it and how it was read."""
    import faiss

    mode = "read into memory (mmap=False)"
    if mmap:
        flag_name = "IO_FLAG_MMAP" if index_type == "ivfpq" else "IO_FLAG_MMAP_IFC"
        flag = getattr(faiss, flag_name, None)
        if flag is None:
            mode = f"read into memory (this faiss has no {flag_name})"
        else:
            try:
                index = faiss.read_index(str(path), flag)
            except RuntimeError as error:
                mode = f"read into memory (faiss.{flag_name} failed: {_first_line(error)})"
            else:
                if _is_memory_mapped(index, index_type):
                    return index, f"memory-mapped (faiss.{flag_name})"
                return index, f"read into memory (faiss ignored {flag_name} for this index)"
    try:
        return faiss.read_index(str(path)), mode
    except RuntimeError as error:
        raise IndexDirectoryError(
            f"{path}: not a readable FAISS index ({_first_line(error)}); rebuild the index"
        ) from error


def _is_memory_mapped(index: faiss.Index, index_type: str) -> bool:
    import faiss

    try:
        if index_type == "ivfpq":
            lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
            return type(lists).__name__ == "OnDiskInvertedLists"
        storage = faiss.downcast_index(index.storage) if index_type == "hnsw" else index
        return not bool(storage.codes.is_owned)
    except (AttributeError, RuntimeError):
        return False


def _query_encoder(info: IndexInfo, encoder: TextEncoder | str | None, device: str) -> TextEncoder:
    if encoder is None or isinstance(encoder, str):
        text_encoder = TextEncoder(
            encoder or info.encoder, device=device, query_prefix=info.query_prefix, passage_prefix=info.passage_prefix
        )
    else:
        text_encoder = encoder
    if text_encoder.dimension != info.dimension:
        raise IndexDirectoryError(
            f"{info.path}: the index holds {info.dimension}-d vectors from {info.encoder!r}, but the query "
            f"encoder {text_encoder.name!r} gives {text_encoder.dimension}-d ones"
        )
    if (text_encoder.query_prefix, text_encoder.passage_prefix) != (info.query_prefix, info.passage_prefix):
        warnings.warn(
            f"query encoder prefixes ({text_encoder.query_prefix!r}, {text_encoder.passage_prefix!r}) differ from "
            f"those the index was built with ({info.query_prefix!r}, {info.passage_prefix!r})",
            stacklevel=3,
        )
    return text_encoder


# ------------------------------------------------------------------------------------------------ info


def index_info(index_dir: str | os.PathLike[str]) -> IndexInfo:
    """Describe an index directory, finished or not, without loading the index or the model."""
    out = Path(index_dir).expanduser().resolve()
    if not out.exists():
        raise FileNotFoundError(errno.ENOENT, "dense index directory not found", str(out))
    if not out.is_dir():
        raise IndexDirectoryError(f"{out}: is a file, not a dense index directory")
    meta = _read_meta(out)
    count = meta.get("count")
    shard_size = int(meta["shard_size"])
    shards_total = None if count is None else math.ceil(int(count) / shard_size)
    complete = bool(meta.get("complete")) and (out / INDEX_FILE).is_file()
    shard_dir = out / SHARDS_DIR
    shards_present = len([p for p in shard_dir.glob("*.npy") if p.stem.isdigit()]) if shard_dir.is_dir() else 0
    documents = meta.get("documents") or {}
    documents_file = (
        str(out / DOCS_FILE)
        if documents.get("file") == DOCS_FILE
        else str(documents.get("file", meta["corpus"]["path"]))
    )
    flag = "IO_FLAG_MMAP" if meta["index_type"] == "ivfpq" else "IO_FLAG_MMAP_IFC"
    return IndexInfo(
        path=str(out),
        complete=complete,
        format_version=int(meta["format_version"]),
        encoder=str(meta["encoder"]),
        query_prefix=str(meta["query_prefix"]),
        passage_prefix=str(meta["passage_prefix"]),
        dimension=int(meta["dimension"]),
        index_type=str(meta["index_type"]),
        count=None if count is None else int(count),
        shard_size=shard_size,
        shards_done=shards_total if complete and shards_total is not None else shards_present,
        shards_total=shards_total,
        corpus_path=str(meta["corpus"]["path"]),
        corpus_size=int(meta["corpus"]["size"]),
        corpus_format=str(meta["corpus"]["format"]),
        documents_file=documents_file,
        size_on_disk=_directory_size(out),
        created=str(meta.get("created") or ""),
        load_mode=f"memory-mapped when loaded (faiss.{flag}), if this faiss supports it",
        passage_text=str(meta.get("passage_text", LEGACY_PASSAGE_TEXT)),
        index_params=dict(meta.get("index_params") or {}),
    )


def _read_meta(out: Path) -> dict[str, Any]:
    path = out / META_FILE
    if not path.is_file():
        raise IndexDirectoryError(
            f"{out}: not a dense index directory: {META_FILE} is missing (build one with build_index / "
            f"`agentdistill index build`)"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IndexDirectoryError(f"{path}: corrupt ({error}); rebuild the index (--overwrite)") from error
    required = (
        "format_version",
        "encoder",
        "query_prefix",
        "passage_prefix",
        "dimension",
        "index_type",
        "shard_size",
        "corpus",
    )
    missing = [key for key in required if not isinstance(meta, dict) or key not in meta]
    if missing:
        raise IndexDirectoryError(f"{path}: corrupt, missing {', '.join(missing)}; rebuild the index (--overwrite)")
    if meta["format_version"] != FORMAT_VERSION:
        raise IndexDirectoryError(
            f"{path}: index format version {meta['format_version']}, this code reads version {FORMAT_VERSION}; "
            f"rebuild the index (--overwrite)"
        )
    return meta


# ------------------------------------------------------------------------------------------- utilities


def _shard_path(out: Path, number: int) -> Path:
    return out / SHARDS_DIR / f"{number:05d}.npy"


def _shard_rows(number: int, shard_size: int, count: int) -> int:
    return min(shard_size, count - number * shard_size)


def _valid_shard(path: Path, rows: int, dimension: int) -> bool:
    """A saved shard of the expected shape (reads only the header)."""
    if not path.is_file():
        return False
    try:
        vectors = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return vectors.shape == (rows, dimension) and vectors.dtype == np.float32


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _save_npy_atomic(path: Path, array_: np.ndarray) -> None:
    temporary = _temporary(path)
    with temporary.open("wb") as handle:
        np.save(handle, array_)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _write_json_atomic(path: Path, value: Mapping[str, Any]) -> None:
    temporary = _temporary(path)
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_temporaries(out: Path) -> None:
    for directory in (out, out / SHARDS_DIR):
        if directory.is_dir():
            for leftover in directory.glob(".*.tmp"):
                leftover.unlink(missing_ok=True)


def _remove_index_files(out: Path) -> None:
    """Delete what :func:`build_index` writes, leaving anything else in ``out`` alone."""
    _remove_temporaries(out)
    for name in _KNOWN_ENTRIES:
        entry = out / name
        if entry.is_dir():
            shutil.rmtree(entry)
        elif entry.exists():
            entry.unlink()


def _pread_exact(fd: int, size: int, offset: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _directory_size(out: Path) -> int:
    return sum(entry.stat().st_size for entry in out.rglob("*") if entry.is_file())


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
