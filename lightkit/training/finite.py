"""Stop training on a non-finite loss without reading the loss on the host at every step.

`if not torch.isfinite(loss)` in `training_step` makes the CPU wait for the GPU to finish the
forward before it can queue the backward, and every step pays that stall. `FiniteLossGuard`
instead copies the flag to pinned host memory without blocking, records a CUDA event after it,
and reads it in `on_before_optimizer_step`: by then the backward is queued behind the event, so
waiting for the forward keeps the GPU busy, and the bad step still never reaches the optimizer
(no poisoned weights, and so no poisoned checkpoint). On CPU there is no stream to wait for and
the flag is read in the same place, so the tests run the same path.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class _Pending(NamedTuple):
    flag: torch.Tensor  # a bool scalar on the host (pinned when copied from a GPU)
    loss: torch.Tensor  # read only to write the error message
    ready: torch.cuda.Event | None  # recorded after the copy; None on CPU
    where: str


class FiniteLossGuard:
    """Collects each micro-batch's loss flag (`watch`) and raises on the first non-finite one
    when the optimizer is about to step (`check`); gradient accumulation checks them all."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.pending: list[_Pending] = []

    def watch(self, loss: torch.Tensor, where: str) -> None:
        loss = loss.detach()
        flag, ready = torch.isfinite(loss), None
        if flag.is_cuda:
            flag = flag.to("cpu", non_blocking=True)  # a non-blocking device-to-host copy lands in pinned memory
            ready = torch.cuda.Event()
            ready.record()
        self.pending.append(_Pending(flag, loss, ready, where))

    def check(self) -> None:
        pending, self.pending = self.pending, []
        for p in pending:
            if p.ready is not None:
                p.ready.synchronize()
            if not bool(p.flag):
                # Stop now, naming where: one NaN step poisons every weight through the optimizer.
                raise FloatingPointError(
                    f"{self.owner}: training loss is {p.loss.item()} at {p.where}; lower the learning rate, "
                    "check the data of that batch, or use bf16/fp32 instead of fp16"
                )
