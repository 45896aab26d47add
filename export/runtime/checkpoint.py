"""What an artifact is made from: a `lightkit fit` checkpoint's weights loaded into its task, for
export and for the PyTorch side of a benchmark."""

from __future__ import annotations

from pathlib import Path

import torch

from lightkit.io.errors import InputError
from lightkit.training.fake_quant import ATTR as QAT_ATTR
from lightkit.training.fake_quant import prepare_qat
from lightkit.training.task import BaseTask


def load_weights(task: BaseTask, ckpt_path: str) -> bool:
    """Load a `lightkit fit` checkpoint's weights into `task`; returns whether it is QAT-trained."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path: '{ckpt_path}' does not exist")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")["state_dict"]
    except Exception as e:  # noqa: BLE001
        raise InputError(f"ckpt_path: {path} is not a readable lightkit checkpoint ({type(e).__name__}: {e})") from None
    qat = any(f".{QAT_ATTR}." in k for k in state)
    if qat:  # the quantisers' scales are in the checkpoint: attach them, then load
        prepare_qat(task.model)
    try:
        task.load_trained_state(state, "ckpt_path")
    except RuntimeError as e:
        raise InputError(
            f"ckpt_path: {path} does not fit the task of the config, a {type(task).__name__} ({str(e).splitlines()[0]})"
        ) from None
    task.model = task.plain_model(keep_adapters=False)  # LoRA merged: the graph is plain transformers
    task.eval()
    return qat
