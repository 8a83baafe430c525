"""The GRPO entry point each process of a launch runs (``python -m agentdistill.distill.grpo``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from typing import TypeVar

from agentdistill.distill.grpo.launch import GRPO_MODULE
from agentdistill.distill.grpo.settings import GRPOSettings
from agentdistill.distill.grpo.train import train_grpo

SettingsT = TypeVar("SettingsT", bound=GRPOSettings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {GRPO_MODULE}",
        description="GRPO on the rollout loop (run in every process by agentdistill.distill.grpo.launch_grpo).",
    )
    parser.add_argument("--env", required=True, help="env id, e.g. AgentMath-Synthetic-v0")
    parser.add_argument("--policy", required=True, help="hf:DIR, the student to train")
    parser.add_argument("--out", required=True, help="output directory (resumed when it holds checkpoints)")
    parser.add_argument("--config", default=None, help="YAML of GRPO settings (default: GRPOSettings())")
    parser.add_argument("--steps", type=int, default=None, help="override max_steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def settings_for(
    config: str | os.PathLike[str] | None, steps: int | None, settings_class: type[SettingsT] = GRPOSettings
) -> SettingsT:
    """The settings a command line asks for: the YAML (or the defaults), then ``--steps``."""
    settings = settings_class.from_yaml(config) if config else settings_class()
    return settings.replace(max_steps=steps) if steps is not None else settings


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # launched by launch_grpo, which holds the output directory's claim for all ranks
    result = train_grpo(
        args.env,
        args.policy,
        args.out,
        settings_for(args.config, args.steps),
        progress=not args.no_progress,
        claim_directory=False,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(dataclasses.asdict(result), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
