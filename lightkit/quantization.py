"""Fake quantisation of every `nn.Linear` for quantisation-aware training (QAT) and QDQ export.

Each Linear gets a `lightkit_qat` child holding two plain `torch.ao.quantization.FakeQuantize`
modules: its input per-tensor symmetric int8, its weight per-channel (output rows) symmetric int8.
The Linear's class is swapped for a subclass whose forward applies them, so parameter names, the
model's keyword-argument forward and `from_pretrained` compatibility are untouched. Plain
FakeQuantize (not FusedMovingAvgObsFakeQuantize) because the ONNX exporter turns
`fake_quantize_per_tensor_affine` / `..._per_channel_affine` into QuantizeLinear/DequantizeLinear,
and it handles no fused variant.

The fake-quantisers' state (scales, observer ranges) is saved in Lightning checkpoints, so
`lightkit export --forms qat` rebuilds the same model; `strip_qat_state` leaves it out of the
Hugging Face output, which holds float weights (trained to be robust to int8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver

ATTR = "lightkit_qat"


class _FakeQuantizers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.input = FakeQuantize(
            observer=MovingAverageMinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.qint8, qscheme=torch.per_tensor_symmetric
        )
        self.weight = FakeQuantize(
            observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.qint8,
            qscheme=torch.per_channel_symmetric, ch_axis=0,
        )


class QATLinear(nn.Linear):
    """An nn.Linear whose input and weight pass through its fake-quantisers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fq: _FakeQuantizers = getattr(self, ATTR)
        return F.linear(fq.input(x), fq.weight(self.weight), self.bias)


def prepare_qat(model: nn.Module, exclude: tuple[str, ...] = ()) -> list[str]:
    """Attach fake-quantisers to every Linear whose name contains none of `exclude`; returns their names."""
    names = []
    for name, module in model.named_modules():
        if type(module) is nn.Linear and not any(e in name for e in exclude):
            module.add_module(ATTR, _FakeQuantizers().to(module.weight.device))
            module.__class__ = QATLinear
            names.append(name)
    return names


def fake_quantizers(model: nn.Module) -> list[FakeQuantize]:
    return [m for m in model.modules() if isinstance(m, FakeQuantize)]


def is_calibrated(model: nn.Module) -> bool:
    """Whether every quantiser's observer has seen data (its scale means something yet)."""
    fqs = fake_quantizers(model)
    return bool(fqs) and all(bool(torch.isfinite(fq.activation_post_process.min_val).all()) and fq.activation_post_process.min_val.numel() > 0 for fq in fqs)


def set_qat(model: nn.Module, fake_quant: bool, observe: bool) -> None:
    """Switch fake quantisation and observer updates on or off for every quantiser of `model`."""
    for fq in fake_quantizers(model):
        (fq.enable_fake_quant if fake_quant else fq.disable_fake_quant)()
        (fq.enable_observer if observe else fq.disable_observer)()


def strip_qat_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict without the fake-quantisers' entries (the float model's weights only)."""
    return {k: v for k, v in state.items() if f".{ATTR}." not in k}
