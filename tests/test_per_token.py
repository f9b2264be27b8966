"""Per-token activations on the int8 GEMM: the numerics, the pass against ONNX Runtime, the options.

The torch fake-quant model equals the shipped per-token file too: tests/test_finetune.py (GRIDS).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bert2onnxq import numerics
from bert2onnxq.analyse.activations import ChannelObserver
from bert2onnxq.errors import BadInput
from bert2onnxq.graph.activations import PerTokenActivationsPass


def test_per_token_quantize_is_symmetric_int8_per_row():
    x = np.array([[0.5, -1.27, 0.01, 0.003], [0.0, 0.0, 0.0, 0.0], [2.54, 1.0, -0.05, 0.0]], np.float32)
    got = numerics.per_token_quantize(x)
    # row scales 0.01, (all zero: the floor), 0.02; each value rounded half to even onto its row's grid
    np.testing.assert_array_equal(got[0], np.float32([50, -127, 1, 0]) * np.float32(0.01))
    np.testing.assert_array_equal(got[1], 0.0)
    np.testing.assert_array_equal(got[2], np.float32([127, 50, -2, 0]) * np.float32(0.02))
    # a row's range does not depend on the other rows (what makes the file's numbers batch-free)
    np.testing.assert_array_equal(numerics.per_token_quantize(x[2:]), got[2:])
    x = np.random.default_rng(0).normal(size=(6, 3, 40)).astype(np.float32) * np.float32([[[0.1]], [[5]], [[1]], [[3]], [[2]], [[9]]])
    step = np.abs(x).max(axis=-1, keepdims=True) / 127
    assert np.all(np.abs(numerics.per_token_quantize(x) - x) <= step / 2 * (1 + 1e-5))


def _graph(x_shape, k, n, rng, w_zero_point=False):
    """MatMul(x, DequantizeLinear(W_q, scale, axis 1)) + bias, and what it should compute per token."""
    w_q = rng.integers(0 if w_zero_point else -127, 256 if w_zero_point else 128, (k, n)).astype(np.uint8 if w_zero_point else np.int8)
    scale = (rng.random(n).astype(np.float32) + 0.5) * np.float32(0.01)
    zp = rng.integers(100, 150, n).astype(np.uint8) if w_zero_point else None
    bias = rng.normal(size=n).astype(np.float32)
    inits = [numpy_helper.from_array(w_q, "w_q"), numpy_helper.from_array(scale, "w_scale"), numpy_helper.from_array(bias, "bias")]
    dq_inputs = ["w_q", "w_scale"]
    if zp is not None:
        inits.append(numpy_helper.from_array(zp, "w_zp"))
        dq_inputs.append("w_zp")
    nodes = [helper.make_node("DequantizeLinear", dq_inputs, ["w_dequantized"], axis=1, name="w_DequantizeLinear"),
             helper.make_node("MatMul", ["x", "w_dequantized"], ["mm"], name="MatMul"),
             helper.make_node("Add", ["mm", "bias"], ["y"], name="Add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    w = (w_q.astype(np.float32) - (0 if zp is None else zp.astype(np.float32))) * scale
    return model, lambda x: numerics.per_token_quantize(x) @ w + bias


@pytest.mark.parametrize("w_zero_point", [False, True])
def test_pass_runs_on_the_integer_kernel_and_computes_per_token_numbers(tmp_path, w_zero_point):
    rng = np.random.default_rng(1)
    k, n = 48, 24
    model, expected = _graph([None, None, k], k, n, rng, w_zero_point)
    m = ir.from_proto(model)
    assert PerTokenActivationsPass({"w_dequantized": k})(m).modified
    proto = ir.to_proto(m)
    onnx.checker.check_model(proto)
    assert not any(node.op_type in ("MatMul", "Add") for node in proto.graph.node)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "MatMulIntegerToFloat" in ops and "MatMul" not in ops  # the int8 GEMM, not a float MatMul
    x = rng.normal(size=(3, 7, k)).astype(np.float32) * rng.uniform(0.1, 10, size=(3, 7, 1)).astype(np.float32)
    x[1, 2] = 0.0  # an all-zero token (padding) quantizes to zero, not to NaN
    got = session.run(None, {"x": x})[0]
    want = expected(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    # every token's output is its own: the same rows alone give the same numbers
    np.testing.assert_allclose(session.run(None, {"x": x[2:]})[0], got[2:], rtol=1e-6, atol=1e-6)


def test_observer_takes_per_token_moments():
    x = np.random.default_rng(2).normal(size=(50, 12)).astype(np.float32)
    x[:, 3] *= 20
    observer = ChannelObserver(np.random.default_rng(0), moments="per-token")
    observer.add_moment(x)
    xq = numerics.per_token_quantize(x)
    np.testing.assert_allclose(observer.q_moment, xq.T @ xq, rtol=1e-6)
    np.testing.assert_allclose(observer.cross_moment, xq.T @ x, rtol=1e-6)
    assert not np.allclose(observer.q_moment, (d := numerics.dynamic_quantize(x)).T @ d, rtol=1e-4)


@pytest.mark.parametrize("options, message", [
    (dict(bits=4, granularity="group", group_size=16, act_calib="per-token"), "add --group-kernel int8"),
    (dict(bits=8, act_bits=None, act_calib="per-token"), "--act-bits none"),
])
def test_per_token_where_it_does_not_apply_is_an_error(tiny_onnx, options, message):
    from bert2onnxq.convert import decide
    from bert2onnxq.methods import convert_options
    from bert2onnxq.onnx_io import load_ir

    with pytest.raises(BadInput, match=message):
        decide(load_ir(tiny_onnx["classification"]), convert_options(**options))


def test_converted_file_runs_every_quantized_layer_on_the_int8_gemm_at_any_batch(tiny_onnx, tmp_path):
    from bert2onnxq.convert import convert
    from bert2onnxq.inspect import runtime_graph
    from bert2onnxq.methods import convert_options
    from bert2onnxq.validate import batch_rule

    out = tmp_path / "q.onnx"
    plan = convert(str(tiny_onnx["classification"]), out, convert_options(bits=4, granularity="group", group_size=16,
                                                                          group_kernel="int8", act_calib="per-token"))["plan"]
    runtime = runtime_graph(out)
    assert runtime["linear_kernels"].get("int8") == len(plan.weights)
    assert runtime["per_token_quantizers"] == len({t.layer for t in plan.weights}) * 4  # Q/K/V share one
    assert runtime["dynamic_quantize_linear"] == 0 and runtime["float_matmul_on_dequantized_weights"] == 0
    assert batch_rule(out)[0] == 32
