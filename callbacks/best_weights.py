"""RestoreBestWeights: end fit with the best checkpoint's weights, not the last epoch's.

Lightning's EarlyStopping stops training but leaves the last weights in the model, so whatever
runs after fit in the same process (the Hugging Face save in BaseTask.on_fit_end, an export, a
test without --ckpt_path) would see a model `patience` epochs past its best. This callback loads
the state dict of the best checkpoint back at the end of fit: that of the first ModelCheckpoint
that monitors a metric (so a LastCheckpoint listed before it is passed over). Callbacks'
`on_fit_end` runs before the LightningModule's, so the saved Hugging Face model is the best one.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn


class RestoreBestWeights(Callback):
    """Load the best checkpoint's weights into the model when fit ends (needs a ModelCheckpoint with `monitor`)."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        checkpoint = next((c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)), None)
        path = getattr(checkpoint, "best_model_path", "") if checkpoint else ""
        if not path or not Path(path).is_file():
            rank_zero_warn("RestoreBestWeights: no best checkpoint was saved; keeping the last weights")
            return
        # weights_only: a checkpoint is data, never code to run.
        state = torch.load(path, map_location=pl_module.device, weights_only=True)
        pl_module.load_state_dict(state["state_dict"], strict=pl_module.strict_loading)  # LoRA: adapters only
        rank_zero_info(
            f"RestoreBestWeights: restored {path} ({checkpoint.monitor}={float(checkpoint.best_model_score):.4f})"
        )
