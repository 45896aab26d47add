"""Running means of the training values over the epoch, kept on the device and checkpointed.

lightkit does not take training epoch means from `self.log(on_step=True, on_epoch=True)`:
Lightning does not save its result collection in checkpoints, so after a run resumes mid-epoch
that epoch's mean would cover only the batches seen since the resume, and the exact-resume
promise would not hold for `train_loss_epoch` (tests/test_resume.py kills a run in its last epoch
to check).

So each step adds its values into sums on the device (one in-place add per value, no host sync);
the sums are checkpointed by the ExactResume callback and logged at the epoch's end (see
`BaseTask.log_train`).

Deliberately not torchmetrics' `MeanMetric`: its default NaN check reads `isnan(x).any()` on the
host every update (a sync per step), its states are modules that must exist before a checkpoint
loads them (PPO's value names are only known once it logs), and persistent metric states would
make older checkpoints fail Lightning's strict load.
"""

from __future__ import annotations

from typing import Any

import torch


class EpochMeans:
    """Batch-size-weighted means of named scalar tensors since the last `reset()`."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.weights: dict[str, int] = {}

    def add(self, values: dict[str, torch.Tensor], weight: int) -> None:
        for name, value in values.items():
            value = value.detach().to(torch.float32)  # Lightning logs in float32 too
            total = self.sums.get(name)
            if total is None:
                self.sums[name] = value * weight
            else:
                if total.device != value.device:  # restored from a checkpoint, which holds CPU tensors
                    total = self.sums[name] = total.to(value.device)
                total.add_(value, alpha=weight)
            self.weights[name] = self.weights.get(name, 0) + weight

    def means(self) -> dict[str, torch.Tensor]:
        return {name: total / self.weights[name] for name, total in self.sums.items()}

    def reset(self) -> None:
        self.sums.clear()
        self.weights.clear()

    def state_dict(self) -> dict[str, Any]:
        return {name: {"sum": total.detach().cpu(), "weight": self.weights[name]} for name, total in self.sums.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = {name: s["sum"].clone() for name, s in state.items()}
        self.weights = {name: int(s["weight"]) for name, s in state.items()}
