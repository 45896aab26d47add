"""The CPU forms of a decoder (a causal LM with a KV cache), `int8-cpu` and `int4-cpu`.

`int8-cpu` of a decoder is weight-only 8-bit `MatMulNBits` (symmetric, block 32) with
`accuracy_level=4`: at run time each activation row is quantised per block of 32 values and the
dot products run in int8. The encoders' `int8-cpu` (dynamic QInt8, `MatMulInteger`) is not used
here on purpose: it gives each activation tensor one scale per call, and an LLM's hidden states
carry a few outlier channels, so one scale crushes every other channel, and a real LLM fails the
parity gate in that form (docs/export.md, "Shipping a real LLM", has the figures). Blockwise scales
keep an outlier's damage inside its block of 32; fp32 compute (`accuracy_level=1`) is closer still
but far slower on CPUs.

`int4-cpu` is the same with 4-bit weights (asymmetric, block 32, zero points; see
`weight_only.INT4_CPU_DECODER` for the quantiser). A small model's token table and LM head are its
most sensitive weights, so they stay 8-bit in both forms.

The token table is 8-bit: shared with a tied LM head (`lightkit.export.builder.tied`), or as its own
GatherBlockQuantized table when the head is untied.

Fusions: the model builder's graph (`lightkit.export.builder.fused_decoder`) comes fused. A
TorchScript graph (other families, QAT) goes through ORT's transformer optimizer with its GPT-2
rules (`model_type="gpt2"`, Python fusions only), which fuses its RMSNorms
(SimplifiedLayerNormalization, and SkipSimplifiedLayerNormalization with the residual add before
it) but not its attention. The manifest records which fusions the quantised graph has, so a change
in either tool shows up there.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnx
from transformers import PreTrainedModel

from lightkit.export.builder.fused_decoder import fusions
from lightkit.export.builder.graph import save
from lightkit.export.builder.weight_only import INT8_CPU_DECODER, WeightOnly
from lightkit.io.errors import InputError


def fuse_decoder(model: PreTrainedModel, src: Path, dst: Path) -> None:
    """ORT's transformer optimizer over a TorchScript decoder graph, `src` to `dst`."""
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    config = model.config
    optimized = optimize_model(
        str(src), model_type="gpt2", num_heads=config.num_attention_heads, hidden_size=config.hidden_size, opt_level=0
    )
    optimized.save_model_to_file(str(dst))


def quantize_cpu_decoder(
    model: PreTrainedModel, src: Path, dst: Path, settings: WeightOnly = INT8_CPU_DECODER
) -> dict[str, Any]:
    """A CPU form of the decoder (see the module docstring) from its fp32 graph, its MatMuls cut as
    `settings` say; returns what the manifest records: the fusions and how each part was quantised."""
    from lightkit.export.builder.gather_quant import describe, quantize_gathers
    from lightkit.export.builder.tied import quantize_tied_table

    fused = dst.with_name(f"{dst.stem}-fused.onnx")
    try:
        source = onnx.load(str(src))
        if not fusions(source.graph)["GroupQueryAttention"]:  # a TorchScript graph
            fuse_decoder(model, src, fused)
            source = onnx.load(str(fused))
        logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
        graph, lowrank = settings.quantize(source)
        tied = quantize_tied_table(graph, INT8_CPU_DECODER)
        tables = {} if tied else quantize_gathers(graph, bits=8)
        save(graph, dst)
    except Exception as e:  # noqa: BLE001 - report which step failed, with ORT's reason
        raise InputError(
            f"{dst.parent.name}: quantising the decoder {src.name} failed ({type(e).__name__}: {e})"
        ) from e
    finally:
        fused.unlink(missing_ok=True)
    return {
        "MatMul": settings.describe(),
        "token table": "shared with the tied LM head, " + describe(8, INT8_CPU_DECODER.scales) if tied else {
            "op": "GatherBlockQuantized",
            "tables": {name: describe(bits, INT8_CPU_DECODER.scales) for name, bits in tables.items()},
        },
        "fusions": fusions(graph.graph),
        **({"low-rank correction": lowrank} if lowrank else {}),
    }  # fmt: skip
