"""LRWarmup: linear warmup, then linear, cosine or constant decay, set every optimizer step.

A callback rather than a scheduler in `configure_optimizers`, so that every task gets it from
YAML alone, and the total number of steps comes from `trainer.estimated_stepping_batches`
(epochs, accumulation, devices and limits already accounted for): no step count in the config.
The multiplier is a pure function of the global step, and each param group's peak LR is kept as
`initial_lr` inside the optimizer state, so a resumed run continues on the same curve.

Steps are optimizer updates. A task that updates several times per batch by hand (PPO: epochs x
minibatches over each rollout batch) says how many in `BaseTask.updates_per_batch`, the total
counts them, and the LR is set before every update, not once per batch.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import Callback

from lightkit.io.errors import InputError

Decay = Literal["linear", "cosine", "constant"]


def lr_multiplier(
    step: int, total_steps: int, warmup_steps: int, decay: Decay = "linear", min_ratio: float = 0.0
) -> float:
    """Fraction of the peak learning rate to use at optimizer step `step` (0-based).

    Warmup rises linearly from 1/(warmup_steps+1)... to 1 at `warmup_steps`, then decays to
    `min_ratio` at `total_steps` (linear or half-cosine), or stays at 1 (constant).

    Not transformers' `get_*_schedule_with_warmup`: their warmup starts at 0 (the first step
    learns nothing) and their linear decay has no floor; the curve here is theirs otherwise.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if decay == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    shape = 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * shape


class LRWarmup(Callback):
    """Learning-rate warmup and decay for every optimizer of the task; logs `lr`.

    Args:
        warmup_steps: optimizer steps of linear warmup. Mutually exclusive with warmup_ratio.
        warmup_ratio: warmup as a fraction of `trainer.estimated_stepping_batches`.
        decay: after warmup: `linear` or `cosine` down to `min_lr_ratio` at the last step, or
            `constant`.
        min_lr_ratio: final learning rate as a fraction of the peak.
    """

    def __init__(
        self,
        warmup_steps: int | None = None,
        warmup_ratio: float | None = None,
        decay: Decay = "linear",
        min_lr_ratio: float = 0.0,
    ) -> None:
        # A warmup callback with no length is a config slip, not a request for none: say so
        # (warmup_steps: 0 asks for decay only).
        if warmup_steps is None and warmup_ratio is None:
            raise InputError("LRWarmup: give warmup_steps or warmup_ratio (warmup_steps: 0 for decay only)")
        if warmup_steps is not None and warmup_ratio is not None:
            raise InputError("LRWarmup: set warmup_steps or warmup_ratio, not both")
        if warmup_steps is not None and warmup_steps < 0:
            raise InputError(f"LRWarmup: warmup_steps must be >= 0, got {warmup_steps}")
        if warmup_ratio is not None and not 0.0 <= warmup_ratio < 1.0:
            raise InputError(f"LRWarmup: warmup_ratio must be in [0, 1), got {warmup_ratio}")
        self.warmup_steps = warmup_steps
        self.warmup_ratio = warmup_ratio
        self.decay = decay
        self.min_lr_ratio = min_lr_ratio
        self.total_steps = 0
        self.warmup = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        per_batch = pl_module.updates_per_batch() if hasattr(pl_module, "updates_per_batch") else 1
        self.total_steps = int(trainer.estimated_stepping_batches) * per_batch
        if self.warmup_steps is not None:
            self.warmup = self.warmup_steps
        else:
            self.warmup = int(round(self.warmup_ratio * self.total_steps))
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])  # restored with the optimizer on resume

    def _apply(self, trainer: L.Trainer) -> float:
        factor = lr_multiplier(trainer.global_step, self.total_steps, self.warmup, self.decay, self.min_lr_ratio)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
        return trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        pl_module.log("lr", self._apply(trainer), on_step=True, on_epoch=False, prog_bar=False)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        self._apply(trainer)  # global_step counts the updates made so far: this one's index
