"""Token-level language-model metrics: perplexity and accuracy over the labelled tokens of an epoch.

Perplexity is exp of the token-weighted mean NLL over the whole epoch (not a mean of per-batch
perplexities), from two summed states, so it is exact under DDP. It takes the loss the model
already computed instead of re-running log-softmax over (B, T, V) logits.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class TokenMetrics(Metric):
    """`update(preds, target, nll_sum)`: preds and target are aligned (B, T) ids, -100 = unlabelled."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:  # noqa: ANN003
        super().__init__(**kwargs)
        self.add_state("nll", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, nll_sum: torch.Tensor) -> None:
        labelled = target != -100
        self.correct += (preds[labelled] == target[labelled]).sum()
        self.count += labelled.sum()
        self.nll += nll_sum.detach().double()

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp(min=1)
        mean_nll = self.nll / n
        return {"perplexity": torch.exp(mean_nll).float(), "accuracy": (self.correct / n).float()}
