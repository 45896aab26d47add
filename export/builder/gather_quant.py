"""8- or 4-bit embedding tables: Gather over a float table -> com.microsoft GatherBlockQuantized.

In a small encoder the word-embedding table is most of the weights (MiniLM: 11.7M of 22.7M
parameters), so `int8-gpu` stays large when only the linear layers are quantised. ORT's
MatMulNBitsQuantizer rewrites Gather too, but only at 4 bits (it logs "Gather only supports 4 bits
quantization"); the GatherBlockQuantized op itself takes `bits=8` with uint8 data and a zero point,
which ORT's CPU kernel runs (tests/test_export.py) and for which ORT has a CUDA kernel
(onnxruntime/contrib_ops/cuda/quantization/gather_block_quantized.*); the export's placement check
says whether it stays on the GPU.

Schemes (`SCHEMES`; the export manifest records which):
- 8 bits: symmetric per block of 32 values along the hidden axis, code = round(w / scale) + 128,
  scale = max|w| / 127 per block, in the table's own float type (fp16 in int8-gpu, fp32 in the
  fp32 `qat` graph). Lossless on the demo's NER model.
- 4 bits: asymmetric per block of 16, scale = (max - min) / 15 over a range that holds 0, a 4-bit
  zero point per block, uint4 codes two a byte, low nibble first; for the token table only (see
  `quantize_gathers`). The scheme was chosen by benchmarks/embedding_tables.py
  (results/embedding-tables-cpu.json), which scores each candidate with only the tables
  quantised: asymmetric blocks of 16 lost least against ORT's own Gather scheme (symmetric,
  block 32), for about 1 MiB more of scales and zero points. uint4 needs ONNX opset 21
  and IR version 10, to which the model is raised, as ORT's quantiser also does.
ORT registers the op for uint8, uint4 and int4 codes on the CPU and CUDA EPs
(onnxruntime/contrib_ops/cuda/quantization/gather_block_quantized.cc).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

SCHEMES = {8: {"block_size": 32, "symmetric": True}, 4: {"block_size": 16, "symmetric": False}}
SCALE_TYPES = {onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.FLOAT: np.float32}  # table type -> scale type


def describe(bits: int, scales: str = "fp16") -> str:
    """The scheme of `bits`-bit tables, as the export manifest records it."""
    scheme = SCHEMES[bits]
    kind = "symmetric" if scheme["symmetric"] else f"asymmetric, {bits}-bit zero points"
    return f"{bits} bits, {kind}, block {scheme['block_size']}, {scales} scales"


def quantize_table(
    w: np.ndarray, bits: int, block_size: int, symmetric: bool, scale_dtype: type = np.float16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block-quantise a (rows, cols) table along its rows' width: codes (rows, cols) in
    0..2**bits - 1, scales (of `scale_dtype`, the table's own) and integer zero points
    (rows, cols // block_size), such that w ~= (code - zero) * scale.

    Symmetric: zero = 2**(bits - 1), scale = max|w| / (2**(bits - 1) - 1). Asymmetric: the
    block's [min, max], widened to hold 0 so that zero (padding rows) and constant blocks decode
    exactly, split into 2**bits - 1 steps."""
    rows, cols = w.shape
    blocks = w.astype(np.float32).reshape(rows, cols // block_size, block_size)
    top = 2 ** (bits - 1) - 1
    if symmetric:
        scale = np.abs(blocks).max(-1) / top
    else:
        low = np.minimum(blocks.min(-1), 0)
        scale = (np.maximum(blocks.max(-1), 0) - low) / (2**bits - 1)
    scale[scale == 0] = 1.0  # an all-zero block: any scale decodes it to 0
    scale = scale.astype(scale_dtype)
    step = scale.astype(np.float32)  # quantise against the scale that will be stored
    if symmetric:
        zero, codes_range = np.full(step.shape, top + 1), (1, 2 * top + 1)
    else:
        zero, codes_range = np.clip(np.round(-low / step), 0, 2**bits - 1), (0, 2**bits - 1)
    codes = np.clip(np.round(blocks / step[..., None]) + zero[..., None], *codes_range)
    return codes.astype(np.uint8).reshape(rows, cols), scale, zero.astype(np.uint8)


def dequantize_table(codes: np.ndarray, scale: np.ndarray, zero: np.ndarray, block_size: int) -> np.ndarray:
    """The float32 table `quantize_table`'s output stands for (what GatherBlockQuantized gathers)."""
    rows, cols = codes.shape
    blocks = codes.astype(np.float32).reshape(rows, cols // block_size, block_size) - zero[..., None].astype(np.float32)
    return (blocks * scale[..., None].astype(np.float32)).reshape(rows, cols)


def quantize_gathers(
    model: onnx.ModelProto, bits: int = 8, min_rows: int = 64, token_input: str = "input_ids"
) -> dict[str, int]:
    """Rewrite, in place, every Gather whose table is a 2-D fp16 or fp32 initializer (scales in the
    same type) used by Gathers only, with at least `min_rows` rows (token-type tables stay as
    they are) and a width divisible by the block size, as GatherBlockQuantized. The token table
    (gathered by the graph input `token_input`) gets `bits` (8 or 4); other tables (positions)
    8: they are a small part of the file, and every sequence reads their rows, so their error
    reaches every token (on the demo's NER model the 4-bit token table cost no F1, and 4-bit
    positions on top of it 0.35 points; benchmarks/embedding_tables.py). Returns {table: bits}
    of the tables quantised."""
    if bits not in SCHEMES:
        raise ValueError(f"embedding tables are quantised to 8 or 4 bits, not {bits}")
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses = Counter(name for node in graph.node for name in node.input)
    gathers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type == "Gather" and node.domain in ("", "ai.onnx") and node.input[0] in inits:
            gathers.setdefault(node.input[0], []).append(node)
    done: dict[str, int] = {}
    for name, nodes in gathers.items():
        table = inits[name]
        rows, cols = (list(table.dims) + [0, 0])[:2]
        table_bits = bits if any(node.input[1] == token_input for node in nodes) else 8
        block_size = SCHEMES[table_bits]["block_size"]
        axis = next((a.i for a in nodes[0].attribute if a.name == "axis"), 0)
        if (table.data_type not in SCALE_TYPES or len(table.dims) != 2 or rows < min_rows
                or cols % block_size or uses[name] != len(nodes) or axis != 0):  # fmt: skip
            continue
        codes, scale, zero = quantize_table(
            numpy_helper.to_array(table), table_bits, **SCHEMES[table_bits], scale_dtype=SCALE_TYPES[table.data_type]
        )
        qname = f"{name}_q{table_bits}"
        graph.initializer.remove(table)
        if table_bits == 8:
            graph.initializer.append(numpy_helper.from_array(codes, qname))
            graph.initializer.append(numpy_helper.from_array(zero, f"{name}_zero_points"))
        else:
            graph.initializer.append(
                helper.make_tensor(qname, onnx.TensorProto.UINT4, [rows, cols], pack_nibbles(codes), raw=True)
            )
            graph.initializer.append(
                helper.make_tensor(
                    f"{name}_zero_points", onnx.TensorProto.UINT4, list(zero.shape), pack_nibbles(zero), raw=True
                )
            )
        graph.initializer.append(numpy_helper.from_array(scale, f"{name}_scales"))
        inputs = [qname, "", f"{name}_scales", f"{name}_zero_points"]
        for node in nodes:
            inputs[1] = node.input[1]
            quantized = helper.make_node(
                "GatherBlockQuantized",
                list(inputs),
                list(node.output),
                name=f"{node.name or name}_q{table_bits}",
                domain="com.microsoft",
                gather_axis=0,
                quantize_axis=1,
                block_size=block_size,
                bits=table_bits,
            )
            index = list(graph.node).index(node)
            graph.node.remove(node)
            graph.node.insert(index, quantized)
        done[name] = table_bits
    if done and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    if 4 in done.values():  # the UINT4 tensor type
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx"):
                opset.version = max(opset.version, 21)
        model.ir_version = max(model.ir_version, 10)
    return done


def pack_nibbles(values: np.ndarray) -> bytes:
    """4-bit values (0..15), two a byte, low nibble first: ONNX's UINT4 layout."""
    flat = values.reshape(-1).astype(np.uint8)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return (flat[0::2] | (flat[1::2] << 4)).tobytes()
