"""bert2onnxq.numerics: ranges, hand-computed quantize/dequantize, packing, and ONNX DequantizeLinear parity."""

from __future__ import annotations

import numpy as np
import pytest

from bert2onnxq.numerics import (container, container_bits, container_bytes, dequantize, expand_scale,
                                 ideal_bytes, int_range, lq_params, mse, pack, quantize, unpack, weight_ranges)

f32 = np.float32

# Hand-made weights chosen so every scale is a power of two (exact in float32) and some values
# land exactly on .5 steps, which rint must round half to even.
S = np.array([[1.75, -0.875, 0.3, -3.5],
              [-0.6, 0.0625, -0.875, 1.25]], f32)          # [K=2, N=4], symmetric cases
A = np.array([[-1.25, 0.5, -0.9375, 1.125],
              [2.5, 1.875, -0.3, -0.75]], f32)             # [K=2, N=4], asymmetric cases
GS = np.array([[1.75, -0.3], [-0.6, 0.875], [0.25, 0.0625], [-3.5, 0.4375]], f32)   # [K=4, N=2], groups of 3
GA = np.array([[-1.25, 0.5], [0.6, 1.875], [2.5, 1.0], [-0.9375, 3.75]], f32)


def test_int_range_and_container():
    assert [int_range(b, True) for b in range(2, 9)] == [(-1, 1), (-3, 3), (-7, 7), (-15, 15), (-31, 31),
                                                          (-63, 63), (-127, 127)]
    assert [int_range(b, False) for b in range(2, 9)] == [(0, 3), (0, 7), (0, 15), (0, 31), (0, 63), (0, 127),
                                                           (0, 255)]
    assert [container(b, True) for b in range(2, 9)] == ["int2", "int4", "int4", "int8", "int8", "int8", "int8"]
    assert [container(b, False) for b in range(2, 9)] == ["uint2", "uint4", "uint4"] + ["uint8"] * 4
    assert [container_bits(b) for b in range(2, 9)] == [2, 4, 4, 8, 8, 8, 8]
    for bad in (1, 9, 0, 2.0, True):
        with pytest.raises(ValueError):
            container(bad, True)
        with pytest.raises(ValueError):
            int_range(bad, False)


def _check(w, p, q_want, deq_want):
    q = quantize(w, p)
    assert q.dtype == (np.int8 if p.symmetric else np.uint8)
    np.testing.assert_array_equal(q, np.array(q_want))
    deq = dequantize(q, p)
    assert deq.dtype == np.float32
    np.testing.assert_array_equal(deq, np.array(deq_want, f32))


def test_symmetric_tensor():
    p = lq_params(S, 4, granularity="tensor")
    assert p.scale.shape == () and p.scale == f32(0.5) and p.zero_point is None and p.axis is None
    assert p.clip == f32(3.5)
    for arr in (p.scale, p.clip, p.lo, p.hi, lq_params(S, 4, symmetric=False, granularity="tensor").zero_point):
        assert isinstance(arr, np.ndarray) and arr.shape == ()
    # 1.75/0.5 = 3.5 -> 4, 2.5 -> 2, 0.125 -> 0 (half to even)
    _check(S, p, [[4, -2, 1, -7], [-1, 0, -2, 2]], [[2.0, -1.0, 0.5, -3.5], [-0.5, 0.0, -1.0, 1.0]])


def test_symmetric_channel():
    p = lq_params(S, 4)
    np.testing.assert_array_equal(p.scale, f32([0.25, 0.125, 0.125, 0.5]))
    assert p.axis == 1 and p.block_size is None and p.zero_point is None
    np.testing.assert_array_equal(p.clip, f32([1.75, 0.875, 0.875, 3.5]))
    _check(S, p, [[7, -7, 2, -7], [-2, 0, -7, 2]], [[1.75, -0.875, 0.25, -3.5], [-0.5, 0.0, -0.875, 1.0]])


def test_symmetric_group_with_tail():
    p = lq_params(GS, 4, granularity="group", group_size=3)   # rows 0..2, then row 3 alone
    np.testing.assert_array_equal(p.scale, f32([[0.25, 0.125], [0.5, 0.0625]]))
    assert p.axis == 0 and p.block_size == 3
    _check(GS, p, [[7, -2], [-2, 7], [1, 0], [-7, 7]],
           [[1.75, -0.25], [-0.5, 0.875], [0.25, 0.0], [-3.5, 0.4375]])


def test_asymmetric_tensor():
    p = lq_params(A, 4, symmetric=False, granularity="tensor")
    assert p.scale == f32(0.25) and p.zero_point.dtype == np.uint8 and p.zero_point == 5
    assert (p.lo, p.hi, p.clip) == (f32(-1.25), f32(2.5), f32(1.875))
    _check(A, p, [[0, 7, 1, 9], [15, 13, 4, 2]], [[-1.25, 0.5, -1.0, 1.0], [2.5, 2.0, -0.25, -0.75]])


def test_asymmetric_channel_includes_zero():
    p = lq_params(A, 4, symmetric=False)
    # column 1 is all positive and column 2 all negative: the range is widened to include 0
    np.testing.assert_array_equal(p.scale, f32([0.25, 0.125, 0.0625, 0.125]))
    np.testing.assert_array_equal(p.zero_point, np.array([5, 0, 15, 6], np.uint8))
    np.testing.assert_array_equal(p.lo, f32([-1.25, 0.0, -0.9375, -0.75]))
    _check(A, p, [[0, 4, 0, 15], [15, 15, 10, 0]], [[-1.25, 0.5, -0.9375, 1.125], [2.5, 1.875, -0.3125, -0.75]])


def test_asymmetric_group_with_tail():
    p = lq_params(GA, 4, symmetric=False, granularity="group", group_size=3)
    np.testing.assert_array_equal(p.scale, f32([[0.25, 0.125], [0.0625, 0.25]]))
    np.testing.assert_array_equal(p.zero_point, np.array([[5, 0], [15, 0]], np.uint8))
    _check(GA, p, [[0, 4], [7, 15], [15, 8], [0, 15]], [[-1.25, 0.5], [0.5, 1.875], [2.5, 1.0], [-0.9375, 3.75]])


def test_weight_ranges_and_bad_input():
    lo, hi = weight_ranges(GS, "group", 3)
    np.testing.assert_array_equal(lo, f32([[-0.6, -0.3], [-3.5, 0.4375]]))
    np.testing.assert_array_equal(hi, f32([[1.75, 0.875], [-3.5, 0.4375]]))
    lo, hi = weight_ranges(S, "tensor")
    assert lo.shape == () and (lo, hi) == (f32(-3.5), f32(1.75))
    for kw in ({"granularity": "row"}, {"granularity": "group"}, {"granularity": "group", "group_size": 0}):
        with pytest.raises(ValueError):
            lq_params(S, 4, **kw)
    with pytest.raises(ValueError):
        lq_params(np.ones(3, f32), 4)                    # channel needs [K, N]
    with pytest.raises(ValueError):
        lq_params(np.array([[np.nan, 1.0]], f32), 4)


def test_all_zero_channel_and_clipping():
    w = np.array([[0.0, 1.0], [0.0, -2.0]], f32)
    p = lq_params(w, 8)
    assert p.scale[0] == 1.0                             # degenerate range: scale 1 keeps zeros exact
    np.testing.assert_array_equal(dequantize(quantize(w, p), p)[:, 0], [0.0, 0.0])
    # Values beyond the clip saturate at +-qmax (2-bit narrow: [-1, 1])
    p2 = lq_params(np.array([[1.0], [-1.0]], f32), 2, granularity="tensor")
    np.testing.assert_array_equal(quantize(np.array([[5.0], [-5.0]], f32), p2), [[1], [-1]])


def test_expand_scale():
    s = np.array([[1.0, 2.0], [3.0, 4.0]], f32)
    np.testing.assert_array_equal(expand_scale(s, (3, 2), 0, 2), [[1, 2], [1, 2], [3, 4]])
    np.testing.assert_array_equal(expand_scale(f32([1, 2]), (2, 2), 1, None), [[1, 2], [1, 2]])
    np.testing.assert_array_equal(expand_scale(f32(3), (1, 2), None, None), [[3, 3]])
    with pytest.raises(ValueError):
        expand_scale(s, (5, 2), 0, 2)


def test_pack_layout_by_hand():
    np.testing.assert_array_equal(pack(np.array([1, -2, 7], np.int8), 4), [0xE1, 0x07])
    np.testing.assert_array_equal(pack(np.array([1, -1, 0, 1, -1], np.int8), 2), [0b01001101, 0b11])
    np.testing.assert_array_equal(pack(np.array([3, 0, 2], np.uint8), 2), [0b100011])
    np.testing.assert_array_equal(pack(np.array([-1, 5], np.int8), 8), [0xFF, 5])
    with pytest.raises(ValueError):
        pack(np.array([16, -9], np.int16), 3)         # neither fits a 4-bit container
    with pytest.raises(ValueError):
        pack(np.array([0.5]), 4)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("count", [1, 7, 13, 1001])
def test_pack_round_trip(bits, signed, count):
    rng = np.random.default_rng(count * 10 + bits)
    cb = container_bits(bits)
    lo, hi = (-(1 << (cb - 1)), (1 << (cb - 1)) - 1) if signed else (0, (1 << cb) - 1)
    q = rng.integers(lo, hi + 1, size=count).astype(np.int8 if signed else np.uint8)
    packed = pack(q, bits)
    assert packed.dtype == np.uint8 and packed.size == container_bytes(count, bits)
    out = unpack(packed, bits, count, signed)
    assert out.dtype == q.dtype
    np.testing.assert_array_equal(out, q)


def test_sizes_and_mse():
    assert ideal_bytes(1000, 3, 10) == 375 + 40
    assert ideal_bytes(1000, 4, 10, scale_bytes=2, zero_point_bits=4) == 500 + 20 + 5
    assert container_bytes(5, 3) == 3 and container_bytes(5, 2) == 2 and container_bytes(5, 6) == 5
    assert mse(f32([1, 2]), f32([1, 4])) == 2.0


# --- parity with ONNX DequantizeLinear (onnx.reference and onnxruntime), initializers from pack() ---

def _dql_model(q, p, opset):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    elem = getattr(TensorProto, p.container.upper())
    x = helper.make_tensor("x", elem, list(q.shape), pack(q, p.bits).tobytes(), raw=True)
    inits = [x, numpy_helper.from_array(np.asarray(p.scale, f32), "scale")]
    inputs = ["x", "scale"]
    if p.zero_point is not None:
        zp = np.asarray(p.zero_point)
        inits.append(helper.make_tensor("zp", elem, list(zp.shape), pack(zp, p.bits).tobytes(), raw=True))
        inputs.append("zp")
    attrs = {} if p.axis is None else {"axis": p.axis}
    if p.block_size is not None:
        attrs["block_size"] = p.block_size
    node = helper.make_node("DequantizeLinear", inputs, ["y"], **attrs)
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(q.shape))
    graph = helper.make_graph([node], "dql", [], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=10 if opset <= 21 else 11)
    onnx.checker.check_model(model)
    return model


CASES = [  # (bits, symmetric, granularity, group_size, shape, opset)
    (8, True, "tensor", None, (5, 3), 21),
    (4, True, "channel", None, (7, 5), 21),
    (4, True, "group", 16, (37, 5), 21),      # K tail 5, odd element count
    (3, True, "group", 16, (37, 5), 21),      # 3-bit in an int4 container
    (4, False, "channel", None, (7, 5), 21),
    (4, False, "group", 16, (37, 3), 21),     # uint4 with packed uint4 zero points (odd count)
    (6, False, "group", 16, (37, 3), 21),
    (2, True, "channel", None, (7, 5), 25),
    (2, True, "group", 16, (37, 5), 25),
    (2, False, "group", 16, (37, 3), 25),
]


@pytest.mark.parametrize("bits,symmetric,gran,gs,shape,opset", CASES)
def test_dequantize_matches_onnx(bits, symmetric, gran, gs, shape, opset):
    w = np.random.default_rng(sum(shape) + bits).normal(0.1, 1.0, size=shape).astype(f32)
    p = lq_params(w, bits, symmetric=symmetric, granularity=gran, group_size=gs)
    q = quantize(w, p)
    ours = dequantize(q, p)
    model = _dql_model(q, p, opset)

    from onnx.reference import ReferenceEvaluator
    try:
        ref = ReferenceEvaluator(model).run(None, {})[0]
    except Exception as e:  # pragma: no cover - depends on the installed onnx
        pytest.skip(f"onnx.reference cannot run {p.container} DequantizeLinear at opset {opset}: {e}")
    np.testing.assert_array_equal(ref, ours)

    ort = pytest.importorskip("onnxruntime")
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:  # pragma: no cover - depends on the installed onnxruntime
        pytest.skip(f"onnxruntime cannot load {p.container} DequantizeLinear at opset {opset}: {e}")
    np.testing.assert_array_equal(sess.run(None, {})[0], ours)


def test_numerics_imports_neither_onnx_nor_torch():
    import subprocess
    import sys
    code = ("import sys, bert2onnxq.numerics; "
            "bad = [m for m in ('onnx', 'onnxruntime', 'torch') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
