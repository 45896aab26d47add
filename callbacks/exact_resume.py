"""ExactResume: what Lightning leaves out of a checkpoint for a resumed run to continue exactly.

Lightning saves weights, optimizer, loop counters, callbacks and (for a `state_dict` loader such as
torchdata's StatefulDataLoader, which BaseDataModule uses) the position inside the epoch. Two
things are missing for `--ckpt_path last` after a SIGKILL to continue as if nothing happened:

- the global random generators: dropout and masking draw from them, so a resumed run would draw
  other masks (`lightkit.training.checkpointing.rng_state`);
- the task's running training means (`BaseTask.epoch_means`): Lightning does not checkpoint its
  own epoch aggregation, so a mean over an epoch resumed halfway would cover half of it.

The `lightkit` command always adds this callback.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from lightkit.training.checkpointing import rng_state, set_rng_state


class ExactResume(Callback):
    """Checkpoint the random generators and the task's epoch means; put them back on resume."""

    def __init__(self) -> None:
        self.task: L.LightningModule | None = None
        self.pending_rng: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.task = pl_module

    def state_dict(self) -> dict[str, Any]:
        means = getattr(self.task, "epoch_means", None)
        return {"rng": rng_state(), "epoch_means": means.state_dict() if means is not None else {}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callbacks after `setup`, so the task is known here.
        self.pending_rng = state_dict.get("rng")
        means = getattr(self.task, "epoch_means", None)
        if means is not None:
            means.load_state_dict(state_dict.get("epoch_means", {}))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Put back here, not on load: Lightning rebuilds the loader's iterator after loading, and
        # that draws from the generators. Nothing draws between this hook and the first batch
        # (on_train_epoch_start is not called again when resuming mid-epoch).
        if self.pending_rng is not None:
            set_rng_state(self.pending_rng)
            self.pending_rng = None
