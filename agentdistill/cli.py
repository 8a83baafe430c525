"""The ``agentdistill`` command: parses arguments and dispatches to the library, nothing else.

    agentdistill quickstart --out runs/quickstart [--quick]
    agentdistill index build --corpus wiki-18.jsonl --encoder intfloat/e5-base-v2 --index-type flat --out DIR
    agentdistill index info DIR
    agentdistill serve-retriever --index DIR [--host 127.0.0.1] [--port 8000]
    agentdistill rollout --env AgentQA-Synthetic-v0 --policy expert --episodes 200 --num-envs 16 --out t.jsonl
    agentdistill show t.jsonl [--index I]
    agentdistill rescore t.jsonl --judge openai:URL#gpt-4o-mini --prompts-dir DIR --out judged.jsonl
    agentdistill ftp build --env AgentQA-HotpotQA-v0 --policy openai:URL#MODEL --episodes 1000 --out ftp.json
    agentdistill distill --trajectories t.jsonl --student scratch:tiny --out students/tiny --config configs/distill/sft_cpu_tiny.yaml
    agentdistill eval --policy hf:DIR --suite paper --data-root ../shared/data --limit 50 --sag 8 --out results/
    agentdistill rl --env AgentMath-Synthetic-v0 --policy hf:students/tiny --out rl/tiny --config configs/rl/grpo_cpu_tiny.yaml
    agentdistill run configs/paper/eval_qwen2.5-1.5b_sag.yaml [--dry-run] [--override limit=10]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from agentdistill import __version__

if TYPE_CHECKING:
    from agentdistill.rollouts.loop import SAGSettings


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
    build.add_argument("--shard-size", type=positive_int, default=100_000, help="passages per encoded shard (default: 100000)")
    build.add_argument("--batch-size", type=positive_int, default=64, help="encoder batch size (default: 64)")
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
    serve.add_argument("--port", type=port_number, default=8000, help="port (default: 8000)")
    serve.add_argument("--max-batch", type=positive_int, default=32, help="most queries encoded together (default: 32)")


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an int no smaller than ``minimum`` (``what`` says what it counts)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "a non-negative integer")


def port_number(text: str) -> int:
    """An argparse type: a TCP port to listen on, 1-65535."""
    value = _int_at_least(1, "a port number between 1 and 65535")(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number between 1 and 65535, got {value}")
    return value


def sag_candidates(text: str) -> int:
    """An argparse type: SAG's candidate count, 0 (off) or at least 2 (one candidate leaves nothing to vote on)."""
    value = _int_at_least(0, "0 (SAG off) or a number of candidates >= 2")(text)
    if value == 1:
        raise argparse.ArgumentTypeError("expected 0 (SAG off) or a number of candidates >= 2 to vote among, got 1")
    return value


def _number_where(holds: Callable[[float], bool], what: str) -> Callable[[str], float]:
    """An argparse type: a float for which ``holds`` is true (``what`` says which ones)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not holds(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    return parse


temperature = _number_where(lambda value: 0 <= value < float("inf"), "a temperature >= 0 (0: greedy)")
probability = _number_where(lambda value: 0 < value <= 1, "a top-p in (0, 1]")


def env_argument(text: str) -> tuple[str, object]:
    """``key=value`` for env constructor arguments; the value is JSON when it parses, else a string."""
    import json

    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _add_env_policy_tasks(parser: argparse.ArgumentParser) -> None:
    """The arguments that say which env, which policy and which of the env's tasks (rollout, ftp build)."""
    parser.add_argument("--env", required=True, help="env id, e.g. AgentQA-HotpotQA-v0")
    parser.add_argument("--policy", required=True, help="expert, hf:PATH[@ADAPTER], vllm:MODEL[@LORA] or openai:URL#MODEL")
    parser.add_argument("--episodes", type=positive_int, required=True, help="run tasks START .. START+EPISODES-1")
    parser.add_argument("--start", type=non_negative_int, default=0, help="first task index (default: 0)")
    parser.add_argument("--env-arg", type=env_argument, action="append", default=[], metavar="KEY=VALUE",
                        help="env constructor argument, e.g. data_path=... or max_steps=5 (repeatable)")
    _add_protocol_arguments(parser)


def _add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """``--protocol`` and ``--prompts-dir``: the paper's agent texts and rules instead of ours."""
    parser.add_argument("--protocol", choices=("agentdistill", "paper"), default="agentdistill",
                        help="paper: the paper's prompts, observation texts, step limit and SAG vote, byte for byte "
                        "(needs --prompts-dir); default: agentdistill")
    parser.add_argument("--prompts-dir", default=None, metavar="DIR",
                        help="with --protocol paper: the directory of the paper's code_agent.yaml, teacher_model.yaml, "
                        "judge_prompt.txt and task_instruction.txt")


def _add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """``--executor`` and ``--ray-address``: run the envs on this machine or as Ray actors over a cluster."""
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="where the envs run: local (this machine, default) or ray (Ray actors over a cluster; "
                        'pip install -e ".[ray]")')
    parser.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                        help="with --executor ray: the cluster's head (`ray start --head` prints it); default: "
                        "RAY_ADDRESS, else a Ray started on this machine")


def executor_settings(args: argparse.Namespace) -> dict[str, str | None]:
    """``executor`` and ``ray_address`` as the flags say, refused in one line when they contradict each other or
    Ray is not installed (before anything slow loads)."""
    from agentdistill.errors import UserError

    if args.executor != "ray":
        if args.ray_address is not None:
            raise UserError(f"--ray-address {args.ray_address} is read only with --executor ray")
        return {"executor": "local", "ray_address": None}
    if getattr(args, "mode", "sync") != "sync":
        raise UserError(f"--mode {args.mode} is for the local executor: drop it with --executor ray")
    from agentdistill.rollouts.ray_envs import import_ray

    import_ray()
    return {"executor": "ray", "ray_address": args.ray_address}


def protocol_env_args(args: argparse.Namespace) -> dict[str, object]:
    """The env arguments ``--protocol``/``--prompts-dir`` stand for (none for the default protocol)."""
    from agentdistill.errors import UserError

    if args.protocol != "paper":
        if args.prompts_dir is not None and not getattr(args, "judge", None):
            raise UserError("--prompts-dir is read only with --protocol paper (or --judge)")
        return {}
    from agentdistill.envs.paper.prompts import PaperPrompts

    PaperPrompts.load(args.prompts_dir)  # missing files are named now, before anything slow
    return {"protocol": "paper", "prompts_dir": args.prompts_dir}


def _sag_settings(args: argparse.Namespace) -> SAGSettings | None:
    """SAG as the flags say: the paper's vote on printed output under --protocol paper unless --sag-vote says."""
    from agentdistill.rollouts.loop import SAGSettings

    if args.sag <= 1:
        return None
    return SAGSettings(n=args.sag, vote=args.sag_vote or ("logs" if args.protocol == "paper" else "answer"))


def _add_rollout_commands(commands: argparse._SubParsersAction) -> None:
    rollout = commands.add_parser(
        "rollout",
        help="run a policy on an env's tasks and write one JSON line per episode (resumable)",
        description="Run N envs against one policy, batching every waiting env into one policy call. "
        "Rerunning with the same --out finishes the remaining tasks.",
    )
    _add_env_policy_tasks(rollout)
    rollout.add_argument("--num-envs", type=positive_int, default=8, help="envs stepped together (default: 8)")
    rollout.add_argument("--mode", choices=("sync", "async"), default="sync", help="vector env kind (default: sync)")
    _add_executor_arguments(rollout)
    rollout.add_argument("--out", required=True,
                         help="trajectory file (JSON Lines); a rerun with the same settings resumes it, a file of "
                         "another run is refused")
    rollout.add_argument("--append", action="store_true",
                         help="add this run's episodes to a file that holds another run's (other settings or env)")
    rollout.add_argument("--temperature", type=temperature, default=0.0, help="sampling temperature (default: 0, greedy)")
    rollout.add_argument("--top-p", type=probability, default=1.0, help="nucleus sampling mass (default: 1)")
    rollout.add_argument("--max-new-tokens", type=positive_int, default=1024)
    rollout.add_argument("--seed", type=int, default=None)
    rollout.add_argument("--sag", type=sag_candidates, default=0, metavar="N",
                         help="self-consistent action generation with N >= 2 candidates (default: 0, off)")
    rollout.add_argument("--sag-vote", choices=("answer", "logs"), default=None,
                         help="what SAG candidates vote with (default: logs, the paper's, under --protocol paper; else answer)")
    rollout.add_argument("--ftp", default=None, help="first-thought prefixes from `agentdistill ftp build`")
    rollout.add_argument("--wandb-project", default=None, help="log live metrics to this W&B project (offline without credentials)")
    rollout.add_argument("--no-progress", action="store_true", help="no progress bar")

    rescore = commands.add_parser(
        "rescore",
        help="re-score trajectory files with the paper's LLM judge, without re-running them",
        description="Judge every factual-QA answer of the given trajectory files with the paper's judge prompt and "
        "write the records, with metrics['judge'] beside EM and F1, to a new file (a rerun resumes it).",
    )
    rescore.add_argument("trajectories", nargs="+", help="trajectory files from rollout, eval or run")
    rescore.add_argument("--judge", required=True, metavar="SPEC", help="the judge policy, e.g. openai:URL#gpt-4o-mini")
    rescore.add_argument("--prompts-dir", required=True, metavar="DIR", help="the paper's prompt files (judge_prompt.txt)")
    rescore.add_argument("--out", required=True, help="the re-scored trajectory file to write (resumed if it is this rescore's)")
    rescore.add_argument("--batch-size", type=positive_int, default=64, help="answers per judge call (default: 64)")
    rescore.add_argument("--no-progress", action="store_true", help="no progress bar")

    show = commands.add_parser("show", help="render trajectory episodes for reading in a terminal")
    show.add_argument("file", help="a trajectory file written by `agentdistill rollout`")
    show.add_argument("--index", type=non_negative_int, default=None, help="show only the episode at this position")
    show.add_argument("--limit", type=positive_int, default=5, help="show at most this many episodes (default: 5)")

    ftp = commands.add_parser("ftp", help="first-thought prefixes")
    ftp_commands = ftp.add_subparsers(dest="ftp_command", required=True, metavar="{build}")
    build = ftp_commands.add_parser("build", help="keep the first paragraph of the teacher's chain-of-thought per task")
    _add_env_policy_tasks(build)
    build.add_argument("--out", required=True, help="JSON file {task_id: prefix}")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_eval_command(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "eval",
        help="evaluate a policy on the paper's benchmarks and write a results table and chart",
        description="Run the policy on each benchmark (resumable), then write results.md/.csv/.json/.png to --out.",
    )
    evaluate.add_argument("--policy", required=True, help="expert, hf:PATH[@ADAPTER], vllm:MODEL[@LORA] or openai:URL#MODEL")
    evaluate.add_argument("--suite", choices=("paper", "factual", "math"), default="paper", help="which benchmarks (default: paper, all 8)")
    evaluate.add_argument("--tasks", nargs="+", default=None, metavar="ENV_ID", help="explicit env ids instead of a suite")
    evaluate.add_argument("--data-root", default=None, help="read local data files from here (e.g. ../shared/data) instead of the hub")
    evaluate.add_argument("--env-arg", type=env_argument, action="append", default=[], metavar="KEY=VALUE",
                          help="constructor argument for every benchmark's env, e.g. max_steps=5 or split=train "
                          "(repeatable; the synthetic envs are scored on their held-out split=test unless given)")
    evaluate.add_argument("--limit", type=positive_int, default=None, help="first K tasks of each benchmark")
    evaluate.add_argument("--sag", type=sag_candidates, default=0, metavar="N",
                          help="self-consistent action generation with N >= 2 candidates (default: 0, off)")
    evaluate.add_argument("--sag-vote", choices=("answer", "logs"), default=None,
                          help="what SAG candidates vote with (default: logs, the paper's, under --protocol paper; else answer)")
    _add_protocol_arguments(evaluate)
    evaluate.add_argument("--judge", default=None, metavar="SPEC",
                          help="grade the factual benchmarks by the paper's LLM judge asked through this policy, e.g. "
                          "openai:https://api.openai.com/v1#gpt-4o-mini (needs --prompts-dir: judge_prompt.txt)")
    evaluate.add_argument("--cot", choices=("none", "cot", "cot-rag"), default="none", help="evaluate the CoT baseline instead of the agent")
    evaluate.add_argument("--prompt-variant", choices=("full", "short"), default="full",
                          help="system prompt of the envs: students trained by `agentdistill distill` use short")
    evaluate.add_argument("--num-envs", type=positive_int, default=8, help="envs stepped together (default: 8)")
    _add_executor_arguments(evaluate)
    evaluate.add_argument("--max-new-tokens", type=positive_int, default=1024)
    evaluate.add_argument("--out", required=True, help="output directory (trajectories and results)")
    evaluate.add_argument("--wandb-project", default=None)
    evaluate.add_argument("--no-progress", action="store_true")


def _add_distill_command(commands: argparse._SubParsersAction) -> None:
    distill = commands.add_parser(
        "distill",
        help="fine-tune a student on trajectory files (TRL SFT, LoRA or full, accelerate)",
        description="Convert trajectories to chat conversations with the paper's filters, then SFT the student "
        "with loss on its own turns only. The output directory loads as a student policy: hf:OUT.",
    )
    distill.add_argument("--trajectories", nargs="+", required=True, help="trajectory files from `agentdistill rollout`")
    distill.add_argument("--student", required=True, help="a hub id, a local model directory, or scratch:tiny / scratch:small")
    distill.add_argument("--out", required=True, help="output directory (resumes from its last checkpoint)")
    distill.add_argument("--config", default=None, help="SFT settings YAML (default: the paper's, configs/distill/sft_paper.yaml)")
    distill.add_argument("--num-processes", type=positive_int, default=1, help="train in this many processes through accelerate")
    distill.add_argument("--accelerate-config", default=None, help="accelerate config (default: chosen for the machine)")
    distill.add_argument("--merge", action="store_true", help="also write a merged model to OUT/merged (LoRA)")
    distill.add_argument("--wandb-project", default=None,
                         help="track the run in this W&B project (default: the config's, else agentdistill; offline "
                         "without credentials, files under OUT/wandb)")
    distill.add_argument("--no-wandb", action="store_true", help="do not track the run with W&B")
    _add_protocol_arguments(distill)


def _add_run_command(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run",
        help="run an experiment config (configs/paper/*.yaml): collect, sft, eval or cot",
        description="Check a config key by key, print its plan, then run it. --dry-run stops after the checks "
        "that need no GPU, model server or hub.",
    )
    run.add_argument("config", help="an experiment YAML, e.g. configs/paper/eval_qwen2.5-1.5b_sag.yaml")
    run.add_argument("--dry-run", action="store_true", help="check and print the plan; run nothing")
    run.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                     help="set a dotted key to a YAML value, e.g. limit=10 or tasks.0.episodes=4 (repeatable)")
    run.add_argument("--no-wandb", action="store_true", help="do not track training runs with W&B")


def _add_quickstart_command(commands: argparse._SubParsersAction) -> None:
    quickstart = commands.add_parser(
        "quickstart",
        help="distill an agent end to end on a CPU in minutes: teacher, scratch student, SFT, evaluation with SAG",
        description="A scripted teacher solves synthetic QA and math tasks (with first-thought prefixes), a small "
        "student built from scratch is distilled from its trajectories (TRL SFT, W&B offline), and teacher, student "
        "and student + SAG are evaluated on held-out tasks. Writes OUT/results.json, OUT/results.png and the "
        "student (hf:OUT/student); a rerun with the same --out resumes.",
    )
    quickstart.add_argument("--out", required=True, help="output directory (a rerun resumes)")
    quickstart.add_argument("--quick", action="store_true",
                            help="a plumbing check of about a minute (CI): a few episodes and steps; nothing is learnt")
    quickstart.add_argument("--no-progress", action="store_true", help="no progress bars")


_DEBUG_HELP = "on an error, show the full traceback instead of the one-line message"


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(prog="agentdistill", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"agentdistill {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_quickstart_command(commands)
    _add_index_commands(commands)
    _add_serve_command(commands)
    _add_rollout_commands(commands)
    _add_eval_command(commands)
    _add_distill_command(commands)
    _add_run_command(commands)
    _add_rl_command(commands)
    _add_opd_command(commands)
    _add_study_command(commands)
    _accept_debug_anywhere(parser)
    return parser


def _accept_debug_anywhere(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after the command too (``agentdistill rollout ... --debug``), not only before it; a
    sub-command's flag is left unset unless given, so it never hides the top-level one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in set(action.choices.values()):
                subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
                _accept_debug_anywhere(subparser)


def _add_rl_command(commands: argparse._SubParsersAction) -> None:
    rl = commands.add_parser(
        "rl",
        help="GRPO fine-tuning of a student in an env, with the env's score as reward (TRL)",
        description="Play groups of episodes per task with the student being trained, reward each with the env's "
        "score and update with TRL's GRPOTrainer (loss only on tokens the model sampled). Greedy episodes on "
        "held-out tasks are scored before and after; OUT loads as --policy hf:OUT. A rerun resumes.",
    )
    rl.add_argument("--env", required=True, help="env id, e.g. AgentMath-Synthetic-v0")
    rl.add_argument("--policy", required=True, help="hf:DIR, the student to train (a full model directory or hub id)")
    rl.add_argument("--out", required=True, help="output directory (resumed when it holds checkpoints)")
    rl.add_argument("--steps", type=positive_int, default=None, help="optimizer steps (overrides the config's max_steps)")
    rl.add_argument("--config", default=None, help="YAML of GRPO settings, e.g. configs/rl/grpo_cpu_tiny.yaml")
    rl.add_argument("--num-processes", type=positive_int, default=1, help="data-parallel processes via accelerate (default: 1)")
    rl.add_argument("--accelerate-config", default=None, help="accelerate config for --num-processes > 1")
    rl.add_argument("--wandb-project", default=None,
                    help="track the run in this W&B project (default: the config's, else agentdistill; offline without credentials)")
    rl.add_argument("--no-wandb", action="store_true", help="do not track the run with W&B")
    rl.add_argument("--no-progress", action="store_true", help="no progress bars")


def _check_output(path: str, kind: Literal["file", "directory"], *, model: bool = False) -> None:
    """Refuse at once an output path that cannot be written (read-only, not a directory, a full disk),
    before any slow import or work; ``model`` asks for the room a model and its checkpoints need."""
    from agentdistill import preflight

    free = preflight.MODEL_MIN_FREE_BYTES if model else preflight.DEFAULT_MIN_FREE_BYTES
    preflight.check_output_path(path, kind=kind, min_free_bytes=free)


def _check_env(env_id: str, env_args: Sequence[tuple[str, object]] = ()) -> None:
    """An unknown env id or an argument the env does not take, refused before anything is loaded."""
    from agentdistill.envs.registration import check_env_arguments

    check_env_arguments(env_id, dict(env_args))


def _add_opd_command(commands: argparse._SubParsersAction) -> None:
    opd = commands.add_parser(
        "opd",
        help="on-policy distillation: the student acts in an env, the teacher scores its every token (TRL)",
        description="The student plays episodes in the env; the teacher reads each one in its own context and "
        "gives the log-probability of every token the student sampled; the student learns from the per-token "
        "reverse KL (teacher minus student log-probability as the advantage, TRL's GRPOTrainer). Teacher and "
        "student share a tokenizer. Held-out episodes are scored before and after; OUT loads as --policy hf:OUT. "
        "A rerun resumes.",
    )
    opd.add_argument("--env", required=True, help="env id, e.g. AgentMath-Synthetic-v0")
    opd.add_argument("--student", required=True, help="hf:DIR, the student to train (a full model or LoRA student)")
    opd.add_argument("--teacher", required=True, metavar="SPEC",
                     help="hf:DIR (a forward pass), vllm:MODEL (prompt_logprobs) or openai:URL#MODEL (echo + logprobs)")
    opd.add_argument("--out", required=True, help="output directory (resumed when it holds checkpoints)")
    opd.add_argument("--steps", type=positive_int, default=None, help="optimizer steps (overrides the config's max_steps)")
    opd.add_argument("--config", default=None, help="YAML of OPD settings, e.g. configs/opd/opd_cpu_tiny.yaml")
    opd.add_argument("--num-processes", type=positive_int, default=1, help="data-parallel processes via accelerate (default: 1)")
    opd.add_argument("--accelerate-config", default=None, help="accelerate config for --num-processes > 1")
    opd.add_argument("--wandb-project", default=None,
                     help="track the run in this W&B project (default: the config's, else agentdistill; offline without credentials)")
    opd.add_argument("--no-wandb", action="store_true", help="do not track the run with W&B")
    opd.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_study_command(commands: argparse._SubParsersAction) -> None:
    study = commands.add_parser(
        "study",
        help="the paper's claims on a laptop: CoT vs agent distillation, SAG, GRPO, OPD, two student sizes",
        description="Train and evaluate every cell (method x student x seed) on held-out tasks of both synthetic "
        "envs, each cell resumable; write results.json, results.md and results.png under OUT.",
    )
    study.add_argument("--out", required=True, help="output directory (a rerun resumes, cell by cell)")
    study.add_argument("--quick", action="store_true", help="a plumbing check at smoke size (a few minutes; nothing is learnt)")
    study.add_argument("--config", default=None, help="YAML of study settings, e.g. configs/study/study.yaml")
    study.add_argument("--no-progress", action="store_true", help="no progress bars")


def _check_policy(spec: str) -> None:
    """A malformed policy spec, or a model path that does not exist, refused before any model loads."""
    from agentdistill.policies import parse_policy_spec
    from agentdistill.policies.model_source import check_model_source

    parsed = parse_policy_spec(spec)
    if parsed.kind in ("hf", "vllm"):
        check_model_source(parsed.model)
        if parsed.adapter is not None:
            check_model_source(parsed.adapter, what="adapter")


def _check_input_file(path: str, what: str) -> None:
    from pathlib import Path

    from agentdistill.errors import UserError

    if not Path(path).is_file():
        problem = "is a directory" if Path(path).is_dir() else "does not exist"
        raise UserError(f"{what} {path!r} {problem} (relative paths are read from {Path.cwd()})")


def _wandb_project(args: argparse.Namespace, configured: str | None) -> str | None:
    """The W&B project a training command tracks in: ``--wandb-project``, else the config's, else the default;
    none with ``--no-wandb``."""
    from agentdistill.tracking import default_project

    if args.no_wandb:
        return None
    return default_project(args.wandb_project or configured)


def _run_index_build(args: argparse.Namespace) -> None:
    _check_output(args.out, "directory", model=True)
    _check_input_file(args.corpus, "corpus")
    from agentdistill.envs.tools.retrieval.index_store import check_corpus

    check_corpus(args.corpus)  # a malformed corpus fails now, not after the encoder has loaded
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
        from agentdistill.envs.tools.retrieval.index_store import index_info

        index_info(args.index)  # a directory that is not a finished index is refused before the encoder loads
        retriever = make_retriever(args.index, documents=list, encoder=args.encoder)
    else:
        _check_input_file(args.corpus, "corpus")
        retriever = make_retriever("bm25", documents=lambda: load_corpus(args.corpus))
    serve(retriever, host=args.host, port=args.port, max_batch=args.max_batch)


def _run_rollout(args: argparse.Namespace) -> None:
    env_args = {**dict(args.env_arg), **protocol_env_args(args)}
    _check_env(args.env, env_args.items())
    _check_policy(args.policy)
    if args.ftp:
        _check_input_file(args.ftp, "prefix file")
    _check_output(args.out, "file")
    executor = executor_settings(args)
    import json

    from agentdistill.policies import make_policy
    from agentdistill.policies.base import SamplingParams
    from agentdistill.rollouts.collect import collect_trajectories
    from agentdistill.rollouts.ftp import load_prefixes

    policy = make_policy(args.policy)
    try:
        summary = collect_trajectories(
            policy,
            args.env,
            out=args.out,
            start=args.start,
            episodes=args.episodes,
            num_envs=args.num_envs,
            vectorization_mode=args.mode,
            **executor,
            env_kwargs=env_args,
            sampling=SamplingParams(
                temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed
            ),
            sag=_sag_settings(args),
            ftp_prefixes=load_prefixes(args.ftp) if args.ftp else None,
            wandb_project=args.wandb_project,
            wandb_config={k: v for k, v in vars(args).items() if k != "env_arg"},
            progress=not args.no_progress,
            append=args.append,
        )
    finally:
        policy.close()
    report = {"episodes": summary.episodes, "skipped (already in the file)": summary.skipped, **summary.metrics}
    sys.stdout.write(json.dumps(report, indent=1) + "\n")


def _run_rescore(args: argparse.Namespace) -> None:
    for path in args.trajectories:
        _check_input_file(path, "trajectory file")
    _check_policy(args.judge)
    _check_output(args.out, "file")
    from agentdistill.rollouts.rescore import rescore

    summary = rescore(
        args.trajectories, args.judge, out=args.out, prompts_dir=args.prompts_dir, batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    sys.stdout.write(summary.to_text())


def _run_show(args: argparse.Namespace) -> None:
    _check_input_file(args.file, "trajectory file")
    from agentdistill.rollouts.show import show_file

    show_file(args.file, index=args.index, limit=args.limit)


def _run_ftp_build(args: argparse.Namespace) -> None:
    env_args = {**dict(args.env_arg), **protocol_env_args(args)}
    _check_env(args.env, env_args.items())
    _check_policy(args.policy)
    _check_output(args.out, "file")
    from agentdistill.policies import make_policy
    from agentdistill.rollouts.ftp import build_prefix_file

    policy = make_policy(args.policy)
    try:
        prefixes = build_prefix_file(
            policy, args.env, range(args.start, args.start + args.episodes), args.out, env_kwargs=env_args,
            progress=not args.no_progress, protocol=args.protocol, prompts_dir=args.prompts_dir,
        )
    finally:
        policy.close()
    sys.stdout.write(f"{len(prefixes)} prefixes written to {args.out}\n")


def _run_eval(args: argparse.Namespace) -> None:
    from agentdistill.rollouts.evaluate import PAPER_FACTUAL, PAPER_MATH, PAPER_SUITE

    suites = {"paper": PAPER_SUITE, "factual": PAPER_FACTUAL, "math": PAPER_MATH}
    env_ids = tuple(args.tasks) if args.tasks else tuple(suites[args.suite])
    env_args = {**dict(args.env_arg), **protocol_env_args(args)}
    for env_id in env_ids:
        _check_env(env_id, env_args.items())
    _check_policy(args.policy)
    _check_output(args.out, "directory")
    executor = executor_settings(args)
    import agentdistill  # noqa: F401 - registers the env ids
    from agentdistill.policies.base import SamplingParams
    from agentdistill.rollouts.evaluate import benchmark_env_kwargs, evaluate

    kwargs_by_env = benchmark_env_kwargs(
        env_ids, data_root=args.data_root, prompt_variant=args.prompt_variant, env_args=env_args
    )
    if args.cot != "none":
        from agentdistill.distill.cot import evaluate_cot_suite

        # the CoT baseline runs no agent: its protocol is the CoT's own, not the envs'
        cot_kwargs = {
            env_id: {key: value for key, value in kwargs.items() if key not in ("protocol", "prompts_dir")}
            for env_id, kwargs in kwargs_by_env.items()
        }
        table = evaluate_cot_suite(
            args.policy, env_ids, env_kwargs_by_env=cot_kwargs, limit=args.limit, rag=args.cot == "cot-rag",
            out_dir=args.out, protocol=args.protocol, prompts_dir=args.prompts_dir,
        )
    else:
        table = evaluate(
            args.policy,
            env_ids,
            env_kwargs_by_env=kwargs_by_env,
            limit=args.limit,
            sag_settings=_sag_settings(args),
            num_envs=args.num_envs,
            **executor,
            out_dir=args.out,
            sampling=SamplingParams(max_new_tokens=args.max_new_tokens),
            wandb_project=args.wandb_project,
            progress=not args.no_progress,
            judge=args.judge,
            prompts_dir=args.prompts_dir,
        )
    sys.stdout.write(table.to_markdown() + "\n")


def _run_distill(args: argparse.Namespace) -> None:
    _check_output(args.out, "directory", model=True)
    for path in args.trajectories:
        _check_input_file(path, "trajectory file")
    if args.config:
        _check_input_file(args.config, "SFT settings file")
    if not args.student.startswith("scratch:"):
        from agentdistill.policies.model_source import check_model_source

        check_model_source(args.student, what="student")
    from agentdistill.distill.sft.launch import run_sft
    from agentdistill.distill.sft.settings import SFTSettings
    from agentdistill.distill.sft.trajectories import trajectories_to_dataset
    from agentdistill.errors import UserError

    settings = SFTSettings.from_yaml(args.config) if args.config else SFTSettings()
    settings = settings.replace(wandb_project=_wandb_project(args, settings.wandb_project))
    protocol_env_args(args)  # the paper's prompt files, checked before anything slow
    dataset, report = trajectories_to_dataset(args.trajectories, protocol=args.protocol, prompts_dir=args.prompts_dir)
    report.describe()
    if len(dataset) == 0:
        raise UserError(f"no episode of {', '.join(args.trajectories)} passed the filters: nothing to train on")
    result = run_sft(
        dataset, args.student, args.out, settings=settings, num_processes=args.num_processes,
        accelerate_config=args.accelerate_config, merge=args.merge,
    )
    sys.stdout.write(f"student written to {args.out}; load it with --policy hf:{args.out}\n{result}\n")


def _run_rl(args: argparse.Namespace) -> None:
    _check_env(args.env)
    _check_policy(args.policy)
    if args.config:
        _check_input_file(args.config, "GRPO settings file")
    _check_output(args.out, "directory", model=True)
    from agentdistill.distill.grpo.__main__ import settings_for
    from agentdistill.distill.grpo.launch import launch_grpo
    from agentdistill.distill.grpo.train import train_grpo
    from agentdistill.distill.launch import LaunchOptions

    settings = settings_for(args.config, args.steps)
    settings = settings.replace(wandb_project=_wandb_project(args, settings.wandb_project))
    if args.num_processes > 1:
        options = LaunchOptions(num_processes=args.num_processes, accelerate_config=args.accelerate_config)
        result = launch_grpo(args.env, args.policy, args.out, settings=settings, options=options)
    else:
        result = train_grpo(args.env, args.policy, args.out, settings, progress=not args.no_progress)
    sys.stdout.write(_rl_summary(result))


def _run_opd(args: argparse.Namespace) -> None:
    _check_env(args.env)
    _check_student(args.student)
    if args.config:
        _check_input_file(args.config, "OPD settings file")
    _check_output(args.out, "directory", model=True)
    from agentdistill.distill.grpo.__main__ import settings_for
    from agentdistill.distill.launch import LaunchOptions
    from agentdistill.distill.opd.launch import launch_opd
    from agentdistill.distill.opd.settings import OPDSettings
    from agentdistill.distill.opd.train import check_teacher_spec, train_opd

    check_teacher_spec(args.teacher)
    settings = settings_for(args.config, args.steps, OPDSettings)
    settings = settings.replace(wandb_project=_wandb_project(args, settings.wandb_project))
    if args.num_processes > 1:
        options = LaunchOptions(num_processes=args.num_processes, accelerate_config=args.accelerate_config)
        result = launch_opd(args.env, args.student, args.teacher, args.out, settings=settings, options=options)
    else:
        result = train_opd(args.env, args.student, args.teacher, args.out, settings, progress=not args.no_progress)
    sys.stdout.write(_rl_summary(result))


def _run_study(args: argparse.Namespace) -> None:
    from agentdistill.errors import UserError
    from agentdistill.study.settings import StudySettings

    if args.quick and args.config:
        raise UserError("--quick runs the built-in smoke settings; give --quick or --config, not both")
    if args.config:
        _check_input_file(args.config, "study settings file")
    settings = StudySettings.quick() if args.quick else StudySettings.from_yaml(args.config) if args.config else StudySettings()
    _check_output(args.out, "directory", model=True)
    from pathlib import Path

    from agentdistill.study.report import RESULTS_JSON, RESULTS_MD, RESULTS_PNG
    from agentdistill.study.run import run_study

    results = run_study(args.out, settings, progress=not args.no_progress)
    table = (Path(args.out) / RESULTS_MD).read_text(encoding="utf-8")
    sys.stdout.write(
        f"{table}\n{len(results['rows'])} rows in {results['runtime_seconds']:.0f} s; "
        f"{args.out}/{RESULTS_JSON}, {RESULTS_MD}, {RESULTS_PNG}\n"
    )


def _check_student(spec: str) -> None:
    """The student to train must be ``hf:DIR`` (or a hub id): a transformers model."""
    from agentdistill.errors import UserError

    if not spec.startswith("hf:"):
        raise UserError(f"the student is the transformers model trained: give --student hf:DIR, got {spec!r}")
    _check_policy(spec)


def _rl_summary(result: object) -> str:
    """Before/after figures of an RL run, then where the student is."""
    import dataclasses
    import json

    data = dataclasses.asdict(result)  # type: ignore[call-overload]
    lines = [json.dumps(data, indent=1)]
    before, after = data.get("before"), data.get("after")
    if before and after:
        lines.append(
            f"held-out success {before['success_rate']:.1%} -> {after['success_rate']:.1%}, mean reward "
            f"{before['mean_reward']:.3f} -> {after['mean_reward']:.3f} over {after['episodes']} episodes"
        )
    gain = data.get("reward_gain")
    if gain:
        lines.append(
            f"paired by task: mean reward {gain['mean']:+.3f} +- {gain['stderr']:.3f} (standard error) over "
            f"{gain['tasks']} tasks; {gain['improved']} improved, {gain['worsened']} worsened"
        )
    lines.append(f"student written to {data['out_dir']}; load it with --policy hf:{data['out_dir']}")
    return "\n".join(lines) + "\n"


def _run_experiment(args: argparse.Namespace) -> None:
    import os

    from agentdistill.experiments import run_experiment

    if args.no_wandb:
        os.environ["WANDB_MODE"] = "disabled"  # W&B's own switch: every run of the experiment is left untracked
    run_experiment(args.config, dry_run=args.dry_run, overrides=args.override)


def _run_quickstart(args: argparse.Namespace) -> None:
    import os

    # Before torch loads OpenMP: idle worker threads sleep instead of spinning. On 2 cores shared with anything
    # else, spinning threads wait on each other and training runs several times slower (measured: 7.8 s vs
    # 1.6 s per step under load); on an idle machine the difference is small. A value the user set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _check_output(args.out, "directory", model=True)
    from agentdistill.quickstart import run_quickstart

    def say(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    result = run_quickstart(args.out, quick=args.quick, progress=not args.no_progress, log=say)
    timings = ", ".join(f"{name.removesuffix('_s').replace('_', ' ')} {seconds:.0f} s" for name, seconds in result.timings.items())
    lines = [
        "",
        result.table(),
        "",
        f"results:      {result.results_path}",
        f"chart:        {result.chart_path}",
        f"student:      {result.student_dir}  (use it with --policy hf:{result.student_dir})",
        *(f"W&B run:      {run_dir}" for run_dir in result.wandb_run_dirs),
        "              (offline unless WANDB_MODE says otherwise; upload with `wandb sync <dir>`)",
        f"time:         {timings}",
    ]
    if args.quick:
        lines.append("(--quick: a plumbing check on a few episodes; run without --quick for a student that learns)")
    sys.stdout.write("\n".join(lines) + "\n")


_HANDLERS: Mapping[str, Callable[[argparse.Namespace], None]] = MappingProxyType(
    {
        "quickstart": _run_quickstart,
        "index build": _run_index_build,
        "index info": _run_index_info,
        "serve-retriever": _run_serve,
        "rollout": _run_rollout,
        "show": _run_show,
        "rescore": _run_rescore,
        "ftp build": _run_ftp_build,
        "eval": _run_eval,
        "distill": _run_distill,
        "run": _run_experiment,
        "rl": _run_rl,
        "opd": _run_opd,
        "study": _run_study,
    }
)
"""Each command as typed (``"index build"``, ``"rollout"``...) -> the function that runs it."""


def command_name(args: argparse.Namespace) -> str:
    """The command as the user typed it, e.g. ``"index build"`` or ``"rollout"``."""
    sub = getattr(args, "index_command", None) or getattr(args, "ftp_command", None)
    return f"{args.command} {sub}" if sub else str(args.command)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the user asked for something that cannot be done as asked: reported in one line.
    Anything else is a bug of ours and keeps its traceback."""
    import gymnasium

    return (ValueError, OSError, ImportError, gymnasium.error.Error)


def _message(error: BaseException) -> str:
    text = str(error).strip()
    if isinstance(error, ImportError) and not text:
        text = f"the package {error.name} is not installed"
    return text or type(error).__name__


def _interrupted(args: argparse.Namespace) -> str:
    """What an interrupted command kept, and how to pick up from there."""
    again = "run the same command again to resume"
    command = command_name(args)
    if command == "rollout":
        from pathlib import Path

        path = Path(args.out)
        kept = 0
        if path.is_file():
            with path.open("rb") as handle:
                kept = sum(1 for line in handle if line.endswith(b"\n") and line.strip())
        return f"{kept} finished episodes are kept in {path}; {again} (they are not run twice)"
    if command == "eval":
        return f"finished episodes are kept in {args.out}/trajectories; {again}"
    if command in ("distill", "rl", "opd"):
        return f"checkpoints saved so far are in {args.out}; {again} from the last one"
    if command == "index build":
        return f"finished shards are kept in {args.out}; {again}"
    if command in ("quickstart", "run", "ftp build", "rescore", "study"):
        return f"what finished is kept; {again}"
    return "nothing was written"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agentdistill`` console script.

    A user's mistake (a bad id, spec, path, file or setting) prints ``agentdistill <command>: <message>``
    and returns 1; Ctrl-C says what was kept and how to resume, and returns 130. ``--debug`` shows the
    traceback instead.
    """
    args = build_parser().parse_args(argv)
    name = command_name(args)
    try:
        _HANDLERS[name](args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        sys.stderr.write(f"\nagentdistill {name}: interrupted; {_interrupted(args)}\n")
        return 130
    except _user_errors() as error:
        if args.debug:
            raise
        sys.stderr.write(f"agentdistill {name}: {_message(error)}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
