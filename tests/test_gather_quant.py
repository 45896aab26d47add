"""8-bit GatherBlockQuantized embedding tables (lightkit.export.gather_quant) against the float table."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from lightkit.export.gather_quant import quantize_gathers


def embedding_model(table: np.ndarray, extra_use: bool = False) -> onnx.ModelProto:
    nodes = [helper.make_node("Gather", ["table", "ids"], ["out"], name="lookup")]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT16, None)]
    if extra_use:  # the same table also read by a MatMul (a tied head): must stay float
        nodes.append(helper.make_node("MatMul", ["x", "table"], ["y"]))
        outputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT16, None))
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])]
    inputs += [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", table.shape[0]])] if extra_use else []
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=[numpy_helper.from_array(table, "table")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize(("bits", "top", "dtype"), [(8, 127, TensorProto.UINT8), (4, 7, TensorProto.INT4)])
def test_a_quantised_table_gathers_the_float_rows_within_half_a_step(bits: int, top: int, dtype: int) -> None:
    table = np.random.RandomState(0).randn(300, 64).astype(np.float16)
    table[5] = 0  # an all-zero row (padding) decodes to exactly zero
    model = embedding_model(table)
    assert quantize_gathers(model, bits=bits) == ["table"]
    assert [n.op_type for n in model.graph.node] == ["GatherBlockQuantized"]
    ids = np.array([[0, 5, 299], [7, 7, 1]], np.int64)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    want = table[ids].astype(np.float32)
    step = np.abs(table.astype(np.float32)).reshape(300, 2, 32).max(-1) / top  # per-block quantisation step
    assert np.all(np.abs(got.astype(np.float32) - want) <= step[ids].repeat(32, -1) / 2 + 2e-3)
    assert np.all(got[0, 1] == 0)
    (data,) = [t for t in model.graph.initializer if t.name == f"table_q{bits}"]
    assert data.data_type == dtype and len(data.raw_data) == 300 * 64 * bits // 8


def test_tables_that_are_small_or_shared_stay_float() -> None:
    small = embedding_model(np.ones((2, 64), np.float16))  # a token-type table
    assert quantize_gathers(small) == [] and small.graph.node[0].op_type == "Gather"
    shared = embedding_model(np.ones((128, 64), np.float16), extra_use=True)
    assert quantize_gathers(shared) == [] and shared.graph.node[0].op_type == "Gather"
