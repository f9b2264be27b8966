"""Graph forms that make ONNX Runtime run the plan's kernel: exact against numerics, and the kernels really used.

* OCS rows folded back at session start (ocs-fold) == numerics.fold_ocs, bit for bit; same logits as the
  Concat + Gather form; no Gather / ScatterND / DequantizeLinear left after ORT's optimizations.
* group-wise weights with two-level scales (--group-kernel int8) == numerics.dequantize on their grid, bit for bit,
  on int8 GEMMs.
* --target cuda: weight-only DQ -> MatMul, no DynamicQuantizeLinear, no int2 reaching a DequantizeLinear.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import tiny_feeds

from bert2onnxq import numerics
from bert2onnxq.convert import convert
from bert2onnxq.errors import BadInput
from bert2onnxq.inspect import runtime_graph
from bert2onnxq.methods import convert_options
from bert2onnxq.numerics import QuantParams, fold_ocs, two_level_int8, two_level_params
from bert2onnxq.plan import QuantPlan

f32 = np.float32


def _run(path, names=None, feeds=None, disable_all=False):
    """Run `path` (with `names` added as graph outputs); ORT_ENABLE_ALL unless disable_all."""
    model = onnx.load(str(path))
    if names:
        model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    options = ort.SessionOptions()
    if disable_all:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(names, feeds or tiny_feeds())


# --- numerics -------------------------------------------------------------------------------------------------


def _channel_params(scale, zero_point=None, bits=3):
    return QuantParams(bits, zero_point is None, "channel", np.asarray(scale, f32), zero_point, 1, None, np.asarray(scale, f32))


def test_fold_ocs_by_hand():
    # K = 2 channels, rows 2 and 3 are copies of channel 0 (split twice)
    q = np.array([[1, -3], [2, 2], [1, -2], [-1, 3]], np.int8)
    folded = fold_ocs(q, _channel_params([0.5, 0.25]), np.array([0, 1, 0, 0]))
    np.testing.assert_array_equal(folded, [[1, -2], [2, 2]])
    # asymmetric: zero points are subtracted row by row before summing
    qa = np.array([[5, 1], [4, 4], [6, 0]], np.uint8)
    folded = fold_ocs(qa, _channel_params([0.5, 0.25], np.array([4, 2], np.uint8)), np.array([0, 1, 0]))
    np.testing.assert_array_equal(folded, [[1 + 2, -1 - 2], [0, 2]])


def test_fold_ocs_refuses_blocks_and_overflow():
    q = np.full((3, 2), 100, np.int8)
    assert fold_ocs(q, _channel_params([1.0, 1.0], bits=8), np.array([0, 1, 0])) is None  # 200 > 127
    blocked = QuantParams(4, True, "group", np.ones((1, 2), f32), None, 0, 2, np.ones((1, 2), f32))
    assert fold_ocs(np.zeros((3, 2), np.int8), blocked, np.array([0, 1, 0])) is None
    with pytest.raises(ValueError):
        fold_ocs(np.zeros((3, 2), np.int8), _channel_params([1.0, 1.0]), np.array([1, 0, 0]))


def test_two_level_params_by_hand():
    # 4-bit symmetric (q in -7..7): multipliers up to 127 // 7 = 18; blocks of 2 rows
    w = np.array([[6.3, 0.35], [1.0, -0.35], [0.7, 0.09], [-0.2, 0.0]])
    free = QuantParams(4, True, "group", np.array([[0.9, 0.05], [0.1, 0.09 / 7]], f32), None, 0, 2,
                       np.array([[6.3, 0.35], [0.7, 0.09]], f32))
    p = two_level_params(w, free)
    c = p.channel_scale
    # c = the largest block scale / 18, rounded up to a 16-bit significand: the largest block keeps m = 18
    np.testing.assert_array_equal(p.multiplier[0], [18, 18])
    assert np.all(c * 18 >= free.scale.max(axis=0)) and np.all(c * 18 <= free.scale.max(axis=0) * (1 + 2.0 ** -15))
    assert np.frexp(c.astype(np.float64))[0].tolist() == (np.ceil(np.frexp(c.astype(np.float64))[0] * 65536) / 65536).tolist()
    # column 0, block 1: 0.1 / 0.05 = 2 (floor = ceil); column 1, block 1: ratio 4.63 -> 4 or 5, the smaller error
    assert p.multiplier[1, 0] == 2 and p.multiplier[1, 1] in (4, 5)
    errors = {}
    for m in (4, 5):
        s_ = np.float64(c[1]) * m
        q = np.clip(np.rint(w[2:, 1] / s_), -7, 7)
        errors[m] = float(np.sum((w[2:, 1] - q * s_) ** 2))
    assert p.multiplier[1, 1] == min(errors, key=errors.get)
    np.testing.assert_array_equal(p.scale, (c[None, :] * p.multiplier).astype(f32))
    q = numerics.quantize(w, p)
    values = two_level_int8(q, p)
    np.testing.assert_array_equal(values, q.astype(np.int32) * np.repeat(p.multiplier, 2, axis=0))
    np.testing.assert_array_equal(numerics.dequantize(q, p), values.astype(f32) * c)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_two_level_is_exact_on_every_grid(symmetric, bits):
    """int8 values within int8, the float32 products exact (DQ(m (q - z), c) == DQ(q, c m, z)), short
    last blocks and all-zero blocks handled, and the weight error close to the free-scale grid's."""
    rng = np.random.default_rng(bits)
    w = rng.standard_t(4, (70, 24)) * rng.uniform(0.05, 2, 24)  # 70 rows: a short last block of 6
    w[:16, 5] = 0.0
    for fit in (numerics.lq_params, numerics.aciq_params):
        free = fit(w, bits, symmetric=symmetric, granularity="group", group_size=16)
        p = two_level_params(w, free)
        q = numerics.quantize(w, p)
        values = two_level_int8(q, p)
        assert values.dtype == np.int8 and np.abs(values.astype(np.int32)).max() <= 127
        qmin, qmax = numerics.int_range(bits, symmetric)
        span = max(-qmin, qmax) if symmetric else np.maximum(p.zero_point.astype(int), qmax - p.zero_point.astype(int))
        assert 1 <= p.multiplier.min() and (p.multiplier.astype(int) * span).max() <= 127  # every m * (q - z) fits int8
        if not symmetric:  # a block with a mid-range zero point takes more than the worst-case limit
            assert p.multiplier.max() > numerics.multiplier_limit(bits, symmetric)
        np.testing.assert_array_equal(numerics.dequantize(q, p), values.astype(f32) * p.channel_scale)
        free_mse = numerics.mse(w, numerics.dequantize(numerics.quantize(w, free), free))
        assert numerics.mse(w, numerics.dequantize(q, p)) < 1.1 * free_mse
    with pytest.raises(ValueError, match="group-wise"):
        two_level_params(w, numerics.lq_params(w, bits, granularity="channel"))


# --- graphs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits,symmetric", [(3, True), (3, False), (2, False)])
def test_ocs_fold_is_exact_and_runs_int8(tiny_onnx, tmp_path, bits, symmetric):
    src = str(tiny_onnx["classification"])
    options = convert_options(method="ocs", bits=bits, symmetric=symmetric, ocs_ratio=0.05)
    summary = convert(src, tmp_path / "fold.onnx", options)
    plan = summary["plan"]
    assert {t.ocs_form for t in plan.weights} == {"fold"} and {t.kernel for t in plan.weights} == {"int8"}
    assert plan.ocs_overhead()["extra_macs_per_token"] == 0 and plan.ocs_overhead()["extra_params"] > 0
    model = onnx.load(str(tmp_path / "fold.onnx"))
    onnx.checker.check_model(model, full_check=True)
    inits = {i.name: i for i in model.graph.initializer}
    t = plan.weights[0]
    assert list(inits[f"{t.name}_quantized"].dims) == [t.shape[0] + len(t.ocs_channels), t.shape[1]]  # W' on disk
    # the weight ORT folds at load is numerics' fold, times the per-channel scale
    names = [f"{t.name}_dequantized" for t in plan.weights]
    got = _run(tmp_path / "fold.onnx", names, disable_all=True)
    from bert2onnxq.onnx_io import load_ir, weight_array
    from bert2onnxq.quantize import weight_grid

    fp32 = load_ir(tiny_onnx["classification"])
    for t, value in zip(plan.weights, got):
        matrix, params, index = weight_grid(weight_array(fp32, t.name), t)
        expected = fold_ocs(numerics.quantize(matrix, params), params, index).astype(f32) * params.scale.astype(f32)
        np.testing.assert_array_equal(value, expected)
    # same logits as the Concat + Gather form, and ORT runs plain int8 GEMMs on it
    gather = QuantPlan.from_json(plan.to_json())
    for t in gather.weights:
        t.ocs_form = "gather"
    convert(src, tmp_path / "gather.onnx", plan=gather)
    gathers = [n for n in onnx.load(str(tmp_path / "gather.onnx")).graph.node if n.name.endswith("_ocs_gather")]
    assert len(gathers) == len(plan.weights)
    np.testing.assert_array_equal(_run(tmp_path / "fold.onnx")[0], _run(tmp_path / "gather.onnx")[0])
    rt = runtime_graph(tmp_path / "fold.onnx")
    assert rt["linear_kernels"].get("int8") == len(plan.weights)
    assert rt["dequantize_linear_at_run_time"] == 0 and rt["ocs_gathers"] == 0 and "ScatterND" not in rt["ops"]


def test_ocs_gather_only_reads_split_channels(tiny_onnx, tmp_path):
    """8-bit OCS sums do not fit int8: Concat(x, Gather(x, split channels)) on the uint8 activation."""
    summary = convert(str(tiny_onnx["classification"]), tmp_path / "o.onnx", convert_options(method="ocs", bits=8, ocs_ratio=0.05))
    plan = summary["plan"]
    assert {t.ocs_form for t in plan.weights} == {"gather"}
    model = onnx.load(str(tmp_path / "o.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    for t in plan.weights:
        index = onnx.numpy_helper.to_array(inits[f"{t.name}_ocs_index"])
        assert index.tolist() == t.ocs_channels  # only the split channels are gathered
    concat = [n for n in model.graph.node if n.name.endswith("_ocs_concat")]
    producers = {o: n for n in model.graph.node for o in n.output}
    assert concat and all(producers[n.input[0]].op_type == "DynamicQuantizeLinear" for n in concat)  # on uint8
    rt = runtime_graph(tmp_path / "o.onnx")
    assert rt["linear_kernels"].get("int8") == len(plan.weights) and rt["dequantize_linear_at_run_time"] == 0


@pytest.mark.parametrize("symmetric,bits,group_size,pack", [(True, 4, 16, False), (False, 4, 16, False),
                                                          (True, 3, 24, True), (False, 2, 16, False)])
def test_group_two_level_is_exact_and_runs_int8(tiny_onnx, tmp_path, symmetric, bits, group_size, pack):
    src = str(tiny_onnx["classification"])
    options = convert_options(bits=bits, granularity="group", group_size=group_size, symmetric=symmetric,
                              group_kernel="int8", pack_bits=pack)
    summary = convert(src, tmp_path / "tl.onnx", options)
    plan = summary["plan"]
    assert {t.kernel for t in plan.weights} == {"int8-two-level"}
    model = onnx.load(str(tmp_path / "tl.onnx"))
    onnx.checker.check_model(model, full_check=True)
    stored = {i.name: i for i in model.graph.initializer if i.name in {f"{t.name}_quantized" for t in plan.weights}}
    want = onnx.TensorProto.UINT8 if pack else {(True, 4): onnx.TensorProto.INT4, (False, 4): onnx.TensorProto.UINT4,
                                                (False, 2): onnx.TensorProto.UINT2}[symmetric, bits]
    assert {i.data_type for i in stored.values()} == {want}  # group-wise bits on disk, no int8 copy
    names = [f"{t.name}_dequantized" for t in plan.weights]
    got = _run(tmp_path / "tl.onnx", names, disable_all=True)
    from bert2onnxq.onnx_io import load_ir, weight_array
    from bert2onnxq.quantize import weight_grid

    fp32 = load_ir(tiny_onnx["classification"])
    for t, value in zip(plan.weights, got):
        matrix, params, _ = weight_grid(weight_array(fp32, t.name), t)
        q = numerics.quantize(matrix, params)
        np.testing.assert_array_equal(value, numerics.dequantize(q, params))  # the group-wise grid, exactly
        np.testing.assert_array_equal(value, two_level_int8(q, params).astype(f32) * params.channel_scale)
    rt = runtime_graph(tmp_path / "tl.onnx")
    assert rt["linear_kernels"].get("int8") == len(plan.weights) and "nbits" not in rt["linear_kernels"]
    assert rt["dequantize_linear_at_run_time"] == 0  # the multiplier chain folded at load
    # same weights through ORT's optimizations, on 8-bit dynamic activations: logits close to the float graph
    a, b = _run(tmp_path / "tl.onnx")[0], _run(tmp_path / "tl.onnx", disable_all=True)[0]
    assert np.abs(a - b).max() < 0.05 * np.abs(b).max() + 1e-3


def test_default_graphs_run_on_the_planned_kernels(tiny_onnx, tmp_path):
    src = str(tiny_onnx["classification"])
    for options, kernel, ort_kernel in ((convert_options(), "int8", "int8"),
                                        (convert_options(bits=4), "int8", "int8"),
                                        (convert_options(bits=4, granularity="group", group_size=16), "matmulnbits", "nbits")):
        summary = convert(src, tmp_path / "m.onnx", options)
        assert {t.kernel for t in summary["plan"].weights} == {kernel}
        rt = runtime_graph(tmp_path / "m.onnx")
        assert rt["linear_kernels"].get(ort_kernel) == 12 and rt["dequantize_linear_at_run_time"] == 0


@pytest.mark.parametrize("bits,granularity", [(3, "channel"), (2, "channel"), (4, "neuron-group")])
def test_sub_byte_asymmetric_weights_run_signed(tiny_onnx, tmp_path, bits, granularity):
    """q - zero point is taken at load: ORT's int8 GEMM gets signed weights with no zero point (its fast
    u8s8 path), and the dequantized values are still exactly (q - zp) * scale."""
    src = str(tiny_onnx["classification"])
    summary = convert(src, tmp_path / "a.onnx", convert_options(bits=bits, granularity=granularity, groups=3,
                                                               symmetric=False))
    plan = summary["plan"]
    assert {t.symmetric for t in plan.weights} == {False}
    model = onnx.load(str(tmp_path / "a.onnx"))
    names = [f"{t.name}_dequantized" for t in plan.weights]
    dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in names]
    assert len(dqs) == 12 and all(len(n.input) == 2 for n in dqs)  # no zero point left at the DQ
    fp32 = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(src).graph.initializer}
    got = _run(tmp_path / "a.onnx", names, disable_all=True)
    for t, value in zip(plan.weights, got):
        p = numerics.lq_params(fp32[t.name], bits, symmetric=False, granularity=t.granularity,
                               group_size=t.group_size, groups=t.groups, heads=t.heads)
        np.testing.assert_array_equal(value, numerics.dequantize(numerics.quantize(fp32[t.name], p), p))
    rt = runtime_graph(tmp_path / "a.onnx")
    assert rt["linear_kernels"].get("int8") == 12 and rt["dequantize_linear_at_run_time"] == 0
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(tmp_path / "a.onnx"), so, providers=["CPUExecutionProvider"])
    weights = {i.name: i.data_type for i in onnx.load(str(tmp_path / "opt.onnx")).graph.initializer}
    int8_gemm_weights = [n.input[1] for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node
                         if n.op_type in ("DynamicQuantizeMatMul", "MatMulIntegerToFloat")]
    assert len(int8_gemm_weights) == 12 and {weights[w] for w in int8_gemm_weights} == {onnx.TensorProto.INT8}


@pytest.mark.parametrize("bits,granularity", [(2, "group"), (2, "channel"), (4, "channel"), (8, "channel")])
def test_cuda_target_writes_weight_only_native_patterns(tiny_onnx, tmp_path, bits, granularity):
    """CUDA has no DynamicQuantizeLinear and no int2 DequantizeLinear/MatMulNBits: DQ(int4/int8) -> MatMul only.
    No GPU here: the structure is checked, and the graph is run on the CPU provider for its numerics."""
    summary = convert(str(tiny_onnx["classification"]), tmp_path / "c.onnx",
                      convert_options(bits=bits, granularity=granularity, group_size=16, target="cuda", act_bits=None))
    plan = summary["plan"]
    assert plan.target == "cuda" and {t.kernel for t in plan.weights} == {"matmulnbits"}
    model = onnx.load(str(tmp_path / "c.onnx"))
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"DynamicQuantizeLinear", "QuantizeLinear", "MatMulInteger", "ScatterND"}
    types = {i.name: i.data_type for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.output[0].endswith("_dequantized"):
            src_type = types.get(n.input[0]) or {a.name: a.i for a in producers[n.input[0]].attribute}["to"]
            assert src_type in (onnx.TensorProto.INT4, onnx.TensorProto.INT8,  # never (u)int2 at the DQ
                                onnx.TensorProto.UINT4, onnx.TensorProto.UINT8)
            consumers = [m for m in model.graph.node if n.output[0] in m.input]
            assert [m.op_type for m in consumers] == ["MatMul"] and consumers[0].input[1] == n.output[0]
    stored = {types[f"{t.name}_quantized"] for t in plan.weights}
    signed = bits >= 5  # the default grid: asymmetric (unsigned containers) at 2-4 bits
    expected = {2: ("INT2", "UINT2"), 4: ("INT4", "UINT4"), 8: ("INT8", "UINT8")}[bits][0 if signed else 1]
    assert stored == {getattr(onnx.TensorProto, expected)}
    names = [f"{t.name}_dequantized" for t in plan.weights]
    got = _run(tmp_path / "c.onnx", names, disable_all=True)
    from bert2onnxq.onnx_io import load_ir, weight_array
    from bert2onnxq.quantize import weight_grid

    fp32 = load_ir(tiny_onnx["classification"])
    for t, value in zip(plan.weights, got):
        matrix, params, _ = weight_grid(weight_array(fp32, t.name), t)
        np.testing.assert_array_equal(value, numerics.dequantize(numerics.quantize(matrix, params), params))
    rt = runtime_graph(tmp_path / "c.onnx")  # CPU provider: the same DQ -> MatMulNBits fusion CUDA registers
    assert rt["linear_kernels"].get("nbits") == 12 and all(m["bits"] in (4, 8) for m in rt["matmulnbits"])


def test_target_and_kernel_errors(tiny_onnx, tmp_path):
    src = str(tiny_onnx["classification"])
    with pytest.raises(BadInput, match="weight-only"):
        convert(src, tmp_path / "a.onnx", convert_options(target="cuda"))  # 8-bit activations on CUDA
    with pytest.raises(BadInput, match="--target cpu and --act-bits 8"):
        convert(src, tmp_path / "a.onnx", convert_options(granularity="group", group_kernel="int8", act_bits=None))
    with pytest.raises(BadInput, match="unknown target"):
        convert(src, tmp_path / "a.onnx", convert_options(target="tpu"))
    plan = convert(src, tmp_path / "ok.onnx", convert_options())["plan"]
    plan.target, plan.activations.bits = "cuda", None
    with pytest.raises(BadInput, match="int8 GEMM"):
        convert(src, tmp_path / "a.onnx", plan=QuantPlan.from_json(plan.to_json()))
    assert not (tmp_path / "a.onnx").exists()


def test_old_plans_without_kernels_get_the_default(tiny_onnx, tmp_path):
    import json

    plan = convert(str(tiny_onnx["classification"]), tmp_path / "a.onnx", convert_options(bits=4))["plan"]
    raw = json.loads(plan.to_json())
    raw.pop("target")
    for t in raw["weights"]:
        t.pop("kernel"), t.pop("ocs_form")
    again = convert(str(tiny_onnx["classification"]), tmp_path / "b.onnx", plan=QuantPlan.from_json(json.dumps(raw)))["plan"]
    assert again.target == "cpu" and {t.kernel for t in again.weights} == {"int8"}
    a = {i.name: i.raw_data for i in onnx.load(str(tmp_path / "a.onnx")).graph.initializer}
    b = {i.name: i.raw_data for i in onnx.load(str(tmp_path / "b.onnx")).graph.initializer}
    assert a == b
