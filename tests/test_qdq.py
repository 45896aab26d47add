"""Compacting a QAT graph (lightkit.export.builder.qdq) changes its file and its kernels, never its numbers."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from lightkit.export.builder.qdq import fold_weight_quantizers, fuse_shared_input_linears


def qat_graph(widths: tuple[int, ...] = (8, 8, 4), shared_scale: bool = True, tied: bool = False) -> onnx.ModelProto:
    """x -> per layer: Q(x) -> DQ -> MatMul(., Transpose(DQ(Q(float W)))) -> Add(bias), the shape
    torch.onnx gives a fake-quantised nn.Linear; the layers read the same x, as query/key/value do."""
    rng = np.random.RandomState(0)
    nodes, inits, outputs = [], [], []
    for i, width in enumerate(widths):
        x_scale = 0.05 if shared_scale else 0.05 + 0.01 * i
        inits += [numpy_helper.from_array(np.array(x_scale, np.float32), f"xs{i}"),
                  numpy_helper.from_array(np.array(0, np.int8), f"xz{i}"),
                  numpy_helper.from_array(rng.randn(width, 16).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array((np.abs(rng.randn(width)) * 0.02 + 0.01).astype(np.float32), f"ws{i}"),
                  numpy_helper.from_array(np.zeros(width, np.int8), f"wz{i}"),
                  numpy_helper.from_array(rng.randn(width).astype(np.float32), f"b{i}")]  # fmt: skip
        nodes += [
            helper.make_node("QuantizeLinear", ["x", f"xs{i}", f"xz{i}"], [f"xq{i}"]),
            helper.make_node("DequantizeLinear", [f"xq{i}", f"xs{i}", f"xz{i}"], [f"xd{i}"]),
            helper.make_node("QuantizeLinear", ["w0" if tied else f"w{i}", f"ws{i}", f"wz{i}"], [f"wq{i}"], axis=0),
            helper.make_node("DequantizeLinear", [f"wq{i}", f"ws{i}", f"wz{i}"], [f"wd{i}"], axis=0),
            helper.make_node("Transpose", [f"wd{i}"], [f"wt{i}"], perm=[1, 0]),
            helper.make_node("MatMul", [f"xd{i}", f"wt{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"y{i}"]),
        ]
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["n", width]))
    graph = helper.make_graph(
        nodes, "qat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])], outputs, initializer=inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_folding_and_joining_keep_every_output_bit_for_bit() -> None:
    model = qat_graph()
    x = np.random.RandomState(1).randn(5, 16).astype(np.float32)
    before = run(model, x)
    assert fold_weight_quantizers(model) == 3
    inits = {t.name: t for t in model.graph.initializer}
    assert not any(name in inits for name in ("w0", "w1", "w2"))  # the float weights are gone
    assert fuse_shared_input_linears(model) == 1
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMul") == 1 and ops.count("QuantizeLinear") == 1 and "Split" in ops and "Transpose" not in ops
    (codes,) = [t for t in model.graph.initializer if t.data_type == TensorProto.INT8 and len(t.dims) == 2]
    assert list(codes.dims) == [16, 20]  # the three weights, transposed and side by side
    after = run(model, x)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_layers_with_different_input_quantizers_stay_apart() -> None:
    """Joining them would quantise two inputs with one scale: a different model."""
    model = qat_graph(shared_scale=False)
    x = np.random.RandomState(2).randn(3, 16).astype(np.float32)
    before = run(model, x)
    fold_weight_quantizers(model)
    assert fuse_shared_input_linears(model) == 0
    assert [n.op_type for n in model.graph.node].count("MatMul") == 3
    for a, b in zip(before, run(model, x)):
        np.testing.assert_array_equal(a, b)


def test_a_weight_read_by_two_quantizers_gets_codes_for_each() -> None:
    """Tied weights: one float initializer, two scales, so two sets of int8 codes."""
    model = qat_graph(widths=(8, 8), shared_scale=False, tied=True)
    x = np.random.RandomState(3).randn(4, 16).astype(np.float32)
    before = run(model, x)
    assert fold_weight_quantizers(model) == 2
    assert sum(t.data_type == TensorProto.INT8 and len(t.dims) == 2 for t in model.graph.initializer) == 2
    for a, b in zip(before, run(model, x)):
        np.testing.assert_array_equal(a, b)
