"""The Trainer's precision when a config leaves `trainer.precision` unset.

bf16 autocast is the one precision lever that helps every lightkit objective on a GPU with native
bf16 (Ampere or newer): matmuls run on bf16 tensor cores, weights and optimizer state stay fp32,
and unlike fp16 it needs no loss scaler, so no step waits on an inf check. Lightning's own default
is 32-true everywhere, so a user who never heard of `precision` trained in fp32 on an H100. On a
CPU bf16 autocast is slower than fp32, and a GPU without native bf16 would emulate it, so those
keep 32-true. An explicit `trainer.precision` always wins.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.accelerators import CUDAAccelerator

GPU_DEFAULT = "bf16-mixed"
OTHER_DEFAULT = "32-true"


def default_precision(accelerator: Any = "auto", strategy: Any = "auto") -> str:
    """The precision a run on `accelerator` with `strategy` gets when the config names none."""
    if isinstance(accelerator, str):
        if accelerator not in ("auto", "gpu", "cuda") or not CUDAAccelerator.is_available():
            return OTHER_DEFAULT  # Lightning's "auto" and "gpu" pick CUDA whenever it is there
    elif not isinstance(accelerator, CUDAAccelerator):
        return OTHER_DEFAULT
    if isinstance(strategy, str) and ("fork" in strategy or "notebook" in strategy):
        # Reading the device's compute capability initialises CUDA in this process, and the
        # forking strategies refuse to start once it is initialised.
        return OTHER_DEFAULT
    return GPU_DEFAULT if torch.cuda.is_bf16_supported(including_emulation=False) else OTHER_DEFAULT
