"""8-bit embedding tables: Gather over an fp16 table -> com.microsoft GatherBlockQuantized.

In a small encoder the word-embedding table is most of the weights (MiniLM: 11.7M of 22.7M
parameters), so `int8-gpu` stays large when only the linear layers are quantised. ORT's
MatMulNBitsQuantizer rewrites Gather too, but only at 4 bits (it logs "Gather only supports 4 bits
quantization"); the GatherBlockQuantized op itself takes `bits=8` with uint8 data and a zero point,
which ORT's CPU kernel runs (tests/test_export.py) and for which ORT has a CUDA kernel
(onnxruntime/contrib_ops/cuda/quantization/gather_block_quantized.*); the export's placement check
says whether it stays on the GPU. Quantisation is symmetric per block of `block_size` values along
the hidden axis: data = round(w / scale) + 128, scale = max|w| / 127 per block, stored in fp16.
`bits=4` stores signed int4 (scale = max|w| / 7, no zero point, two values per byte, low nibble
first), as ORT's own Gather quantiser does; int4 needs ONNX opset 21 and IR version 10, to which
the model is raised, as that quantiser also does.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper


def quantize_gathers(model: onnx.ModelProto, bits: int = 8, block_size: int = 32, min_rows: int = 64) -> list[str]:
    """Rewrite, in place, every Gather whose table is a 2-D fp16 initializer used by Gathers only,
    with at least `min_rows` rows (token-type tables stay as they are) and a width divisible by
    `block_size`, as `bits`-bit (8 or 4) GatherBlockQuantized. Returns the tables quantised."""
    if bits not in (4, 8):
        raise ValueError(f"embedding tables are quantised to 8 or 4 bits, not {bits}")
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
        top = 127 if bits == 8 else 7
        scale = np.abs(w).max(-1) / top
        scale[scale == 0] = 1.0  # an all-zero block (padding rows): any scale decodes to 0
        q = np.clip(np.round(w / scale[..., None]), -top, top).astype(np.int8).reshape(rows, cols)
        qname = f"{name}_q{bits}"
        graph.initializer.remove(table)
        graph.initializer.append(numpy_helper.from_array(scale.astype(np.float16), f"{name}_scales"))
        if bits == 8:
            graph.initializer.append(numpy_helper.from_array((q.astype(np.int16) + 128).astype(np.uint8), qname))
            graph.initializer.append(numpy_helper.from_array(np.full(scale.shape, 128, np.uint8), f"{name}_zero_points"))
            inputs = [qname, "", f"{name}_scales", f"{name}_zero_points"]
        else:
            nibbles = (q.reshape(-1) & 0xF).astype(np.uint8)
            packed = nibbles[0::2] | (nibbles[1::2] << 4)
            graph.initializer.append(helper.make_tensor(qname, onnx.TensorProto.INT4, [rows, cols], packed.tobytes(), raw=True))
            inputs = [qname, "", f"{name}_scales"]
        for node in nodes:
            inputs[1] = node.input[1]
            quantized = helper.make_node(
                "GatherBlockQuantized",
                list(inputs),
                list(node.output),
                name=f"{node.name or name}_q{bits}",
                domain="com.microsoft",
                gather_axis=0,
                quantize_axis=1,
                block_size=block_size,
                bits=bits,
            )
            index = list(graph.node).index(node)
            graph.node.remove(node)
            graph.node.insert(index, quantized)
        done.append(name)
    if done and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    if done and bits == 4:  # the INT4 tensor type
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx"):
                opset.version = max(opset.version, 21)
        model.ir_version = max(model.ir_version, 10)
    return done
