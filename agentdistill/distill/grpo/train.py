"""One GRPO process: the start model, TRL's trainer with the env's rollouts, the evaluations and the result."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentdistill.distill.grpo.evaluation import before_and_gain, evaluate_on_ranks, sharded_weights
from agentdistill.distill.grpo.rollouts import EnvRollouts, environment_reward, task_dataset
from agentdistill.distill.grpo.settings import (
    EVAL_AFTER_FILENAME,
    EVAL_BEFORE_FILENAME,
    MERGED_START_DIRNAME,
    RESULT_FILENAME,
    RESUMABLE_SETTINGS,
    SETTINGS_FILENAME,
    GRPOResult,
    GRPOSettings,
)
from agentdistill.distill.grpo.start import StartModel, load_start_model, save_merged_start
from agentdistill.distill.launch import RANKS_DIRNAME
from agentdistill.distill.training import RankRecorder, last_complete_checkpoint, platform_arguments
from agentdistill.runs import RunDirectory, claim_run_directory
from agentdistill.tracking import training_wandb_run

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnvAlgorithm:
    """What an algorithm that trains a student acting in an env on TRL's GRPO trainer brings of its own; the rest
    of a run (start model, tasks, held-out evaluation before and after, checkpoints, W&B, the result file) is
    :func:`train_in_env`'s. GRPO itself is :data:`GRPO`; on-policy distillation is another
    (:func:`agentdistill.distill.opd.train.opd_algorithm`).

    Attributes:
        name: the W&B config key and what logs call the run (``"grpo"``).
        command: the command its run directories are claimed for (``"rl"``): another command's are refused.
        settings_filename, result_filename: where the settings and the result go in the output directory.
        make_rollouts: ``(env_id, settings, out_dir)`` to TRL's ``rollout_func`` (an :class:`EnvRollouts`).
        trainer_class: returns the trainer class (imported when called: TRL and torch load only to train).
        identity: more of a run's identity beyond env, start model and settings (OPD: the teacher).
        result_class: the result written (:class:`GRPOResult` or a subclass).
        result_extras: the log history to the fields ``result_class`` adds to :class:`GRPOResult`'s.
    """

    name: str
    command: str
    settings_filename: str
    result_filename: str
    make_rollouts: Callable[[str, Any, Path], EnvRollouts]
    trainer_class: Callable[[], type]
    identity: Mapping[str, Any] = field(default_factory=dict)
    result_class: type[GRPOResult] = GRPOResult
    result_extras: Callable[[Sequence[Mapping[str, Any]]], dict[str, Any]] = lambda history: {}


def _grpo_trainer_class() -> type:
    from agentdistill.distill.grpo.importance import AgentGRPOTrainer

    return AgentGRPOTrainer


GRPO = EnvAlgorithm(
    name="grpo",
    command="rl",
    settings_filename=SETTINGS_FILENAME,
    result_filename=RESULT_FILENAME,
    make_rollouts=EnvRollouts,
    trainer_class=_grpo_trainer_class,
)
"""GRPO: the env's score is the reward (:class:`EnvRollouts`, TRL's trainer with importance-sampling figures)."""


def claim_env_directory(
    out_dir: str | os.PathLike[str], env_id: str, policy_spec: str, settings: GRPOSettings, algorithm: EnvAlgorithm
) -> RunDirectory:
    """Make ``out_dir`` this run's directory or resume it; another run's directory (other algorithm, env, start
    policy, settings or ``algorithm.identity``), or one holding other files, is refused before anything is written
    (:func:`agentdistill.runs.claim_run_directory`). Called once, by the process that launches training: the
    ranks of a launch share one claim."""
    identity = {"env_id": env_id, "policy": policy_spec, **algorithm.identity, **settings.to_dict()}
    return claim_run_directory(out_dir, command=algorithm.command, identity=identity, may_change=RESUMABLE_SETTINGS)


def claim_rl_directory(
    out_dir: str | os.PathLike[str], env_id: str, policy_spec: str, settings: GRPOSettings
) -> RunDirectory:
    """:func:`claim_env_directory` for a GRPO run."""
    return claim_env_directory(out_dir, env_id, policy_spec, settings, GRPO)


def train_grpo(
    env_id: str,
    policy_spec: str,
    out_dir: str | os.PathLike[str],
    settings: GRPOSettings | None = None,
    *,
    progress: bool = True,
    claim_directory: bool = True,
) -> GRPOResult:
    """Train ``policy_spec`` (``hf:DIR``) with GRPO in ``env_id`` and save it to ``out_dir`` (package docstring).

    Resumes from the last ``out_dir/checkpoint-N`` of the same run; another run's directory is refused
    (:func:`claim_rl_directory`). Under ``accelerate launch`` every process calls this with
    ``claim_directory=False`` (the launcher holds the claim); every process plays its slice of the held-out
    evaluation (:func:`evaluate_on_ranks`), the main one writes the model, the result and the W&B run.
    """
    return train_in_env(
        env_id,
        policy_spec,
        out_dir,
        settings or GRPOSettings(),
        GRPO,
        progress=progress,
        claim_directory=claim_directory,
    )


def train_in_env(
    env_id: str,
    policy_spec: str,
    out_dir: str | os.PathLike[str],
    settings: GRPOSettings,
    algorithm: EnvAlgorithm,
    *,
    progress: bool = True,
    claim_directory: bool = True,
) -> GRPOResult:
    """Train ``policy_spec`` acting in ``env_id`` with ``algorithm`` into ``out_dir``, claimed first unless the
    launcher holds the claim (``claim_directory=False``); see :func:`train_grpo`."""
    claim = claim_env_directory(out_dir, env_id, policy_spec, settings, algorithm) if claim_directory else None
    try:
        return _train_in_env(env_id, policy_spec, out_dir, settings, algorithm, progress=progress)
    finally:
        if claim is not None:
            claim.release()


def _train_in_env(
    env_id: str,
    policy_spec: str,
    out_dir: str | os.PathLike[str],
    settings: GRPOSettings,
    algorithm: EnvAlgorithm,
    *,
    progress: bool,
) -> GRPOResult:
    started = time.perf_counter()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = load_start_model(policy_spec, settings)
    model, tokenizer = start.model, start.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = _grpo_config(settings, out)
    is_main = config.process_index == 0
    dataset = task_dataset(env_id, settings)
    needed = settings.prompts_per_step * config.world_size * config.steps_per_generation
    if len(dataset) < needed:
        raise ValueError(
            f"{len(dataset)} training task(s) cannot fill one generation batch of {needed} tasks "
            f"(prompts_per_step x processes x steps_per_generation); raise train_tasks or lower prompts_per_step"
        )
    if start.start == "adapter merged" and settings.beta:
        save_merged_start(start, out / MERGED_START_DIRNAME, config)
    if not config.deepspeed:
        # the held-out evaluation before training runs on the training device (a GPU), not where the weights were
        # loaded (the CPU); under DeepSpeed the trainer places the weights itself
        model.to(config.device)
    resume_from = last_complete_checkpoint(out)
    before = None
    if settings.eval_tasks and resume_from is None:
        before = evaluate_on_ranks(model, tokenizer, env_id, settings, out / EVAL_BEFORE_FILENAME, progress=progress)
    if is_main:
        settings.to_yaml(out / algorithm.settings_filename)

    rollouts = algorithm.make_rollouts(env_id, settings, out)
    recorder = RankRecorder()
    with _quiet_experimental_warning():
        trainer = algorithm.trainer_class()(
            model=model,
            reward_funcs=[environment_reward],
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=_new_adapter_config(settings, start),
            rollout_func=rollouts,
            callbacks=[recorder],
        )
    wandb_config = {
        algorithm.name: settings.to_dict(),
        "env_id": env_id,
        "policy": policy_spec,
        **algorithm.identity,
        "start": start.start,
    }
    name = settings.wandb_run_name or out.name
    with training_wandb_run(settings.wandb_project, out, wandb_config, name=name, enabled=is_main) as wandb_run:
        try:
            trainer.train(resume_from_checkpoint=resume_from)
        finally:
            rollouts.close()
        trainer.save_model(str(out))
        if is_main:
            tokenizer.save_pretrained(str(out))
        trainer.accelerator.wait_for_everyone()
        after, gain = None, None
        if settings.eval_tasks and sharded_weights(trainer):
            logger.warning(
                "the held-out evaluation after training is skipped: the trained weights are sharded over the "
                "processes (ZeRO-3 or FSDP); evaluate the saved model with `agentdistill eval --policy hf:%s`",
                out,
            )
        elif settings.eval_tasks:
            trained = trainer.accelerator.unwrap_model(trainer.model)
            after = evaluate_on_ranks(
                trained, tokenizer, env_id, settings, out / EVAL_AFTER_FILENAME, progress=progress
            )
            if is_main:
                before, gain = before_and_gain(out, settings, before)
        history = trainer.state.log_history
        result = algorithm.result_class(
            out_dir=str(out),
            start_model=start.source,
            start=start.start,
            env_id=env_id,
            global_step=int(trainer.state.global_step),
            before=before,
            after=after,
            train_rewards=tuple(float(entry["reward"]) for entry in history if "reward" in entry),
            world_size=int(recorder.seen.get("world_size", config.world_size)),
            resumed_from=resume_from,
            wandb_dir=str(out / "wandb") if wandb_run is not None else None,
            runtime_seconds=time.perf_counter() - started,
            reward_gain=gain,
            **algorithm.result_extras(history),
        )
        if wandb_run is not None:
            _summarize_in_wandb(wandb_run, result)
    if is_main:
        result.to_json(out / algorithm.result_filename)
    recorder.write(out / RANKS_DIRNAME, wrote_output=config.should_save)
    trainer.accelerator.wait_for_everyone()
    return result


def _new_adapter_config(settings: GRPOSettings, start: StartModel) -> Any:
    """The LoRA adapter RL puts on a plain start model, or ``None``: full fine-tuning, or a distilled adapter
    trained as it is (TRL then keeps a frozen copy of it, ``out_dir/ref``, as the KL reference)."""
    from peft import LoraConfig

    if not settings.lora or start.start != "model":
        return None
    return LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=_target_modules(settings.lora_target_modules),
        task_type="CAUSAL_LM",
    )


def _summarize_in_wandb(run: Any, result: GRPOResult) -> None:
    """The held-out figures and the gain, as W&B summary values."""
    for name, figures in (("before", result.before), ("after", result.after)):
        if figures is not None:
            for key, value in dataclasses.asdict(figures).items():
                run.summary[f"eval_{name}/{key}"] = value
    if result.reward_gain is not None:
        for key, value in dataclasses.asdict(result.reward_gain).items():
            run.summary[f"eval_gain/{key}"] = value


def _grpo_config(settings: GRPOSettings, out: Path) -> Any:
    """TRL's ``GRPOConfig`` for ``settings``; creating it also joins the process group under a launcher."""
    from trl import GRPOConfig

    use_vllm = settings.rollout_backend == "vllm"
    return GRPOConfig(
        output_dir=str(out),
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup_ratio,
        max_grad_norm=settings.max_grad_norm,
        weight_decay=settings.weight_decay,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.prompts_per_step * settings.group_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        num_generations=settings.group_size,
        num_iterations=settings.num_iterations,
        beta=settings.beta,
        epsilon=settings.epsilon,
        loss_type=settings.loss_type,
        scale_rewards=settings.scale_rewards,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_completion_length=settings.max_new_tokens,
        use_vllm=use_vllm,
        vllm_mode="colocate",
        vllm_gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
        vllm_importance_sampling_mode=settings.importance_sampling,
        vllm_importance_sampling_clip_max=settings.importance_sampling_clip_max,
        vllm_importance_sampling_clip_min=settings.importance_sampling_clip_min,
        **platform_arguments(
            GRPOConfig,
            bf16=settings.bf16,
            gradient_checkpointing=settings.gradient_checkpointing,
            wandb_project=settings.wandb_project,
            run_name=settings.wandb_run_name or out.name,
        ),
        seed=settings.seed,
        logging_steps=settings.logging_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        remove_unused_columns=False,
        log_completions=False,
    )


def _target_modules(value: str | tuple[str, ...]) -> str | list[str]:
    return value if isinstance(value, str) else list(value)


class _quiet_experimental_warning:
    """TRL warns that ``rollout_func`` is experimental on every trainer; said once in our docs instead."""

    def __enter__(self) -> None:
        self.saved = os.environ.get("TRL_EXPERIMENTAL_SILENCE")
        os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"

    def __exit__(self, *exc: object) -> None:
        if self.saved is None:
            os.environ.pop("TRL_EXPERIMENTAL_SILENCE", None)
        else:
            os.environ["TRL_EXPERIMENTAL_SILENCE"] = self.saved
