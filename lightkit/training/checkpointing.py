"""Checkpoints a crash cannot spoil, and the random state that makes a resumed run exact.

- Atomic files. Lightning's `_atomic_save` writes through an fsspec transaction, which for a
  local path stages the bytes in the system temp folder and `shutil.move`s them over: across
  file systems that is a copy onto the final name, so a kill mid-copy leaves a truncated
  `last.ckpt` that the next `--ckpt_path last` picks up. AtomicCheckpointIO writes beside the
  target, fsyncs and `os.replace`s, so the old checkpoint stays whole until the new one is.
- Random state. Dropout and masking draw from the global generators; Lightning does not save
  them, so a resumed run would draw different masks. `rng_state()` is stored with every
  checkpoint by the ExactResume callback and put back just before the first batch of the
  resumed epoch.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightkit.io.atomic import atomic_open


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose files appear whole or not at all (temp file beside, fsync, rename)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        with atomic_open(path, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())


def rng_state() -> dict[str, Any]:
    """The global random generators' state, as tensors and ints only (loads with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }  # fmt: skip
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
