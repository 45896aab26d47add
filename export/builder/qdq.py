"""Fold a QAT model's weight quantisers into int8 initializers, so the `qat` form is small and fast.

`torch.onnx` writes a fake-quantised linear layer as float W -> QuantizeLinear -> DequantizeLinear
-> Transpose -> MatMul: the file keeps every weight in fp32 (the size of the fp32 form), and ONNX
Runtime, which folds the QuantizeLinear of a constant at load, still meets DequantizeLinear ->
Transpose -> MatMul, a pattern its QDQ fusions do not match, so that graph runs no faster than
fp32.

`fold_weight_quantizers` does the folding offline and exactly as the graph would, code =
saturate(round_half_even(W / scale) + zero_point) per channel, stores the int8 codes (transposed
when a 2-D Transpose follows, with the channel axis moved to match) and feeds them to the
DequantizeLinear. The weights then reach MatMul as DequantizeLinear(int8 constant), the pattern
ORT turns into integer kernels (MatMulIntegerToFloat / QLinearMatMul) when the activation side is
quantised too, as QAT's is. Numbers are unchanged: the same codes, scales and zero points.
`compact_qat` runs both passes below on an exported file and quantises its embedding tables.

`fuse_shared_input_linears` then joins linear layers that read the same tensor through identical
input quantizers (attention's query/key/value; a gated MLP's gate/up) into one MatMul over the
concatenated int8 weights, split after the bias. Without it ORT's common-subexpression pass merges
their identical QuantizeLinear nodes and the shared result defeats the integer fusion, leaving
those layers as float MatMuls. Same codes, scales and activation quantisation, so the numbers are
unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from lightkit.export.builder.gather_quant import describe, quantize_gathers
from lightkit.export.builder.graph import GraphIndex, remove_unused, replace, topological


def compact_qat(path: Path) -> dict[str, Any]:
    """The `qat` form as shipped: weights folded to int8 and shared-input layers joined (below),
    and the embedding tables, which QAT leaves float, at lightkit's 8 bits (gather_quant: once the
    weights are folded, float tables would be most of the file).
    Rewrites `path`; returns the manifest's entry."""
    model = onnx.load(str(path))
    folded = fold_weight_quantizers(model)
    joined = fuse_shared_input_linears(model)
    tables = quantize_gathers(model, bits=8)
    onnx.save(model, str(path))
    return {
        "weights": f"{folded} weight quantizers folded to int8 initializers",
        "joined_layer_groups": joined,
        "embedding tables": {
            "op": "GatherBlockQuantized",
            "tables": {name: describe(bits, "fp32") for name, bits in tables.items()},
        },
    }


def fold_weight_quantizers(model: onnx.ModelProto) -> int:
    """Rewrite `model` in place (see the module docstring); returns how many weights were folded."""
    graph = model.graph
    index = GraphIndex(graph)
    nodes, inits, consumers, constant = index.nodes, index.inits, index.consumers, index.constant
    graph_outputs = index.outputs

    folded, dropped = 0, set()
    for quant in [n for n in nodes if n.op_type == "QuantizeLinear"]:
        weight, scale = constant(quant.input[0]), constant(quant.input[1])
        zero = constant(quant.input[2]) if len(quant.input) > 2 and quant.input[2] else np.zeros((), np.uint8)
        dequants = consumers[quant.output[0]]
        if weight is None or scale is None or zero is None or weight.ndim != 2 or quant.output[0] in graph_outputs:
            continue
        if not dequants or any(d.op_type != "DequantizeLinear" for d in dequants):
            continue
        axis = next((a.i for a in quant.attribute if a.name == "axis"), 1) % weight.ndim
        shape = [1] * weight.ndim
        shape[axis] = -1
        bounds = np.iinfo(zero.dtype)
        per_channel_scale = scale.reshape(shape) if scale.ndim else scale
        per_channel_zero = zero.reshape(shape) if zero.ndim else zero
        # As QuantizeLinear: float32 division, round half to even, add the zero point, saturate.
        codes = np.clip(
            np.rint(weight / per_channel_scale) + per_channel_zero.astype(np.float64), bounds.min, bounds.max
        ).astype(zero.dtype)
        for dequant in dequants:
            after = consumers[dequant.output[0]]
            perm = [list(a.ints) for a in after[0].attribute if a.name == "perm"] if len(after) == 1 else None
            transposed = (
                len(after) == 1
                and after[0].op_type == "Transpose"
                and dequant.output[0] not in graph_outputs
                and perm in ([[1, 0]], [])
            )
            name = f"{quant.output[0]}_codes{'_t' if transposed else ''}"  # per quantizer: a tied weight may have two
            if name not in inits:
                tensor = numpy_helper.from_array(np.ascontiguousarray(codes.T if transposed else codes), name)
                graph.initializer.append(tensor)
                inits[name] = tensor
            dequant.input[0] = name
            if transposed and scale.ndim:  # per-channel: the channel axis moves with the transpose
                for attr in dequant.attribute:
                    if attr.name == "axis":
                        attr.i = 1 - axis
                if not any(a.name == "axis" for a in dequant.attribute):
                    dequant.attribute.append(onnx.helper.make_attribute("axis", 1 - axis))
            if transposed:
                (transpose,) = after
                for node in consumers[transpose.output[0]]:
                    node.input[:] = [dequant.output[0] if i == transpose.output[0] else i for i in node.input]
                dropped.add(id(transpose))
        dropped.add(id(quant))
        folded += 1
    replace(graph.node, [n for n in nodes if id(n) not in dropped])
    remove_unused(graph)
    return folded


def fuse_shared_input_linears(model: onnx.ModelProto) -> int:
    """Join, in place, MatMul(DQ(Q(x)), DQ(int8 weight)) [+ bias Add] layers whose Q(x) are
    identical into one layer and a Split (see the module docstring); returns the groups joined."""
    graph = model.graph
    index = GraphIndex(graph)
    nodes, inits, producer, consumers, value = index.nodes, index.inits, index.producer, index.consumers, index.constant

    def layer(matmul: onnx.NodeProto) -> dict[str, Any] | None:
        """The parts of one quantised linear layer, or None if `matmul` is not one."""
        dq_x, dq_w = producer.get(matmul.input[0]), producer.get(matmul.input[1])
        if dq_x is None or dq_w is None or dq_x.op_type != "DequantizeLinear" or dq_w.op_type != "DequantizeLinear":
            return None
        quant = producer.get(dq_x.input[0])
        codes = inits.get(dq_w.input[0])
        if quant is None or quant.op_type != "QuantizeLinear" or codes is None or len(codes.dims) != 2:
            return None
        if (
            len(consumers[quant.output[0]]) != 1
            or len(consumers[dq_x.output[0]]) != 1
            or len(consumers[dq_w.output[0]]) != 1
        ):
            return None
        axis = next((a.i for a in dq_w.attribute if a.name == "axis"), 1)
        w_scale = value(dq_w.input[1])
        w_zero = value(dq_w.input[2]) if len(dq_w.input) > 2 and dq_w.input[2] else None
        if (
            w_scale is None
            or (w_scale.ndim and axis % 2 != 1)
            or (len(dq_w.input) > 2 and dq_w.input[2] and w_zero is None)
        ):
            return None  # only per-output-channel (or per-tensor) weight scales concatenate
        x_params = [value(name) for name in quant.input[1:]]
        if any(v is None for v in x_params):
            return None
        after = consumers[matmul.output[0]]
        bias = None
        if len(after) == 1 and after[0].op_type == "Add":
            other = [i for i in after[0].input if i != matmul.output[0]]
            bias = value(other[0]) if len(other) == 1 else None
        out_node = after[0] if bias is not None else matmul
        n = codes.dims[1]
        return {
            "x": quant.input[0],
            "x_params": x_params,
            "quant": quant,
            "dq_x": dq_x,
            "dq_w": dq_w,
            "matmul": matmul,
            "add": out_node if bias is not None else None,
            "output": out_node.output[0],
            "codes": numpy_helper.to_array(codes),
            "scale": np.broadcast_to(w_scale, (n,)),
            "zero": None if w_zero is None else np.broadcast_to(w_zero, (n,)),
            "bias": bias,
        }

    # Only layers whose input quantizers are identical (same input, scale and zero point) share
    # one quantised input; their weights must also concatenate (same code type, zero points, bias).
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for matmul in nodes:
        if matmul.op_type == "MatMul" and (found := layer(matmul)) is not None:
            key = (found["x"], *(p.dtype.str + p.tobytes().hex() for p in found["x_params"]), found["codes"].dtype.str,
                   found["zero"] is None, found["bias"] is None)  # fmt: skip
            groups[key].append(found)
    joined, dropped, added = 0, set(), []
    for same in groups.values():
        if len(same) < 2:
            continue
        first = same[0]
        name = f"{first['matmul'].name or first['x']}_joined"
        widths = [lay["codes"].shape[1] for lay in same]
        tensors = {
            "codes": np.concatenate([lay["codes"] for lay in same], axis=1),
            "scale": np.concatenate([lay["scale"] for lay in same]).astype(first["scale"].dtype),
        }
        if first["zero"] is not None:
            tensors["zero"] = np.concatenate([lay["zero"] for lay in same])  # of the codes' type, as ONNX requires
        if first["bias"] is not None:
            tensors["bias"] = np.concatenate([np.broadcast_to(lay["bias"], (w,)) for lay, w in zip(same, widths)])
        for key, array in tensors.items():
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), f"{name}.{key}"))
        dq_w = onnx.helper.make_node(
            "DequantizeLinear",
            [f"{name}.codes", f"{name}.scale", *([f"{name}.zero"] if "zero" in tensors else [])],
            [f"{name}.weight"],
            name=f"{name}/weight/DequantizeLinear",
            axis=1,
        )
        matmul = onnx.helper.make_node(
            "MatMul", [first["dq_x"].output[0], f"{name}.weight"], [f"{name}.matmul"], name=f"{name}/MatMul"
        )
        added += [dq_w, matmul]
        joined_out = f"{name}.matmul"
        if "bias" in tensors:
            added.append(
                onnx.helper.make_node("Add", [joined_out, f"{name}.bias"], [f"{name}.out"], name=f"{name}/Add")
            )
            joined_out = f"{name}.out"
        graph.initializer.append(numpy_helper.from_array(np.array(widths, np.int64), f"{name}.split"))
        added.append(
            onnx.helper.make_node(
                "Split", [joined_out, f"{name}.split"], [lay["output"] for lay in same], name=f"{name}/Split", axis=-1
            )
        )
        for lay in same:
            dropped.update(id(lay[k]) for k in ("dq_w", "matmul", "add") if lay[k] is not None)
            if lay is not first:
                dropped.update((id(lay["quant"]), id(lay["dq_x"])))
        joined += 1
    if joined:
        # The joined layers sit where the first layer of their group was; Split's outputs keep the
        # old names, so every reader is unchanged. Nodes go in topological order again below.
        replace(graph.node, topological([n for n in nodes if id(n) not in dropped] + added))
        remove_unused(graph)
    return joined
