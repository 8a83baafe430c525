"""GRPO on the rollout loop: a student acts in an env, the env's score is the reward, TRL does the update.

TRL's ``GRPOTrainer`` owns the optimisation (group-relative advantages, clipping, KL to the reference, LoRA,
accelerate); agentdistill owns the acting. The bridge is TRL's ``rollout_func`` hook, implemented by
:class:`EnvRollouts`:

* The training dataset holds one prompt per task, ``"[task 17] <question>"``; TRL's sampler repeats each
  prompt G times (``group_size``) in a row before the hook sees them, so the hook finds the groups by
  reading the task index back.
* Each call runs every group through :func:`~agentdistill.rollouts.loop.run_rollouts` (G samples per task,
  many envs at once) with ``token_trace=True``: every turn is generated from the exact ids of the episode so
  far, and the episode comes back as the first prompt's ids plus one long completion (all turns) with
  ``env_mask`` 1 exactly on the tokens the model sampled. TRL multiplies its loss mask by ``env_mask``, so
  observations, the template's turn markers and anything else the env wrote never carry gradient, and the
  loss sees the sampled ids themselves, never a re-tokenised rendering.
* The reward is the env's score (``info["score"]``) minus ``invalid_action_penalty`` times the episode's
  fraction of invalid actions (parse errors or exceptions). Success rate, invalid-action rate and steps per
  episode are logged next to TRL's reward, KL and completion lengths (to W&B with ``wandb_project``).

What ``rollout_func`` cannot express, and how it is handled: a completion is one sequence per prompt, so a
multi-turn episode becomes one completion whose env tokens are masked (TRL's ``env_mask`` exists for this);
TRL counts a completion that does not end with an end-of-sequence token as "clipped", so an episode whose
last turn ended normally gets an end-of-sequence token appended as an env token (mask 0, never trained).
With ``rollout_backend: vllm`` TRL corrects for vLLM's probabilities at token level by default
(``importance_sampling``), and the share of sampled tokens that correction drops is logged
(:mod:`agentdistill.distill.grpo.importance`).

Start model: ``hf:DIR`` (a full model), or a LoRA student as ``agentdistill distill`` wrote it (``hf:DIR`` of an
adapter, or ``hf:BASE@ADAPTER``): with ``lora: true`` its adapter is trained further, otherwise it is merged into
its base and the whole model trained (:func:`load_start_model`).

Output directory, claimed for one run before anything is written (:func:`claim_rl_directory`; a rerun of the same
run resumes, any other is refused): ``out_dir`` is the trained student (a full model, or with ``lora: true`` an
adapter over the starting model; both load as ``hf:OUT``), ``out_dir/checkpoint-N`` (a rerun resumes from the last),
``out_dir/ref`` (a continued adapter as it started: TRL's KL reference), ``out_dir/start_merged`` (a merged
student as it started: the KL reference of full fine-tuning),
``out_dir/rollouts/`` (each generation's episodes, JSON Lines, with ``keep_rollouts``),
``out_dir/eval_before.jsonl`` / ``eval_after.jsonl`` (episodes on held-out tasks: greedy, or sampled as
``eval_temperature`` and ``eval_samples`` say; played by all processes, a slice each, :func:`evaluate_on_ranks`),
``out_dir/rl_result.json`` (their figures and the gain paired by
task, :class:`~agentdistill.rollouts.figures.PairedGain`) and ``out_dir/wandb``.

Run one process with :func:`train_grpo`, several with :func:`launch_grpo` (``accelerate launch``)::

    python -m agentdistill.distill.grpo --env AgentMath-Synthetic-v0 --policy hf:students/tiny --out rl/tiny \\
        --config configs/rl/grpo_cpu_tiny.yaml
"""

from __future__ import annotations

from types import MappingProxyType

from agentdistill.distill import lazy_exports

_EXPORTS = MappingProxyType(
    {
        "GRPOResult": "settings",
        "GRPOSettings": "settings",
        "evaluate_student": "evaluation",
        "launch_grpo": "launch",
        "load_start_model": "start",
        "train_grpo": "train",
    }
)
"""The package's entry points and the module each lives in (imported on first use, :func:`lazy_exports`)."""

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
