"""8- and 4-bit GatherBlockQuantized embedding tables (lightkit.export.builder.gather_quant) against the float table."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lightkit.export.builder.gather_quant import SCHEMES, dequantize_table, quantize_gathers, quantize_table


def embedding_model(table: np.ndarray, extra_use: bool = False, ids: str = "input_ids") -> onnx.ModelProto:
    nodes = [helper.make_node("Gather", ["table", ids], ["out"], name="lookup")]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT16, None)]
    if extra_use:  # the same table also read by a MatMul (a tied head): must stay float
        nodes.append(helper.make_node("MatMul", ["x", "table"], ["y"]))
        outputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT16, None))
    inputs = [helper.make_tensor_value_info(ids, TensorProto.INT64, ["b", "s"])]
    inputs += [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", table.shape[0]])] if extra_use else []
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=[numpy_helper.from_array(table, "table")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize(("bits", "dtype"), [(8, TensorProto.UINT8), (4, TensorProto.UINT4)])
def test_a_quantised_table_gathers_its_dequantised_rows_within_half_a_step(bits: int, dtype: int) -> None:
    table = np.random.RandomState(0).randn(300, 64).astype(np.float16)
    table[5] = 0  # an all-zero row (padding) decodes to exactly zero
    model = embedding_model(table)
    assert quantize_gathers(model, bits=bits) == {"table": bits}
    assert [n.op_type for n in model.graph.node] == ["GatherBlockQuantized"]
    ids = np.array([[0, 5, 299], [7, 7, 1]], np.int64)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input_ids": ids}
    )[0]
    # ORT decodes exactly what quantize_table says the codes stand for (to fp16 rounding) ...
    scheme = SCHEMES[bits]
    codes, scale, zero = quantize_table(table, bits, **scheme)
    decoded = dequantize_table(codes, scale, zero, scheme["block_size"])
    np.testing.assert_allclose(got.astype(np.float32), decoded[ids], atol=2e-3, rtol=1e-3)
    # ... which is within half a quantisation step of the float table.
    step = scale.astype(np.float32).repeat(scheme["block_size"], -1)
    assert np.all(np.abs(decoded - table.astype(np.float32)) <= step / 2 + 1e-3)
    assert np.all(got[0, 1] == 0)
    (data,) = [t for t in model.graph.initializer if t.name == f"table_q{bits}"]
    assert data.data_type == dtype and len(data.raw_data) == 300 * 64 * bits // 8


def test_4_bit_tables_use_their_whole_range_per_block() -> None:
    """Asymmetric 4 bits: a block of only positive values spends all 16 codes on [0, max], where a
    symmetric scheme would waste the negative half; the range always holds 0, so 0 decodes exactly."""
    w = np.concatenate([np.linspace(0, 1.5, 16), np.linspace(-2, 1, 16)])[None].astype(np.float32)
    codes, scale, zero = quantize_table(w, 4, block_size=16, symmetric=False)
    assert codes[0, :16].min() == 0 and codes[0, :16].max() == 15 and zero[0, 0] == 0
    decoded = dequantize_table(codes, scale, zero, 16)
    assert np.abs(decoded - w).max() <= scale.astype(np.float32).max() / 2 + 1e-3
    asym = np.abs(decoded - w).mean()
    sym_codes, sym_scale, sym_zero = quantize_table(w, 4, block_size=16, symmetric=True)
    assert asym < np.abs(dequantize_table(sym_codes, sym_scale, sym_zero, 16) - w).mean()
    zeros = np.zeros((1, 16), np.float32)
    assert np.all(dequantize_table(*quantize_table(zeros, 4, 16, False), 16) == 0)


def test_tables_that_are_small_or_shared_stay_float() -> None:
    small = embedding_model(np.ones((2, 64), np.float16))  # a token-type table
    assert quantize_gathers(small) == {} and small.graph.node[0].op_type == "Gather"
    shared = embedding_model(np.ones((128, 64), np.float16), extra_use=True)
    assert quantize_gathers(shared) == {} and shared.graph.node[0].op_type == "Gather"


def test_only_the_token_table_goes_to_4_bits() -> None:
    """A table gathered by anything but input_ids (positions) stays at 8 bits under bits=4."""
    positions = embedding_model(np.random.RandomState(1).randn(128, 64).astype(np.float16), ids="position_ids")
    assert quantize_gathers(positions, bits=4) == {"table": 8}
    (node,) = positions.graph.node
    assert node.op_type == "GatherBlockQuantized" and {a.name: a.i for a in node.attribute}["bits"] == 8
    assert positions.ir_version == 9  # no 4-bit tensor, so the model is not raised to IR 10
