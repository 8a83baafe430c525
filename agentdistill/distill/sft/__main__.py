"""The SFT entry point each process of a launch runs (``python -m agentdistill.distill.sft``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from collections.abc import Sequence

from agentdistill.distill.sft.conversations import load_conversations
from agentdistill.distill.sft.settings import SFTSettings
from agentdistill.distill.sft.train import train_sft


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agentdistill.distill.sft",
        description="Fine-tune a student on conversations (run in every process by agentdistill.distill.launch).",
    )
    parser.add_argument(
        "--dataset", required=True, help="a datasets.save_to_disk directory or a JSONL file of {messages}"
    )
    parser.add_argument("--student", required=True, help="scratch:tiny, scratch:small, a hub id or a local model dir")
    parser.add_argument("--out", required=True, help="output directory (resumed when it holds checkpoints)")
    parser.add_argument("--config", default=None, help="YAML of SFT settings (default: the paper's)")
    parser.add_argument("--merge", action="store_true", help="also write OUT/merged for a LoRA run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = SFTSettings.from_yaml(args.config) if args.config else SFTSettings()
    result = train_sft(load_conversations(args.dataset), args.student, args.out, settings, merge=args.merge or None)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(dataclasses.asdict(result), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
