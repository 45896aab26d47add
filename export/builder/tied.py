"""Tied token tables in decoder graphs: stored once in every form.

A tied LM head is the token-embedding table used twice: `Gather(table, input_ids)` at the input
and `hidden @ table^T` at the output. The TorchScript exporter writes the second use as its own
transposed initializer, so the fp32 file holds the table twice (SmolLM2-135M: 2 x 108 MiB of a
622 MiB file). `share_tied_table` replaces that copy with `Transpose(table)`, which ORT folds at
load time: the file stores it once.

`quantize_tied_table` does the same for the 8-bit forms. The codes of MatMulNBits (8 bits,
symmetric, block 32 along the hidden axis, zero point 128: `gather_quant.quantize_table`'s
scheme) laid out as (vocab, hidden / 32, 32) are, byte for byte, the rows of the table quantised
per block of 32 along its width, which is what GatherBlockQuantized reads. So one uint8
initializer, one scales tensor and one zero-point tensor serve both ends: MatMulNBits reads them
as they are, GatherBlockQuantized through a Reshape to (vocab, hidden) that ORT folds at load.
onnxruntime-genai's builder shares an int4 table the same way (its `shared_embeddings`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lightkit.export.builder.gather_quant import SCALE_TYPES, quantize_table
from lightkit.export.builder.graph import drop_if_unused, replace_node
from lightkit.export.builder.weight_only import WeightOnly


def _tied_pair(graph: onnx.GraphProto) -> tuple[onnx.NodeProto, onnx.NodeProto, str] | None:
    """(Gather, LM-head MatMul, table) where the MatMul's weight is the table transposed, as an
    initializer or as `Transpose(table)`; None for an untied head."""
    inits = {t.name: t for t in graph.initializer}
    transposed = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Transpose" and n.input[0] in inits}
    for gather in graph.node:
        table = inits.get(gather.input[0]) if gather.op_type == "Gather" and gather.domain in ("", "ai.onnx") else None
        if table is None or len(table.dims) != 2:
            continue
        rows, cols = table.dims
        for matmul in graph.node:
            if matmul.op_type != "MatMul" or len(matmul.input) < 2:
                continue
            weight = matmul.input[1]
            if transposed.get(weight) == table.name:
                return gather, matmul, table.name
            other = inits.get(weight)
            if other is not None and list(other.dims) == [cols, rows] and other.data_type == table.data_type:
                if np.array_equal(numpy_helper.to_array(other), numpy_helper.to_array(table).T):
                    return gather, matmul, table.name
    return None


def share_tied_table(model: onnx.ModelProto) -> bool:
    """Replace a tied LM head's transposed copy of the token table by `Transpose(table)`, in
    place; returns whether the graph had one."""
    graph = model.graph
    pair = _tied_pair(graph)
    if pair is None:
        return False
    _, matmul, table = pair
    copy = matmul.input[1]
    inits = {t.name: t for t in graph.initializer}
    if copy in inits:
        graph.initializer.remove(inits[copy])
        transpose = helper.make_node(
            "Transpose", [table], [f"{table}_transposed"], name=f"{table}/Transpose", perm=[1, 0]
        )
        graph.node.insert(list(graph.node).index(matmul), transpose)
        for node in graph.node:
            node.input[:] = [transpose.output[0] if i == copy else i for i in node.input]
    return True


def quantize_tied_table(model: onnx.ModelProto, settings: WeightOnly) -> bool:
    """Rewrite a tied table's Gather and LM-head MatMul (over `Transpose(table)`, see
    `share_tied_table`) as GatherBlockQuantized and MatMulNBits over one set of 8-bit codes, cut
    as the form's other MatMuls are (`settings`), in place; the float table goes. Returns whether
    the graph had one."""
    if (settings.bits, settings.symmetric) != (8, True):
        raise ValueError(f"a shared table is 8-bit symmetric (GatherBlockQuantized's codes); got {settings}")
    block = settings.block_size
    graph = model.graph
    pair = _tied_pair(graph)
    if pair is None:
        return False
    gather, matmul, name = pair
    inits = {t.name: t for t in graph.initializer}
    table = inits[name]
    rows, cols = table.dims
    if cols % block or table.data_type not in SCALE_TYPES:
        return False
    codes, scales, zeros = quantize_table(
        numpy_helper.to_array(table), 8, block, True, scale_dtype=SCALE_TYPES[table.data_type]
    )
    blocks = cols // block
    q, s, z, flat = f"{name}_q8", f"{name}_scales", f"{name}_zero_points", f"{name}_q8_rows"
    graph.initializer.extend([
        numpy_helper.from_array(codes.reshape(rows, blocks, block), q),
        numpy_helper.from_array(scales, s),
        numpy_helper.from_array(zeros, z),
        numpy_helper.from_array(np.array([rows, cols], dtype=np.int64), f"{name}_shape"),
    ])  # fmt: skip
    reshape = helper.make_node("Reshape", [q, f"{name}_shape"], [flat], name=f"{name}/rows")
    lookup = helper.make_node(
        "GatherBlockQuantized", [flat, gather.input[1], s, z], list(gather.output), name=f"{gather.name}_Q8",
        domain="com.microsoft", gather_axis=0, quantize_axis=1, block_size=block, bits=8,
    )  # fmt: skip
    level = {} if settings.accuracy_level is None else {"accuracy_level": settings.accuracy_level}
    head = helper.make_node(
        "MatMulNBits", [matmul.input[0], q, s, z], list(matmul.output), name=f"{matmul.name}_Q8",
        domain="com.microsoft", K=cols, N=rows, bits=8, block_size=block, **level,
    )  # fmt: skip
    weight = matmul.input[1]  # Transpose(table), or the exporter's transposed copy
    replace_node(graph, gather, [reshape, lookup])
    replace_node(graph, matmul, [head])
    drop_if_unused(graph, {weight, name})
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return True
