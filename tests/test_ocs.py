"""OCS in the graph: the split FP32 graph equals the original; quantized OCS graphs run and record splits."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from conftest import SHARED_MODELS, needs_shared

from bert2onnxq.convert import convert, decide, split_fp32
from bert2onnxq.export import export
from bert2onnxq.methods import convert_options
from bert2onnxq.onnx_io import load_ir


def _feeds(vocab, batch=3, seq=19, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(batch, seq))
    mask = np.ones_like(ids)
    mask[0, seq - 5:] = 0
    types = np.zeros_like(ids)
    types[:, seq // 2:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _split_matches_fp32(fp32_path, tmp_path, ratio, vocab):
    model = load_ir(fp32_path)
    plan = decide(model, convert_options(method="ocs", ocs_ratio=ratio))
    split = split_fp32(model, plan)
    path = tmp_path / f"split{ratio}.onnx"
    onnx.save(ir.to_proto(split), str(path))
    gathers = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Gather" and n.name.endswith("_ocs_gather")]
    assert len(gathers) == len(plan.weights)
    feeds = _feeds(vocab)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # compare the graphs as written
    ref = ort.InferenceSession(str(fp32_path), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    return max(float(np.abs(a - b).max()) for a, b in zip(got, ref))


@pytest.mark.parametrize("ratio", [0.01, 0.05, 0.5])
def test_split_graph_equals_fp32_tiny(tiny_onnx, tmp_path, ratio):
    assert _split_matches_fp32(tiny_onnx["classification"], tmp_path, ratio, vocab=60) < 1e-5


@pytest.mark.integration
@needs_shared(SHARED_MODELS / "minilm-l6-sst2")
def test_split_graph_equals_fp32_real_model(tmp_path):
    export(str(SHARED_MODELS / "minilm-l6-sst2"), tmp_path / "fp32.onnx")
    assert _split_matches_fp32(tmp_path / "fp32.onnx", tmp_path, 0.05, vocab=30522) < 1e-5


@pytest.mark.parametrize("granularity,bits,grid", [("channel", 3, False), ("group", 4, True), ("channel", 2, True)])
def test_quantized_ocs_graph_runs_and_records_splits(tiny_onnx, tmp_path, granularity, bits, grid):
    out = tmp_path / "ocs.onnx"
    summary = convert(str(tiny_onnx["classification"]), out,
                      convert_options(method="ocs", bits=bits, granularity=granularity, group_size=16, ocs_ratio=0.05,
                                     ocs_grid_aware=grid, clip="aciq"))
    plan = summary["plan"]
    for t in plan.weights:
        assert len(t.ocs_channels) == int(np.ceil(0.05 * t.shape[0]))
        assert all(0 <= c < t.shape[0] for c in t.ocs_channels)
        assert t.clip == "aciq-laplace" and t.ocs_grid_aware == grid
    overhead = plan.ocs_overhead()
    assert overhead["extra_params"] == sum(len(t.ocs_channels) * t.shape[1] for t in plan.weights)
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    inits = {i.name: i for i in model.graph.initializer}
    t = plan.weights[0]
    assert list(inits[f"{t.name}_quantized"].dims) == [t.shape[0] + len(t.ocs_channels), t.shape[1]]
    logits = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, _feeds(60))[0]
    assert np.isfinite(logits).all()


def _observers(fp32_path, names, samples=8):
    """Channel statistics of the named activations from random token ids (no task data needed)."""
    from bert2onnxq.analyse.activations import ChannelObserver

    model = onnx.load(str(fp32_path))
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = session.run(names, _feeds(60, batch=samples))
    observers = {}
    for name, value in zip(names, outs):
        observers[name] = ChannelObserver(np.random.default_rng(0))
        observers[name].update(value)
    return observers


def test_activation_split_graph_equals_fp32_tiny(tiny_onnx, tmp_path):
    from bert2onnxq.analyse.activations import fill_activation_plan

    fp32 = tiny_onnx["classification"]
    model = load_ir(fp32)
    options = convert_options(method="ocs", ocs_ratio=0.1, ocs_activations=True)
    plan = decide(model, options)
    fill_activation_plan(model, plan, fp32, lambda path, names: _observers(path, names))
    assert len(plan.activations.splits) == 4 * 2  # per layer: QKV input, attention output, FFN in, FFN out
    assert sorted(w for s in plan.activations.splits.values() for w in s["weights"]) == sorted(t.name for t in plan.weights)
    path = tmp_path / "split.onnx"
    onnx.save(ir.to_proto(split_fp32(model, plan)), str(path))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    feeds = _feeds(60)
    ref = ort.InferenceSession(str(fp32), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    assert max(float(np.abs(a - b).max()) for a, b in zip(got, ref)) < 1e-5
    graph = onnx.load(str(path)).graph
    halves = [n for n in graph.node if n.name.endswith("_ocs_act_halve")]
    assert len(halves) == len(plan.activations.splits)
    # only the split channels are gathered (a last-axis Gather of all K + s channels was the slow form)
    sizes = {i.name: i.dims[0] for i in graph.initializer}
    gathered = sorted(sizes[n.input[1]] for n in graph.node if n.name.endswith("_ocs_act_gather"))
    assert gathered == sorted(len(s["split_rows"]) for s in plan.activations.splits.values())


def test_quantized_activation_split_shrinks_static_range(tiny_onnx, tmp_path):
    fp32 = tiny_onnx["classification"]
    calls = []

    def calibrate(path, names):
        calls.append(names)
        return _observers(path, names)

    out = tmp_path / "ocs_act.onnx"
    summary = convert(str(fp32), out, convert_options(method="ocs", bits=4, ocs_ratio=0.1, ocs_activations=True,
                                                     act_calib="static"), calibrate=calibrate)
    assert len(calls) == 1  # one calibration pass serves both the splits and the ranges
    plan = summary["plan"]
    observers = _observers(fp32, sorted(plan.activations.splits))
    for name, split in plan.activations.splits.items():
        lo, hi = plan.activations.ranges[f"{name}_ocs_split"]
        assert max(-lo, hi) < float(observers[name].channel_absmax().max())  # the outlier channel was halved
        k = next(t.shape[0] for t in plan.weights if t.name == split["weights"][0])
        assert len(split["split_rows"]) == int(np.ceil(0.1 * k))
    overhead = plan.ocs_overhead()
    assert overhead["activation_channels_added"] == sum(len(s["split_rows"]) for s in plan.activations.splits.values())
    assert overhead["extra_params"] == sum(plan.rows_added(t) * t.shape[1] for t in plan.weights)
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    t = plan.weights[0]
    inits = {i.name: i for i in model.graph.initializer}
    assert list(inits[f"{t.name}_quantized"].dims) == [t.shape[0] + plan.rows_added(t), t.shape[1]]
    logits = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, _feeds(60))[0]
    ref = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, _feeds(60))[0]
    assert np.abs(logits - ref).max() < 0.5 * np.abs(ref).max() + 1e-3
    # re-applying the saved plan needs no calibration and gives the same bytes
    again = tmp_path / "again.onnx"
    convert(str(fp32), again, plan=type(plan).from_json(plan.to_json()))
    assert again.read_bytes() == out.read_bytes()
