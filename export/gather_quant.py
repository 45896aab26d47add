"""8-bit embedding tables: Gather over an fp16 table -> com.microsoft GatherBlockQuantized.

In a small encoder the word-embedding table is most of the weights (MiniLM: 11.7M of 22.7M
parameters), so `int8-gpu` stays large when only the linear layers are quantised. ORT's
MatMulNBitsQuantizer rewrites Gather too, but only at 4 bits (it logs "Gather only supports 4 bits
quantization"); the GatherBlockQuantized op itself takes `bits=8` with uint8 data and a zero point,
which ORT's CPU kernel runs (tests/test_export.py) and for which ORT has a CUDA kernel
(onnxruntime/contrib_ops/cuda/quantization/gather_block_quantized.*); the export's placement check
says whether it stays on the GPU. Quantisation is symmetric per block of `block_size` values along
the hidden axis: data = round(w / scale) + 128, scale = max|w| / 127 per block, stored in fp16.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper


def quantize_gathers(model: onnx.ModelProto, block_size: int = 32, min_rows: int = 64) -> list[str]:
    """Rewrite, in place, every Gather whose table is a 2-D fp16 initializer used by Gathers only,
    with at least `min_rows` rows (token-type tables stay as they are) and a width divisible by
    `block_size`. Returns the names of the tables quantised."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses = Counter(name for node in graph.node for name in node.input)
    gathers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type == "Gather" and node.domain in ("", "ai.onnx") and node.input[0] in inits:
            gathers.setdefault(node.input[0], []).append(node)
    done = []
    for name, nodes in gathers.items():
        table = inits[name]
        rows, cols = (list(table.dims) + [0, 0])[:2]
        axis = next((a.i for a in nodes[0].attribute if a.name == "axis"), 0)
        if (table.data_type != onnx.TensorProto.FLOAT16 or len(table.dims) != 2 or rows < min_rows
                or cols % block_size or uses[name] != len(nodes) or axis != 0):  # fmt: skip
            continue
        w = numpy_helper.to_array(table).astype(np.float32).reshape(rows, cols // block_size, block_size)
        scale = np.abs(w).max(-1) / 127.0
        scale[scale == 0] = 1.0  # an all-zero block (padding rows): any scale decodes to 0
        data = (np.clip(np.round(w / scale[..., None]), -127, 127) + 128).astype(np.uint8).reshape(rows, cols)
        graph.initializer.remove(table)
        graph.initializer.extend([
            numpy_helper.from_array(data, f"{name}_q8"),
            numpy_helper.from_array(scale.astype(np.float16), f"{name}_scales"),
            numpy_helper.from_array(np.full(scale.shape, 128, np.uint8), f"{name}_zero_points"),
        ])  # fmt: skip
        for node in nodes:
            quantized = helper.make_node(
                "GatherBlockQuantized",
                [f"{name}_q8", node.input[1], f"{name}_scales", f"{name}_zero_points"],
                list(node.output),
                name=f"{node.name or name}_q8",
                domain="com.microsoft",
                gather_axis=0,
                quantize_axis=1,
                block_size=block_size,
                bits=8,
            )
            index = list(graph.node).index(node)
            graph.node.remove(node)
            graph.node.insert(index, quantized)
        done.append(name)
    if done and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return done
