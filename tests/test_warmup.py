"""The learning-rate curve of LRWarmup, as a function and inside a real Trainer."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from lightkit.callbacks import LRWarmup, lr_multiplier


def test_linear_warmup_then_linear_decay() -> None:
    curve = [lr_multiplier(s, total_steps=10, warmup_steps=4) for s in range(10)]
    assert curve[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert curve[4:] == pytest.approx([1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])


def test_cosine_decay_reaches_min_ratio_at_the_end() -> None:
    f = lambda s: lr_multiplier(s, total_steps=12, warmup_steps=2, decay="cosine", min_ratio=0.1)  # noqa: E731
    assert f(2) == pytest.approx(1.0)
    assert f(7) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(12) == pytest.approx(0.1)


def test_constant_after_warmup() -> None:
    assert [lr_multiplier(s, 100, 1, "constant") for s in (0, 1, 50, 99)] == [0.5, 1.0, 1.0, 1.0]


class RecordLR(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # noqa: ANN001
        self.lrs.append(optimizer.param_groups[0]["lr"])


class SGDModel(BoringModel):
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_callback_applies_the_curve_from_estimated_stepping_batches(tmp_path) -> None:  # noqa: ANN001
    record = RecordLR()
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=2,
        limit_train_batches=5,
        limit_val_batches=0,
        accumulate_grad_batches=1,
        callbacks=[LRWarmup(warmup_ratio=0.2, decay="linear"), record],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(SGDModel())
    # 10 optimizer steps, warmup 2: no step count was given anywhere.
    expected = [0.1 * lr_multiplier(s, 10, 2) for s in range(10)]
    assert record.lrs == pytest.approx(expected)
    assert trainer.callback_metrics["lr"].item() == pytest.approx(expected[-1])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, r"give warmup_steps or warmup_ratio \(warmup_steps: 0 for decay only\)$"),
        ({"warmup_steps": 3, "warmup_ratio": 0.1}, r"set warmup_steps or warmup_ratio, not both$"),
        ({"warmup_steps": -1}, r"warmup_steps must be >= 0, got -1$"),
        ({"warmup_ratio": 1.0}, r"warmup_ratio must be in \[0, 1\), got 1.0$"),
    ],
)
def test_rejects_a_warmup_without_one_valid_length(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LRWarmup(**settings)
