"""The weight-only `MatMulNBits` settings of the 8-bit forms, held once.

ONNX Runtime's `MatMulNBitsQuantizer` is called with these, the tied token table
(`lightkit.export.builder.tied`) is cut to the same blocks, and the manifest's text is made from them, so
what an artifact says about its quantisation is what was done to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx


@dataclass(frozen=True)
class WeightOnly:
    """Weight-only quantisation of every MatMul: `bits` per weight, scales per `block_size` values
    along the input axis, in the graph's float type (`scales`)."""

    bits: int = 8
    block_size: int = 32
    symmetric: bool = True
    scales: str = "fp32"
    accuracy_level: int | None = None  # None: ONNX Runtime's default (fp32 compute)
    # "rtn": round to nearest per block (the quantizer's default); "hqq": half-quadratic
    # quantisation, which fits each block's scale and zero point to the weights (asymmetric only)
    algorithm: str = "rtn"
    # > 0: each quantised projection also gets the best rank-r correction of its rounding error
    # (`lightkit.export.builder.low_rank`), which gives back a LoRA fine-tune that 4 bits round away
    correction_rank: int = 0

    def quantize(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, Any] | None]:
        """Every MatMul of `model` cut to MatMulNBits with these settings by ONNX Runtime's
        quantizer, in place; returns the model and the record of the low-rank correction (None
        without one)."""
        from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig, MatMulNBitsQuantizer

        from lightkit.export.builder.low_rank import correct, float_weights

        weights = float_weights(model) if self.correction_rank else {}
        level = {} if self.accuracy_level is None else {"accuracy_level": self.accuracy_level}
        hqq = HQQWeightOnlyQuantConfig(block_size=self.block_size, bits=self.bits) if self.algorithm == "hqq" else None
        quantizer = MatMulNBitsQuantizer(
            model, bits=self.bits, block_size=self.block_size, is_symmetric=self.symmetric, algo_config=hqq, **level
        )
        quantizer.process()
        quantized = quantizer.model.model
        if hqq is not None and self.accuracy_level is not None:  # HQQ's nodes leave it at the default
            for node in quantized.graph.node:
                if node.op_type == "MatMulNBits" and not any(a.name == "accuracy_level" for a in node.attribute):
                    node.attribute.append(onnx.helper.make_attribute("accuracy_level", self.accuracy_level))
        return quantized, correct(quantized, weights, self.correction_rank, self.bits) if weights else None

    def describe(self) -> str:
        """The manifest's record of the MatMuls."""
        kind = "symmetric" if self.symmetric else "asymmetric"
        text = f"MatMulNBits, {self.bits} bits, {kind}, block {self.block_size}, {self.scales} scales, {self.algorithm}"
        text = text if self.accuracy_level is None else f"{text}, accuracy_level {self.accuracy_level}"
        return f"{text}, rank-{self.correction_rank} error correction" if self.correction_rank else text


# int8-gpu: an fp16 graph, so fp16 scales; the CUDA kernels compute in fp16.
INT8_GPU = WeightOnly(scales="fp16")
# A decoder's int8-cpu: int8 compute with per-block activation scales (MLAS's SQNBit int8 path).
INT8_CPU_DECODER = WeightOnly(accuracy_level=4)
# int4-gpu: 4-bit weights with zero points on the fp16 graph (the tied table stays 8-bit).
INT4_GPU = WeightOnly(bits=4, symmetric=False, scales="fp16", algorithm="hqq", correction_rank=16)
# A decoder's int4-cpu: 4-bit weights (HQQ: scale and zero point fitted per block), the same int8
# compute, and a rank-16 correction of the rounding error (rank 16 is lightkit's LoRA default;
# docs/export.md has SmolLM2's figures for ranks 0, 8 and 16).
INT4_CPU_DECODER = WeightOnly(bits=4, symmetric=False, accuracy_level=4, algorithm="hqq", correction_rank=16)
