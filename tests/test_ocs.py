"""OCS in the graph: the split FP32 graph equals the original; quantized OCS graphs run and record splits."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from bert2onnxq.convert import ConvertOptions, convert, decide_plan, load_ir, split_fp32
from bert2onnxq.export import export
from bert2onnxq.graph.locate import check_quantizable
from conftest import SHARED_MODELS, needs_shared


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
    plan = decide_plan(model, ConvertOptions(method="ocs", ocs_ratio=ratio), check_quantizable(model))
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
                      ConvertOptions(method="ocs", bits=bits, granularity=granularity, group_size=16, ocs_ratio=0.05,
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
