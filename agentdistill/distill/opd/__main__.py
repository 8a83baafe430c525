"""The OPD entry point each process of a launch runs (``python -m agentdistill.distill.opd``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from collections.abc import Sequence

from agentdistill.distill.grpo.__main__ import settings_for
from agentdistill.distill.opd.launch import OPD_MODULE
from agentdistill.distill.opd.settings import OPDSettings
from agentdistill.distill.opd.train import train_opd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {OPD_MODULE}",
        description="On-policy distillation in an env (run in every process by agentdistill.distill.opd.launch).",
    )
    parser.add_argument("--env", required=True, help="env id, e.g. AgentMath-Synthetic-v0")
    parser.add_argument("--student", required=True, help="hf:DIR, the student to train")
    parser.add_argument("--teacher", required=True, help="hf:DIR, vllm:MODEL or openai:URL#MODEL")
    parser.add_argument("--out", required=True, help="output directory (resumed when it holds checkpoints)")
    parser.add_argument("--config", default=None, help="YAML of OPD settings (default: OPDSettings())")
    parser.add_argument("--steps", type=int, default=None, help="override max_steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # launched by launch_opd, which holds the output directory's claim for all ranks
    result = train_opd(
        args.env,
        args.student,
        args.teacher,
        args.out,
        settings_for(args.config, args.steps, OPDSettings),
        progress=not args.no_progress,
        claim_directory=False,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(dataclasses.asdict(result), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
