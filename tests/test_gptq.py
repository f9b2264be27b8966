"""numerics.gptq on plain arrays: nearest when H = I, lower output error than nearest on correlated
inputs on every grid, integers always on the plan's grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
from stsb_data import stsb_calibrate

from bert2onnxq.numerics import (
    aciq_params,
    dequantize,
    int_range,
    lq_params,
    ocs_params,
    quantize,
)
from bert2onnxq.numerics.gptq import (
    GPTQSettings,
    damped,
    expand_moment,
    gptq_quantize,
    gptq_round,
    output_error,
    upper_cholesky_of_inverse,
    within_cells,
)

K, N = 64, 48


def correlated_inputs(rng, tokens=2000, k=K):
    """Token activations with strongly correlated channels and a few outlier channels, as in BERT."""
    mix = rng.normal(size=(k, k)) * 0.3 + np.eye(k)
    x = rng.normal(size=(tokens, k)) @ mix
    x[:, :3] *= 6
    return x


def grids(w):
    """Every kind of grid a plan can give: (label, matrix, params, OCS gather index or None)."""
    yield "tensor sym", w, lq_params(w, 4, symmetric=True, granularity="tensor"), None
    yield "channel sym", w, lq_params(w, 3, symmetric=True, granularity="channel"), None
    yield "channel asym", w, lq_params(w, 3, symmetric=False, granularity="channel"), None
    yield "group-16 asym", w, lq_params(w, 3, symmetric=False, granularity="group", group_size=16), None
    yield "group-16 sym 2-bit", w, lq_params(w, 2, symmetric=True, granularity="group", group_size=16), None
    yield "neuron-group", w, lq_params(w, 3, symmetric=False, granularity="neuron-group", groups=6, heads=None), None
    yield "aciq clipped", w, aciq_params(w, 3, symmetric=False, granularity="channel"), None
    split, params = ocs_params(w, 0.05, 3, method="lq", symmetric=False, granularity="channel")
    yield "ocs expanded", split.weight, params, split.index


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("block", [1, 7, 128])
def test_identity_hessian_is_nearest_rounding(act_order, block):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(K, N)).astype(np.float32)
    for label, matrix, params, _ in grids(w):
        h = np.eye(matrix.shape[0])
        got = gptq_quantize(matrix, h, params, GPTQSettings(damp=0.01, block=block, act_order=act_order))
        np.testing.assert_array_equal(got, quantize(matrix, params), err_msg=label)


def test_compensated_weights_round_to_the_integers_and_latent_keeps_their_place_in_the_cell():
    rng = np.random.default_rng(5)
    w = (rng.normal(size=(K, N)) * 0.05).astype(np.float32)
    x = correlated_inputs(rng)
    for label, matrix, params, index in grids(w):
        if index is not None:
            continue
        # H = I: no compensation, the weights are W itself
        q, updated = gptq_round(matrix, np.eye(K), params)
        np.testing.assert_array_equal(updated, matrix.astype(np.float64), err_msg=label)
        q, updated = gptq_round(matrix, x.T @ x, params)
        np.testing.assert_array_equal(q, gptq_quantize(matrix, x.T @ x, params), err_msg=label)
        np.testing.assert_array_equal(quantize(updated, params), q, err_msg=label)  # nearest rounding of each
        assert np.abs(updated - matrix).max() > 0.1 * np.abs(matrix).max(), label  # compensation moved them
        latent = within_cells(q, updated, params).astype(np.float32)
        np.testing.assert_array_equal(quantize(latent, params), q, err_msg=label)
        # inside the grid's range the latent is the compensated weight; clipped ones sit at the cell's edge
        scale = np.broadcast_to(dequantize(np.ones_like(q), params) - dequantize(np.zeros_like(q), params), q.shape)
        inside = np.abs(updated - dequantize(q, params)) < 0.49 * np.abs(scale)
        assert inside.mean() > 0.9, label
        np.testing.assert_allclose(latent[inside], updated[inside], rtol=0, atol=1e-6, err_msg=label)
        assert np.all(np.abs(latent - dequantize(q, params)) <= 0.49 * np.abs(scale) + 1e-7), label


def test_lower_output_error_than_nearest_on_every_grid():
    rng = np.random.default_rng(1)
    w = (rng.normal(size=(K, N)) * 0.05).astype(np.float32)
    x = correlated_inputs(rng)
    h = x.T @ x
    for label, matrix, params, index in grids(w):
        hm = h if index is None else expand_moment(h, index)
        for act_order in (False, True):
            q = gptq_quantize(matrix, hm, params, GPTQSettings(act_order=act_order))
            lo, hi = int_range(params.bits, params.symmetric)
            assert q.dtype == quantize(matrix, params).dtype and q.min() >= lo and q.max() <= hi, label
            nearest = output_error(matrix, dequantize(quantize(matrix, params), params), hm)
            ours = output_error(matrix, dequantize(q, params), hm)
            assert ours < 0.9 * nearest, (label, act_order, ours, nearest)
            # the error measured through the real inputs agrees with the H form
            xm = x if index is None else x[:, index]
            direct = np.sum((xm @ (matrix - dequantize(q, params))) ** 2) / np.sum((xm @ matrix) ** 2)
            assert direct == pytest.approx(ours, rel=1e-6)


def test_expand_moment_matches_the_expanded_inputs():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, 5))
    index = np.array([0, 1, 2, 3, 4, 2, 2])
    factor = np.array([1, 1, 0.5, 1, 1, 0.5, 0.25])
    xe = x[:, index] * factor
    np.testing.assert_allclose(expand_moment(x.T @ x, index, factor), xe.T @ xe, rtol=1e-12)


def test_upper_cholesky_and_damping():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 8))
    h = damped(x.T @ x, 0.01)
    u = upper_cholesky_of_inverse(h)
    np.testing.assert_allclose(u.T @ u, np.linalg.inv(h), rtol=1e-9, atol=1e-12)
    assert np.allclose(u, np.triu(u))
    dead = np.zeros((3, 3))
    dead[0, 0] = 4.0
    hd = damped(dead, 0.1)  # inputs 1 and 2 never fire: unit diagonal, still invertible
    assert np.all(np.linalg.eigvalsh(hd) > 0) and hd[1, 1] == pytest.approx(1 + 0.1 * 2.0)


def test_bad_shapes():
    w = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="H must be"):
        gptq_quantize(w, np.eye(3), lq_params(w, 4))


# --- convert --rounding gptq on the tiny regression BERT (synthetic STS-B data: no ../shared needed) --------


@pytest.mark.parametrize("kw", [dict(method="lq", bits=3), dict(method="aciq", bits=2, granularity="group", group_size=16),
                                dict(method="ocs", bits=3, ocs_ratio=0.1, clip="aciq"),
                                dict(method="ocs", bits=4, ocs_ratio=0.1, ocs_activations=True),
                                dict(method="lq", bits=3, granularity="neuron-group", groups=6, symmetric=False)])
def test_gptq_convert_lowers_every_output_error_and_keeps_the_graph(stsb, tmp_path, kw):
    import onnx

    from bert2onnxq.convert import convert
    from bert2onnxq.methods import convert_options
    from bert2onnxq.plan import QuantPlan

    fp32 = str(stsb["fp32"])
    near = convert(fp32, tmp_path / "n.onnx", convert_options(**kw), calibrate=stsb_calibrate(stsb))
    got = convert(fp32, tmp_path / "g.onnx", convert_options(rounding="gptq", **kw), calibrate=stsb_calibrate(stsb),
                  plan_out=tmp_path / "plan.json")
    plan = got["plan"]
    assert plan.rounding["method"] == "gptq" and plan.rounding["samples"] == 128 and plan.rounding["tokens"] > 0
    assert "gptq rounding" in plan.summary()
    for t in plan.weights:  # every weight: the output error on the calibration inputs went down
        assert t.stats["out_err"] < t.stats["out_err_nearest"], t.name
    # the same graph (same kernels, same latency): only the integers differ
    a, b = onnx.load(str(tmp_path / "n.onnx")), onnx.load(str(tmp_path / "g.onnx"))
    assert [(n.op_type, list(n.input)) for n in a.graph.node] == [(n.op_type, list(n.input)) for n in b.graph.node]
    assert [x.ByteSize() for x in a.graph.initializer] == [x.ByteSize() for x in b.graph.initializer]
    assert near["plan"].ideal_bytes() == pytest.approx(plan.ideal_bytes())
    assert any(x.raw_data != y.raw_data for x, y in zip(a.graph.initializer, b.graph.initializer))
    # --plan replay with the same calibration data gives the same integers
    again = convert(fp32, tmp_path / "again.onnx", plan=QuantPlan.load(tmp_path / "plan.json"), calibrate=stsb_calibrate(stsb))
    c = onnx.load(str(tmp_path / "again.onnx"))
    assert [x.SerializeToString() for x in c.graph.initializer] == [x.SerializeToString() for x in b.graph.initializer]
    assert again["plan"].rounding["tokens"] == plan.rounding["tokens"]


@pytest.mark.parametrize("kw", [dict(method="lq", bits=3), dict(method="ocs", bits=2, granularity="group", group_size=16,
                                                                ocs_ratio=0.1, ocs_activations=True),
                                dict(method="aciq", bits=3, granularity="neuron-group", groups=6, symmetric=False),
                                dict(method="lq", bits=4, granularity="group", group_size=16, group_kernel="int8")])
def test_gptq_grid_search_lowers_the_output_error_and_replays(stsb, tmp_path, kw):
    import onnx

    from bert2onnxq.convert import convert
    from bert2onnxq.methods import convert_options
    from bert2onnxq.plan import QuantPlan

    fp32 = str(stsb["fp32"])
    fixed = convert(fp32, tmp_path / "f.onnx", convert_options(rounding="gptq", gptq_grid="fixed", **kw),
                    calibrate=stsb_calibrate(stsb))["plan"]
    got = convert(fp32, tmp_path / "s.onnx", convert_options(rounding="gptq", gptq_grid="search", **kw),
                  calibrate=stsb_calibrate(stsb), plan_out=tmp_path / "plan.json")["plan"]
    assert got.rounding["grid"] == "search" and fixed.rounding["grid"] == "fixed"

    # per weight: GPTQ on the method's grid is the fixed run's, and the searched grid is kept only when it is better
    chosen = []
    for a, b in zip(fixed.weights, got.weights):
        assert b.stats["out_err_method_grid"] == pytest.approx(a.stats["out_err"], rel=1e-12), b.name
        assert b.stats["out_err"] <= b.stats["out_err_method_grid"], b.name
        assert (b.stats["out_err"] < b.stats["out_err_method_grid"]) == (b.stats["grid"] == "searched"), b.name
        if kw["method"] == "lq":  # from LQ's own range the search only shrinks (a clipped method's may widen)
            assert (b.stats["scale_mean"] < a.stats["scale_mean"]) == (b.stats["grid"] == "searched"), b.name
        chosen.append(b.stats["grid"])
    assert "searched" in chosen  # the search wins somewhere on every grid of this model
    again = convert(fp32, tmp_path / "again.onnx", plan=QuantPlan.load(tmp_path / "plan.json"), calibrate=stsb_calibrate(stsb))
    b, c = onnx.load(str(tmp_path / "s.onnx")), onnx.load(str(tmp_path / "again.onnx"))
    assert [x.SerializeToString() for x in c.graph.initializer] == [x.SerializeToString() for x in b.graph.initializer]
    assert again["plan"].rounding["grid"] == "search"


def test_gptq_bad_input(stsb, tmp_path):
    from bert2onnxq.convert import convert
    from bert2onnxq.errors import BadInput
    from bert2onnxq.methods import convert_options
    from bert2onnxq.plan import QuantPlan

    fp32 = str(stsb["fp32"])
    with pytest.raises(BadInput, match="--rounding gptq needs calibration samples"):
        convert(fp32, tmp_path / "a.onnx", convert_options(bits=3, rounding="gptq"))
    with pytest.raises(BadInput, match="no weight to round"):
        convert(fp32, tmp_path / "b.onnx", convert_options(bits=3, rounding="gptq", skip=("encoder",)),
                calibrate=stsb_calibrate(stsb))
    with pytest.raises(BadInput, match="unknown --gptq-grid"):
        convert(fp32, tmp_path / "c.onnx", convert_options(rounding="gptq", gptq_grid="best"))
    with pytest.raises(BadInput, match="unknown rounding"):
        convert(fp32, tmp_path / "c.onnx", convert_options(rounding="best"))
    convert(fp32, tmp_path / "d.onnx", convert_options(bits=3, rounding="gptq"), calibrate=stsb_calibrate(stsb),
            plan_out=tmp_path / "plan.json")
    with pytest.raises(BadInput, match="needs calibration samples"):  # replay needs the data again
        convert(fp32, tmp_path / "e.onnx", plan=QuantPlan.load(tmp_path / "plan.json"))
    old = QuantPlan.load(tmp_path / "plan.json")  # a plan from before the shuffled draw cannot be replayed as it was
    del old.rounding["draw"]
    with pytest.raises(BadInput, match="first examples in file order"):
        convert(fp32, tmp_path / "f.onnx", plan=old, calibrate=stsb_calibrate(stsb))
    assert not any((tmp_path / n).exists() for n in ("a.onnx", "e.onnx", "f.onnx"))


def test_cli_rounding_gptq(stsb, tmp_path):
    from conftest import assert_one_line_error, run_cli

    out = tmp_path / "g.onnx"
    proc = run_cli("convert", "--model", str(stsb["fp32"]), "--bits", "3", "--rounding", "gptq", "--task", "stsb",
                   "--data-dir", str(stsb["glue"]), "--calib-samples", "32", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert "gptq rounding" in plan["plan_summary"]
    assert_one_line_error(run_cli("convert", "--model", str(stsb["fp32"]), "--bits", "3", "--rounding", "gptq",
                                  "-o", str(tmp_path / "x.onnx")), "needs calibration samples")
    proc = run_cli("inspect", str(out), "--no-runtime", "--json")
    r = json.loads(proc.stdout)
    assert r["plan"]["rounding"]["method"] == "gptq" and r["plan"]["rounding"]["samples"] == 32
    encoder = [w for w in r["weights"] if w["layer"] is not None]
    assert encoder and all(w["rounding"] == "gptq" and w["out_err"] < w["out_err_nearest"] for w in encoder)
    assert r["plan"]["rounding"]["grid"] == "search" and {w["grid"] for w in encoder} <= {"method", "searched"}
    text = run_cli("inspect", str(out), "--no-runtime").stdout
    assert "rounding gptq: 32 calibration samples" in text and "->" in text and "grid search" in text
    # the command line replays a GPTQ plan (it once re-decided from the default options instead)
    (tmp_path / "g.plan.json").write_text(run_cli("inspect", str(out), "--plan").stdout)
    again = tmp_path / "again.onnx"
    proc = run_cli("convert", "--model", str(stsb["fp32"]), "--plan", str(tmp_path / "g.plan.json"), "--task", "stsb",
                   "--data-dir", str(stsb["glue"]), "--calib-samples", "32", "-o", str(again), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["plan_summary"] == plan["plan_summary"]
    import onnx

    a = {i.name: i.raw_data for i in onnx.load(str(out)).graph.initializer}
    b = {i.name: i.raw_data for i in onnx.load(str(again)).graph.initializer}
    assert a == b


def test_dynamic_quantize_matches_onnx_runtime():
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from bert2onnxq.numerics import dynamic_quantize

    x = np.random.default_rng(4).normal(size=(3, 7, 16)).astype(np.float32) * 3 + 1
    graph = helper.make_graph([helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
                               helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(dynamic_quantize(x), y, rtol=0, atol=1e-6)
    assert onnx.checker.check_model(model) is None


def test_input_aware_gptq_lowers_the_error_the_int8_kernel_makes():
    """With X_q = Q8(X): GPTQ on (X_q^T X_q, target (X_q^T X_q)^-1 X_q^T X W) beats FP32-H GPTQ on ||XW - X_q Q||."""
    from bert2onnxq.numerics import dynamic_quantize
    from bert2onnxq.numerics.gptq import (
        input_aware_target,
        output_error_quantized_inputs,
    )

    rng = np.random.default_rng(5)
    w = (rng.normal(size=(K, N)) * 0.05).astype(np.float32)
    x = correlated_inputs(rng)
    x[:, 0] *= 8  # an outlier channel makes the per-tensor activation step coarse, as in BERT
    xq = np.concatenate([dynamic_quantize(b) for b in np.split(x.astype(np.float32), 10)]).astype(np.float64)
    h, hq, cross = x.T @ x, xq.T @ xq, xq.T @ x
    params = lq_params(w, 4, symmetric=False, granularity="channel")
    np.testing.assert_allclose(input_aware_target(w, h, h, 0.0), w, rtol=1e-6, atol=1e-8)  # X_q = X: the target is W
    plain = gptq_quantize(w, h, params)
    aware = gptq_quantize(input_aware_target(w, hq, cross, 0.01), hq, params)
    err = {name: output_error_quantized_inputs(w, dequantize(q, params), h, hq, cross)
           for name, q in (("nearest", quantize(w, params)), ("plain", plain), ("aware", aware))}
    direct = np.sum((x @ w - xq @ dequantize(aware, params)) ** 2) / np.sum((x @ w) ** 2)
    assert err["aware"] == pytest.approx(direct, rel=1e-6)
    assert err["aware"] < err["plain"] and err["aware"] < err["nearest"], err


@pytest.mark.parametrize("kw", [dict(method="lq", bits=3), dict(method="ocs", bits=4, ocs_ratio=0.1, ocs_activations=True),
                                dict(method="aciq", bits=3, granularity="group", group_size=16)])
def test_runtime_weight_is_what_the_quantized_graph_computes(stsb, tmp_path, kw):
    """Sequential GPTQ feeds later layers the FP32 model with runtime_weight in place of each rounded weight:
    that model must compute what the quantized file computes (QDQ run in float, float activations)."""
    import onnx
    from onnx import numpy_helper

    from bert2onnxq.analyse.activations import fill_activation_plan
    from bert2onnxq.convert import convert, decide
    from bert2onnxq.methods import convert_options
    from bert2onnxq.onnx_io import load_ir
    from bert2onnxq.quantize import quantize_weights, runtime_weight
    from bert2onnxq.runtime import make_runner

    fp32 = stsb["fp32"]
    model = load_ir(fp32)
    plan = decide(model, convert_options(act_bits=None, emb_bits=None, **kw))
    fill_activation_plan(model, plan, fp32, stsb_calibrate(stsb))
    replaced = {t.name: runtime_weight(plan, t, qt) for t, qt in zip(plan.weights, quantize_weights(model, plan, plan.weights, None))}
    proto = onnx.load(str(fp32))
    for init in proto.graph.initializer:
        if init.name in replaced:
            init.CopyFrom(numpy_helper.from_array(replaced[init.name], init.name))
    onnx.save(proto, str(tmp_path / "fake.onnx"))
    convert(str(fp32), tmp_path / "q.onnx", plan=plan, calibrate=stsb_calibrate(stsb))
    import shutil
    for f in fp32.parent.iterdir():  # the tokenizer beside the fake-quant copy
        if f.suffix != ".onnx" and f.is_file():
            shutil.copy(f, tmp_path / f.name)
    rng = np.random.default_rng(0)
    features = [{"input_ids": rng.integers(5, 90, 12), "attention_mask": np.ones(12, np.int64),
                 "token_type_ids": np.zeros(12, np.int64)} for _ in range(4)]
    exact = {"session.disable_quant_qdq": "1"}
    got = make_runner(tmp_path / "q.onnx", threads=1, config=exact).run_features(features)
    want = make_runner(tmp_path / "fake.onnx", threads=1).run_features(features)
    near = make_runner(fp32, threads=1).run_features(features)
    for key in want:
        a, b, c = (np.concatenate(v) for v in (got[key], want[key], near[key]))
        # the rounding moves the output; the fake-quant model follows the file 100x closer than FP32 does
        assert np.max(np.abs(a - b)) < 0.01 * np.max(np.abs(c - b)), (np.max(np.abs(a - b)), np.max(np.abs(c - b)))


def test_sequential_gptq_rounds_later_layers_on_the_rounded_inputs(stsb, tmp_path):
    import onnx

    from bert2onnxq.convert import convert
    from bert2onnxq.methods import convert_options

    fp32 = str(stsb["fp32"])
    convert(fp32, tmp_path / "a.onnx", convert_options(bits=3, rounding="gptq"), calibrate=stsb_calibrate(stsb))
    seq = convert(fp32, tmp_path / "b.onnx", convert_options(bits=3, rounding="gptq", gptq_sequential=True),
                  calibrate=stsb_calibrate(stsb), plan_out=tmp_path / "plan.json")
    assert seq["plan"].rounding["sequential"] is True
    a, b = onnx.load(str(tmp_path / "a.onnx")), onnx.load(str(tmp_path / "b.onnx"))
    assert [(n.op_type, list(n.input)) for n in a.graph.node] == [(n.op_type, list(n.input)) for n in b.graph.node]
    layers = {t.name: t.layer for t in seq["plan"].weights}

    def same(name):  # the weight's initializers (integers, scales, zero points) in both files
        pairs = [(x, y) for x, y in zip(a.graph.initializer, b.graph.initializer) if x.name.startswith(name)]
        assert pairs, name
        return all(x.raw_data == y.raw_data for x, y in pairs)
    first = min(layers.values())
    # the first layer sees the FP32 inputs either way; every later layer was rounded on other inputs
    assert all(same(n) for n, layer in layers.items() if layer == first)
    assert not any(same(n) for n, layer in layers.items() if layer != first)
    from bert2onnxq.plan import QuantPlan
    again = convert(fp32, tmp_path / "c.onnx", plan=QuantPlan.load(tmp_path / "plan.json"), calibrate=stsb_calibrate(stsb))
    c = onnx.load(str(tmp_path / "c.onnx"))  # replay: the same integers
    assert [x.SerializeToString() for x in c.graph.initializer] == [x.SerializeToString() for x in b.graph.initializer]
    assert again["plan"].rounding["sequential"] is True


def test_range_search_lowers_the_weighted_error_and_stays_on_a_valid_grid():
    from bert2onnxq.numerics.grid_search import search_range

    rng = np.random.default_rng(3)
    w = (rng.standard_t(3, size=(K, N)) * 0.05).astype(np.float32)  # heavy tails: min-max wastes the grid
    x = correlated_inputs(rng)
    importance = np.einsum("tk,tk->k", x, x)  # diag(X^T X)
    for label, matrix, params, index in grids(w):
        imp = importance if index is None else importance[index]
        got = search_range(matrix, params, imp)
        assert got.scale.shape == np.shape(params.scale) and got.granularity == params.granularity, label

        def weighted(p):
            return float(np.sum(imp[:, None] * (matrix - dequantize(quantize(matrix, p), p)) ** 2))
        assert weighted(got) < 0.95 * weighted(params), label
        assert np.all(got.scale <= params.scale * (1 + 1e-6)), label  # ranges only shrink
        if params.column_groups is not None:  # one range per neuron group still
            for g in np.unique(params.column_groups):
                assert np.unique(got.scale[params.column_groups == g]).size == 1, label
        # every block's choice is the best of the candidates: no single shrink beats it on the total
        for s in (0.5, 0.8, 1.0):
            assert weighted(got) <= weighted(search_range(matrix, params, imp, shrinks=(s,))) * (1 + 1e-9), label


def test_range_search_without_shrinks_is_the_given_grid():
    from bert2onnxq.numerics.grid_search import search_range

    rng = np.random.default_rng(4)
    w = rng.normal(size=(K, N))
    for label, matrix, params, _ in grids(w):
        got = search_range(matrix, params, np.ones(matrix.shape[0]), shrinks=(1.0,))
        np.testing.assert_array_equal(got.scale, params.scale, err_msg=label)
        np.testing.assert_array_equal(quantize(matrix, got), quantize(matrix, params), err_msg=label)
    with pytest.raises(ValueError):
        search_range(w, lq_params(w, 3), np.ones(K - 1))
    with pytest.raises(ValueError):
        search_range(w, lq_params(w, 3), np.ones(K), shrinks=(0.0,))
