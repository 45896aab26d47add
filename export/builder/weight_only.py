"""The weight-only `MatMulNBits` settings of the 8-bit forms, held once.

ONNX Runtime's `MatMulNBitsQuantizer` is called with these, the tied token table
(`lightkit.export.builder.tied`) is cut to the same blocks, and the manifest's text is made from them, so
what an artifact says about its quantisation is what was done to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WeightOnly:
    """Weight-only quantisation of every MatMul: `bits` per weight, scales per `block_size` values
    along the input axis, in the graph's float type (`scales`)."""

    bits: int = 8
    block_size: int = 32
    symmetric: bool = True
    scales: str = "fp32"
    accuracy_level: int | None = None  # None: ONNX Runtime's default (fp32 compute)

    def quantizer(self, model: Any) -> Any:
        """ONNX Runtime's quantizer for `model` (an onnx.ModelProto), with these settings."""
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        level = {} if self.accuracy_level is None else {"accuracy_level": self.accuracy_level}
        return MatMulNBitsQuantizer(
            model, bits=self.bits, block_size=self.block_size, is_symmetric=self.symmetric, **level
        )

    def describe(self) -> str:
        """The manifest's record of the MatMuls."""
        kind = "symmetric" if self.symmetric else "asymmetric"
        text = f"MatMulNBits, {self.bits} bits, {kind}, block {self.block_size}, {self.scales} scales"
        return text if self.accuracy_level is None else f"{text}, accuracy_level {self.accuracy_level}"


# int8-gpu: an fp16 graph, so fp16 scales; the CUDA kernels compute in fp16.
INT8_GPU = WeightOnly(scales="fp16")
# A decoder's int8-cpu: int8 compute with per-block activation scales (MLAS's SQNBit int8 path).
INT8_CPU_DECODER = WeightOnly(accuracy_level=4)
