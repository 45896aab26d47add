"""LastCheckpoint: `last.ckpt` every N optimizer steps and at every epoch end, for `--ckpt_path last`.

Lightning's ModelCheckpoint saves either every N steps or at epoch ends, never both, so with
steps alone the final weights of a run may be N-1 steps older than the model that finished.
This subclass keeps the step trigger (what a crash costs is at most N steps) and adds one save
at the end of each epoch (after validation, so early stopping and the best score are in it).
Files are written atomically by the CLI's AtomicCheckpointIO; together with the DataLoader and
random state that lightkit stores, a run killed at any point resumes exactly.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from lightkit.io.errors import InputError


class LastCheckpoint(ModelCheckpoint):
    """Keep `<dirpath>/last.ckpt` current: every `every_n_train_steps` steps and at each epoch end.

    Args:
        every_n_train_steps: optimizer steps between saves (the most work a crash can cost).
        dirpath: checkpoint folder; default `<default_root_dir>/checkpoints`, like ModelCheckpoint.
    """

    def __init__(self, every_n_train_steps: int = 200, dirpath: str | None = None) -> None:
        if every_n_train_steps < 1:
            raise InputError(f"LastCheckpoint: every_n_train_steps must be >= 1, got {every_n_train_steps}")
        # No version counter: a resumed run overwrites last.ckpt instead of adding last-v1.ckpt.
        super().__init__(dirpath=dirpath, save_last=True, save_top_k=0, every_n_train_steps=every_n_train_steps,
                         enable_version_counter=False)  # fmt: skip
        self.save_every = every_n_train_steps

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # With manual optimization (PPO, GRPO) Lightning warns on every step save that the weights
        # are those after the optimizer step and suggests keeping pre-step copies. After the step
        # is what resuming needs: the checkpoint's global_step counts that step, and the RL
        # resume tests check that a resumed run ends on the uninterrupted run's weights. Set once
        # per fit rather than around each save, since every change of the filters makes Python
        # forget which warnings it has already shown.
        if not pl_module.automatic_optimization:
            warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if trainer.fast_dev_run or trainer.sanity_checking or self.dirpath is None:
            return
        if trainer.global_step % self.save_every == 0:
            return  # the step trigger saved this very step already
        # Through the Trainer's public save (the strategy's CheckpointIO, so still atomic), named
        # as ModelCheckpoint names its last checkpoint, so `--ckpt_path last` finds it.
        path = str(Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}")
        trainer.save_checkpoint(path)
        self.last_model_path = path
