"""Test-only callbacks, named by class path (`probes.SigkillAt`) in configs of `lightkit` subprocesses."""

from __future__ import annotations

import json
import os
import signal

import lightning as L
from lightning.pytorch.callbacks import Callback


class SigkillAt(Callback):
    """SIGKILLs its own process right after optimizer step `step`, or as epoch `epoch` starts: no
    handler, no cleanup, as the OOM killer or a pre-empted node would."""

    def __init__(self, step: int | None = None, epoch: int | None = None) -> None:
        self.step, self.epoch = step, epoch

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class MetricsAtEnd(Callback):
    """Writes the trainer's final logged metrics to `path` as JSON (from global rank 0)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        with open(self.path, "w") as f:
            json.dump({k: float(v) for k, v in trainer.callback_metrics.items()}, f, sort_keys=True)


class CompileProbe(Callback):
    """Writes whether the task's model is torch-compiled when training starts (`compile: true`)
    and the sequence lengths of the training batches, when training ends."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.compiled, self.lengths = False, set()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.compiled = getattr(pl_module.model, "_compiled_call_impl", None) is not None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, batch_idx: int
    ) -> None:
        self.lengths.add(batch["input_ids"].size(1))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with open(self.path, "w") as f:
            json.dump({"compiled": self.compiled, "lengths": sorted(self.lengths)}, f)


class NoSyncInStep(Callback):
    """Turns CUDA's sync debug mode to `error` from each training batch's start (after Lightning
    moved it to the GPU) to the optimizer step, so any host sync in the forward, the loss logging,
    the non-finite guard's `watch` or the backward raises; counts the steps it watched."""

    def __init__(self) -> None:
        self.watched = 0

    def on_train_batch_start(self, *args: object) -> None:
        import torch

        torch.cuda.set_sync_debug_mode("error")

    def on_before_optimizer_step(self, *args: object) -> None:
        import torch

        torch.cuda.set_sync_debug_mode("default")  # the guard's deliberate wait comes next
        self.watched += 1


class ScriptedScore(Callback):
    """Logs `val_scripted` = scores[epoch] at each validation, so early stopping sees a known
    curve (best at its maximum, worse after); and saves the weights training ended with to `path`
    (on_train_end runs before any on_fit_end restores others)."""

    def __init__(self, scores: list[float], path: str) -> None:
        self.scores, self.path = scores, path

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            pl_module.log("val_scripted", self.scores[min(trainer.current_epoch, len(self.scores) - 1)])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import torch

        state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        torch.save({"epochs_run": trainer.current_epoch, "state_dict": state}, self.path)


class LRAtEachUpdate(Callback):
    """Writes the learning rate each optimizer update ran with, and the step count LRWarmup
    planned, to `path` as JSON."""

    def __init__(self, path: str) -> None:
        self.path, self.lrs = path, []

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: object) -> None:
        self.lrs.append(optimizer.param_groups[0]["lr"])  # type: ignore[attr-defined]

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        warmup = next(c for c in trainer.callbacks if type(c).__name__ == "LRWarmup")
        with open(self.path, "w") as f:
            json.dump({"lrs": self.lrs, "total_steps": warmup.total_steps, "warmup": warmup.warmup}, f)
