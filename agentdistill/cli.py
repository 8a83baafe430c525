"""The ``agentdistill`` command: parses arguments and dispatches to the library, nothing else.

    agentdistill index build --corpus wiki-18.jsonl --encoder intfloat/e5-base-v2 --index-type flat --out DIR
    agentdistill index info DIR
    agentdistill serve-retriever --index DIR [--host 127.0.0.1] [--port 8000]
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from agentdistill import __version__


def _add_index_commands(commands: argparse._SubParsersAction) -> None:
    index = commands.add_parser("index", help="build and inspect dense retrieval indexes")
    index_commands = index.add_subparsers(dest="index_command", required=True, metavar="{build,info}")

    build = index_commands.add_parser(
        "build",
        help="encode a corpus in resumable shards and build a FAISS index",
        description="Encode a corpus file in shards (a crash resumes from the last finished shard) and "
        "build a FAISS index directory that QA envs load with retriever=DIR.",
    )
    build.add_argument("--corpus", required=True, help="a Search-R1/FlashRAG jsonl (wiki-18.jsonl) or a JSON list of {title, text}")
    build.add_argument("--encoder", default=None, help="sentence-transformers model name or path (default: intfloat/e5-base-v2)")
    build.add_argument("--index-type", default="flat", choices=("flat", "hnsw", "ivfpq"), help="FAISS index (default: flat, the paper's)")
    build.add_argument("--out", required=True, help="index directory to write (resumed if it holds finished shards)")
    build.add_argument("--shard-size", type=int, default=100_000, help="passages per encoded shard (default: 100000)")
    build.add_argument("--batch-size", type=int, default=64, help="encoder batch size (default: 64)")
    build.add_argument("--device", default=None, help="torch device for the encoder, e.g. cuda (default: cpu)")
    build.add_argument("--overwrite", action="store_true", help="discard an existing, different index in --out")

    info = index_commands.add_parser("info", help="show what an index directory holds")
    info.add_argument("index_dir", help="an index directory written by `agentdistill index build`")


def _add_serve_command(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve-retriever",
        help="serve an index over HTTP with the Search-R1 protocol (POST /retrieve, GET /health)",
        description="Serve a retriever to many envs at once: concurrent requests are batched, repeated "
        "queries cached. Point envs at it with retriever='http://HOST:PORT'.",
    )
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument("--index", help="an index directory written by `agentdistill index build`")
    source.add_argument("--corpus", help="serve BM25 over this corpus file instead of a dense index")
    serve.add_argument("--encoder", default=None, help="override the index's query encoder")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument("--max-batch", type=int, default=32, help="most queries encoded together (default: 32)")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(prog="agentdistill", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"agentdistill {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_index_commands(commands)
    _add_serve_command(commands)
    return parser


def _run_index_build(args: argparse.Namespace) -> None:
    from agentdistill.envs.tools.retrieval.encoders import DEFAULT_ENCODER, TextEncoder
    from agentdistill.envs.tools.retrieval.index_store import build_index

    encoder = TextEncoder(args.encoder or DEFAULT_ENCODER, device=args.device or "cpu", batch_size=args.batch_size)
    info = build_index(
        args.corpus,
        args.out,
        encoder=encoder,
        index_type=args.index_type,
        shard_size=args.shard_size,
        overwrite=args.overwrite,
        progress=True,
    )
    sys.stdout.write(info.describe() + "\n")


def _run_index_info(args: argparse.Namespace) -> None:
    from agentdistill.envs.tools.retrieval.index_store import index_info

    sys.stdout.write(index_info(args.index_dir).describe() + "\n")


def _run_serve(args: argparse.Namespace) -> None:
    from agentdistill.envs.tools.retrieval.corpus import load_corpus
    from agentdistill.envs.tools.retrieval.factory import make_retriever
    from agentdistill.envs.tools.retrieval.server import serve

    if args.index is not None:
        retriever = make_retriever(args.index, documents=list, encoder=args.encoder)
    else:
        retriever = make_retriever("bm25", documents=lambda: load_corpus(args.corpus))
    serve(retriever, host=args.host, port=args.port, max_batch=args.max_batch)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agentdistill`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "index":
        handlers = {"build": _run_index_build, "info": _run_index_info}
        handlers[args.index_command](args)
    elif args.command == "serve-retriever":
        _run_serve(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
