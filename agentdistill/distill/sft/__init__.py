"""Supervised fine-tuning of a student on teacher trajectories, with the loss on the assistant turns only.

The student learns to *act*: only the tokens the agent itself wrote (its thoughts and code, each closed by the
end-of-turn token) are trained. System prompt, task and observations are context, never targets: a small model
that spends capacity predicting tool outputs learns to hallucinate them.

How the assistant-only loss is obtained (see :func:`assistant_token_mask`, which training uses too):

* templates with ``{% generation %}`` markers (the scratch students of :mod:`~agentdistill.distill.students`)
  go through TRL's own ``assistant_only_loss=True``: TRL renders each conversation with
  ``return_assistant_tokens_mask=True`` and masks everything outside the markers. Our ChatML template puts
  each assistant message's content *and* its ``<|im_end|>`` inside the markers, so the student learns to stop.
* templates without markers (Qwen2.5 from the hub, most others) are masked here, before TRL sees the data:
  each assistant turn's character span is found by rendering the conversation up to that turn with and without
  the turn (``add_generation_prompt=True`` gives where the turn starts), the span is cut after the turn's
  end-of-turn token (layout whitespace after it is not a target), and the tokens overlapping the span get
  mask 1 (offsets of the fast tokenizer). The dataset goes to TRL pre-tokenized as ``input_ids`` +
  ``assistant_masks``, which TRL turns into labels, then truncates like any other. This needs a template that
  renders earlier turns the same whatever follows (ChatML, Llama 3, Qwen2.5 do); for one that does not
  (Qwen3's, which drops old reasoning) set ``chat_template_path`` to a template with generation markers, e.g.
  TRL's ``trl/chat_templates/qwen3_training.jinja``. TRL's automatic swap to its training templates is not
  used for Qwen2.5, because its template puts the newlines around the turn into the loss as well.

Output directory (``out_dir``), which :class:`~agentdistill.policies.hf.HFPolicy` loads directly:

* full fine-tuning: ``out_dir`` is the model (``config.json``, weights, generation config, tokenizer).
* LoRA: ``out_dir`` is the adapter (``adapter_config.json`` whose ``base_model_name_or_path`` records the base,
  ``adapter_model.safetensors``) plus the tokenizer. ``HFPolicy(out_dir)`` works (transformers loads the
  recorded base and attaches the adapter), and so does ``HFPolicy(base, adapter=out_dir)``. With
  ``merge=True`` (or ``merge_lora: true``) ``out_dir/merged`` also holds the merged full model.
* ``out_dir/base``: for ``scratch:*`` students, the initial model and tokenizer. It is built once (by the main
  process) and reused by every other process and by resumed runs, so all of them share one tokenizer; LoRA
  adapters of scratch students record this directory (an absolute path) as their base.
* ``out_dir/agentdistill-run.json``: the run's identity (training rows' digest, student, settings), written by
  :func:`~agentdistill.distill.sft.launch.run_sft` and ``launch_sft`` before anything else. They refuse a directory
  of another run or of other files; :func:`train_sft` itself, which every rank of a launch runs, does not check.
* ``out_dir/checkpoint-N``: trainer checkpoints; a rerun with the same ``out_dir`` resumes from the last one.
* ``out_dir/sft_settings.yaml``, ``out_dir/sft_result.json``: what ran and what came out.
* ``out_dir/ranks/rank-K.json``: per process, the world size and backend it saw and the steps it ran.
* ``out_dir/wandb``: the W&B run (offline without credentials; see :mod:`agentdistill.tracking`).

Run one process with :func:`train_sft`, several with :func:`agentdistill.distill.sft.launch.launch_sft`, which runs
this module's entry point in each::

    python -m agentdistill.distill.sft --dataset DIR --student scratch:tiny --out OUT \\
        --config configs/distill/sft_cpu_tiny.yaml
"""

from __future__ import annotations

from types import MappingProxyType

from agentdistill.distill import lazy_exports

_EXPORTS = MappingProxyType(
    {
        "FilterRules": "trajectories",
        "SFTResult": "settings",
        "SFTSettings": "settings",
        "import_paper_trajectories": "paper_import",
        "launch_sft": "launch",
        "load_conversations": "conversations",
        "load_paper_trajectories": "paper_import",
        "prepare_sft": "train",
        "run_sft": "launch",
        "train_sft": "train",
        "trajectories_to_dataset": "trajectories",
    }
)
"""The package's entry points and the module each lives in (imported on first use, :func:`lazy_exports`)."""

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
