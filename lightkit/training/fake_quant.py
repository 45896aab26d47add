"""Fake quantisation of every `nn.Linear` for quantisation-aware training (QAT) and QDQ export.

Each Linear gets a `lightkit_qat` child holding two `FakeQuantizer`s: its input per-tensor
symmetric int8, its weight per-channel (output rows) symmetric int8. The Linear's class is swapped
for a subclass whose forward applies them, so parameter names, the model's keyword-argument forward
and `from_pretrained` compatibility are untouched.

The quantisers call PyTorch's public `torch.fake_quantize_per_tensor_affine` /
`torch.fake_quantize_per_channel_affine` (straight-through gradients), which the ONNX exporter
turns into QuantizeLinear/DequantizeLinear pairs; `torch.ao.quantization`, which PyTorch is
retiring in favour of torchao, is not used. Scales follow moving-average min/max observers (the
recipe of PyTorch's `MovingAverage*MinMaxObserver`: the first batch's range, then an exponential
average with factor 0.01), symmetric: scale = max(|min|, |max|) / 127.5.

The quantisers' state (scales, observed ranges, switches) is saved in Lightning checkpoints, so
`lightkit export --forms qat` rebuilds the same model; `strip_qat_state` leaves it out of the
Hugging Face output, which holds float weights (trained to be robust to int8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ATTR = "lightkit_qat"
QMIN, QMAX = -128, 127
AVERAGING = 0.01  # weight of a new batch's range in the moving average
EPS = torch.finfo(torch.float32).eps  # smallest scale, so an all-zero range still quantises


class FakeQuantizer(nn.Module):
    """Symmetric int8 fake quantisation with a moving-average min/max observer.

    Args:
        channels: None for one scale over the whole tensor; else the size of axis 0, which gets
            one scale per row (a Linear weight's output channels).
    """

    def __init__(self, channels: int | None = None) -> None:
        super().__init__()
        self.per_channel = channels is not None
        shape = (channels,) if self.per_channel else (1,)
        self.register_buffer("scale", torch.ones(shape))
        self.register_buffer("zero_point", torch.zeros(shape, dtype=torch.int32))
        self.register_buffer("min_val", torch.full(shape, float("inf")))
        self.register_buffer("max_val", torch.full(shape, float("-inf")))
        self.register_buffer("fake_quant_enabled", torch.ones(1, dtype=torch.uint8))
        self.register_buffer("observer_enabled", torch.ones(1, dtype=torch.uint8))

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        if self.per_channel:
            low, high = torch.aminmax(x.flatten(1), dim=1)
        else:
            low, high = torch.aminmax(x)
            low, high = low.view(1), high.view(1)
        if bool(torch.isinf(self.min_val).all()):  # the first batch sets the range
            self.min_val.copy_(low)
            self.max_val.copy_(high)
        else:
            self.min_val.add_(AVERAGING * (low - self.min_val))
            self.max_val.add_(AVERAGING * (high - self.max_val))
        bound = torch.maximum(-self.min_val.clamp(max=0), self.max_val.clamp(min=0))
        self.scale.copy_(torch.clamp(bound / ((QMAX - QMIN) / 2), min=EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer_enabled[0] == 1:
            self.observe(x)
        if self.fake_quant_enabled[0] == 0:
            return x
        if self.per_channel:
            return torch.fake_quantize_per_channel_affine(x, self.scale, self.zero_point, 0, QMIN, QMAX)
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, QMIN, QMAX)

    def calibrated(self) -> bool:
        """Whether the observer has seen data (the scale means something yet)."""
        return bool(torch.isfinite(self.min_val).all())


class _FakeQuantizers(nn.Module):
    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.input = FakeQuantizer()
        self.weight = FakeQuantizer(channels=out_features)


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
            module.add_module(ATTR, _FakeQuantizers(module.out_features).to(module.weight.device))
            module.__class__ = QATLinear
            names.append(name)
    return names


def remove_qat(model: nn.Module) -> None:
    """Undo `prepare_qat`: every QATLinear back to a plain nn.Linear (the float model, no wrappers)."""
    for module in model.modules():
        if type(module) is QATLinear:
            delattr(module, ATTR)
            module.__class__ = nn.Linear


def fake_quantizers(model: nn.Module) -> list[FakeQuantizer]:
    return [m for m in model.modules() if isinstance(m, FakeQuantizer)]


def is_calibrated(model: nn.Module) -> bool:
    """Whether every quantiser's observer has seen data (its scale means something yet)."""
    fqs = fake_quantizers(model)
    return bool(fqs) and all(fq.calibrated() for fq in fqs)


def set_qat(model: nn.Module, fake_quant: bool, observe: bool) -> None:
    """Switch fake quantisation and observer updates on or off for every quantiser of `model`."""
    for fq in fake_quantizers(model):
        fq.fake_quant_enabled.fill_(int(fake_quant))
        fq.observer_enabled.fill_(int(observe))


def strip_qat_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict without the fake-quantisers' entries (the float model's weights only)."""
    return {k: v for k, v in state.items() if f".{ATTR}." not in k}
