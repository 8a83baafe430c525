"""An ``SFTTrainer`` whose loss comes from the full logits rather than TRL's fused LM head.

TRL 1.16's ``SFTTrainer`` patches the model with a fused, tiled LM head (``trl.kernels.chunked_logprob``) so that
the ``(batch, length, vocab)`` logits are never materialised: the right call for a 150k-token vocabulary on a GPU.
For a small vocabulary it is the wrong one. Profiled on the quickstart's scratch student (vocabulary 1,025, batch
32 x ~150 tokens, 2 CPU cores), the tiled head's forward and backward took 45% of each optimizer step, while the
full logits of a batch are only ~24 MB. :class:`FullLogitsSFTTrainer` computes the same loss (next-token negative
log-likelihood over the labelled positions, divided by the batch's label count as TRL does) from one ordinary
forward, and logs the same ``entropy`` and ``mean_token_accuracy`` metrics. Chosen with
``SFTSettings.lm_head = "full"``; the default stays TRL's fused head.

TRL's own docs point here: "Subclass ``SFTTrainer`` and override ``compute_loss``".
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional
from trl import SFTTrainer

IGNORE_INDEX = -100


def next_token_loss_and_metrics(
    logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, entropy_sum, correct, labelled)`` for next-token prediction of ``labels`` from ``logits``.

    Position ``t`` predicts label ``t + 1``; positions labelled ``-100`` count nowhere. The loss is the summed
    negative log-likelihood over ``num_items_in_batch`` (the label count of the whole accumulated batch, which
    ``Trainer`` passes) or, without it, over this micro-batch's labelled positions. Entropy and accuracy are
    sums, detached, for the caller to gather and average.
    """
    # One log-softmax serves the loss (what cross_entropy would compute again inside) and the metrics.
    log_probs = logits[:, :-1, :].float().log_softmax(dim=-1)
    targets = labels[:, 1:]
    labelled = targets != IGNORE_INDEX
    nll_sum = functional.nll_loss(
        log_probs.reshape(-1, log_probs.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    num_labelled = labelled.sum()
    count = num_labelled if num_items_in_batch is None else num_items_in_batch
    loss = nll_sum / torch.as_tensor(count, device=nll_sum.device).clamp(min=1)
    with torch.no_grad():
        entropy = -(log_probs.exp() * log_probs).sum(dim=-1)
        entropy_sum = (entropy * labelled).sum()
        correct = ((log_probs.argmax(dim=-1) == targets) & labelled).sum()
    return loss, entropy_sum, correct, num_labelled


class FullLogitsSFTTrainer(SFTTrainer):
    """TRL's ``SFTTrainer`` with the loss computed from materialised logits (see the module docstring)."""

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> Any:
        if self.aux_loss_enabled:
            raise ValueError(
                "lm_head='full' does not add a mixture-of-experts router loss; use lm_head='fused' for MoE students"
            )
        if "shift_labels" in inputs or "attention_mask" not in inputs:
            raise ValueError(
                "lm_head='full' needs padded batches with an attention mask (no packing, no context parallelism); "
                "use lm_head='fused'"
            )
        mode = "train" if self.model.training else "eval"
        model_inputs = {key: value for key, value in inputs.items() if key != "labels"}
        model_inputs["use_cache"] = False
        outputs = model(**model_inputs)
        loss, entropy_sum, correct, labelled = next_token_loss_and_metrics(
            outputs.logits, inputs["labels"], num_items_in_batch
        )
        # As in TRL and `Trainer.compute_loss`: `num_items_in_batch` counts every rank's tokens, and DDP averages.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())

        num_valid = self.accelerator.gather_for_metrics(labelled).sum()
        entropy_total = self.accelerator.gather_for_metrics(entropy_sum).sum()
        num_correct = self.accelerator.gather_for_metrics(correct).sum()
        valid = num_valid.item()
        self._metrics[mode]["entropy"].append((entropy_total / num_valid).item() if valid > 0 else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append((num_correct / num_valid).item() if valid > 0 else 0.0)
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (loss, outputs) if return_outputs else loss
