"""Direct preference optimisation (DPO, IPO) of a causal LM on preference pairs.

    lightkit fit --config configs/dpo_headlines.yaml

Each batch (`PolicyPreferenceDataModule`) holds B pairs as 2B rows, chosen first. One policy
forward gives the log-probability of each response given its prompt (summed over its tokens,
from the response positions' hidden states only: no (B, T, V) logits); the reference's come from
the same weights with the LoRA adapters disabled, or from a frozen copy without LoRA. The loss is
`lightkit.objectives.rlhf.dpo_loss` (sigmoid DPO, or IPO on per-token means). With `rpo_alpha`,
the chosen responses' negative log-likelihood (a mean over their tokens) is added, weighted: RPO
(Pang et al. 2024, "Iterative Reasoning Preference Optimization"; TRL's `rpo_alpha`, the same
token mean). Sigmoid DPO can raise the margin by lowering both sides' likelihood; the NLL term
holds the chosen side up, so the policy moves toward its best answers, not only away from its worst.

The reference never changes, so its log-probs are cached per pair (keyed by the pair's token ids)
the first time a pair is seen, and saved in checkpoints: every later epoch, and every validation,
runs the reference zero times. TRL's `precompute_ref_log_probs` makes an extra pass over the whole
dataset before training instead; caching on first sight costs no pass for runs shorter than an
epoch.

Logged per stage: loss, `accuracy` (the share of pairs whose chosen response gets the larger
implicit reward), `margin` (the mean reward difference), the implicit rewards and the log-probs
of both sides.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy
from transformers import PreTrainedModel

from lightkit.io.errors import InputError
from lightkit.objectives.rlhf import dpo_loss
from lightkit.tasks.policy import PolicyTask
from lightkit.training.task import StepOutput


class DPOTask(PolicyTask):
    """DPO / IPO on preference pairs (module docstring).

    Args:
        beta: strength of the pull toward the reference (higher: stay closer).
        loss_type: `sigmoid` (DPO) or `ipo`.
        label_smoothing: the share of pairs assumed mislabelled (conservative DPO); sigmoid only.
        rpo_alpha: the weight of the chosen responses' NLL added to the loss (RPO; the paper
            uses 1.0); None or 0: plain DPO.
        reference_copy: without LoRA the reference must be a full frozen copy of the model;
            that doubles the model's memory, so it is made only when this is true.
        cache_reference: keep each pair's reference log-probs after their first computation.
        **kwargs: pretrained / model_config, peft, learning rate, ...; see PolicyTask.
    """

    primary_metric = "accuracy"
    # Its step scores pairs, not a forward the parity gate can compare; the policy is a plain
    # causal LM in its hf_model folder, exported like any other.
    export_kind = None
    serving = None

    def __init__(
        self,
        beta: float = 0.1,
        loss_type: Literal["sigmoid", "ipo"] = "sigmoid",
        label_smoothing: float = 0.0,
        rpo_alpha: float | None = None,
        reference_copy: bool = False,
        cache_reference: bool = True,
        **kwargs: Any,
    ) -> None:
        if beta <= 0:
            raise InputError(f"DPOTask: beta must be > 0, got {beta}")
        if rpo_alpha is not None and rpo_alpha < 0:
            raise InputError(f"DPOTask: rpo_alpha must be >= 0 or null, got {rpo_alpha}")
        super().__init__(**kwargs)
        self.reference_cache: dict[int, tuple[float, float]] = {}

    def check_reference_copy(self, policy: PreTrainedModel) -> None:
        if self.hparams.reference_copy:
            return
        size = sum(p.numel() * p.element_size() for p in policy.parameters()) / 2**20
        raise InputError(
            f"DPOTask without LoRA needs a frozen reference copy of the model: {size:.0f} MiB more memory "
            "(weights only). Set model.init_args.reference_copy: true to make it, or train LoRA adapters "
            "(peft: {}), whose reference is the same weights with the adapters off"
        )

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"accuracy": BinaryAccuracy()})

    def sequence_logps(self, batch: dict[str, Any], reference: bool = False) -> torch.Tensor:
        """Each row's response log-prob (2B,): summed over its tokens, or their mean for IPO."""
        return self.reduce(*self.token_logps(batch, reference))

    def token_logps(self, batch: dict[str, Any], reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token response log-probs (2B, T-1), 0 off the response, and the response mask."""
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        return self.logprobs(inputs, batch["labels"], reference=reference), batch["labels"][:, 1:] != -100

    def reduce(self, per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        total = per_token.sum(1)
        if self.hparams.loss_type == "ipo":
            total = total / mask.sum(1)
        return total

    @torch.no_grad()
    def reference_logps(self, batch: dict[str, Any]) -> torch.Tensor:
        """The reference's (2B,) log-probs, from the cache where every pair of the batch is in it."""
        keys = batch["pair_key"].tolist()
        cache = self.reference_cache
        if self.hparams.cache_reference and all(k in cache for k in keys):
            chosen, rejected = zip(*(cache[k] for k in keys))
            return torch.tensor([*chosen, *rejected], device=self.device)
        logps = self.sequence_logps(batch, reference=True).float()
        if self.hparams.cache_reference:
            chosen, rejected = logps.chunk(2)
            cache.update({k: (float(c), float(r)) for k, c, r in zip(keys, chosen, rejected)})
        return logps

    def step(self, batch: dict[str, Any]) -> StepOutput:
        h = self.hparams
        ref_chosen, ref_rejected = self.reference_logps(batch).chunk(2)
        per_token, mask = self.token_logps(batch)
        chosen, rejected = self.reduce(per_token, mask).float().chunk(2)
        losses, chosen_reward, rejected_reward = dpo_loss(
            chosen, rejected, ref_chosen, ref_rejected, h.beta, h.loss_type, h.label_smoothing
        )
        loss = losses.mean()
        margin = chosen_reward - rejected_reward
        logs = {
            "margin": margin.mean(),
            "reward_chosen": chosen_reward.mean(),
            "reward_rejected": rejected_reward.mean(),
            "logp_chosen": chosen.detach().mean(),
            "logp_rejected": rejected.detach().mean(),
        }
        if h.rpo_alpha:
            pairs = chosen.size(0)  # the chosen rows come first
            nll = -per_token[:pairs].float().sum() / mask[:pairs].sum()
            loss = loss + h.rpo_alpha * nll
            logs["nll_chosen"] = nll.detach()
        # BinaryAccuracy thresholds sigmoid(margin) at 0.5: pairs whose chosen side wins.
        ones = torch.ones_like(margin, dtype=torch.long)
        return StepOutput(loss, torch.sigmoid(margin), ones, logs=logs)

    def batch_size(self, batch: dict[str, Any]) -> int:
        return batch["pair_key"].size(0)

    def wants_metrics(self, stage: str | None = None) -> bool:
        return True  # the accuracy costs nothing beyond the step's own numbers

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        keys = list(self.reference_cache)
        checkpoint["dpo_reference_cache"] = {
            "keys": torch.tensor(keys, dtype=torch.long),
            "logps": torch.tensor([self.reference_cache[k] for k in keys], dtype=torch.float64).reshape(-1, 2),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("dpo_reference_cache")
        if saved is not None:
            self.reference_cache = {
                int(k): (float(c), float(r)) for k, (c, r) in zip(saved["keys"], saved["logps"].tolist())
            }
