"""Q-BERT's neuron-group ranges: the partition rule, scales against numpy, and the written graph."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import tiny_feeds
from onnx import numpy_helper

from bert2onnxq import numerics
from bert2onnxq.convert import convert
from bert2onnxq.methods import convert_options

# --- the partition ----------------------------------------------------------------------------------------


def test_neuron_groups_partition_rule():
    # 12 columns = 3 heads of 4; 5 groups: heads get 2, 2, 1 groups, each head split near-equally
    assert numerics.neuron_groups(12, 5, heads=3).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4]
    # fewer groups than heads: runs of whole heads (2 heads, then 1)
    assert numerics.neuron_groups(12, 2, heads=3).tolist() == [0] * 8 + [1] * 4
    # no heads: np.array_split sizes, larger runs first
    assert numerics.neuron_groups(10, 3).tolist() == [0] * 4 + [1] * 3 + [2] * 3
    assert numerics.neuron_groups(7, 1).tolist() == [0] * 7  # per-tensor
    assert numerics.neuron_groups(7, 7).tolist() == list(range(7))  # per-channel


@pytest.mark.parametrize("n,groups,heads", [(384, 128, 12), (384, 12, 12), (384, 7, 12), (384, 384, 12),
                                            (768, 128, 12), (32, 6, 4), (1536, 128, None), (10, 4, 5)])
def test_neuron_groups_never_straddle_heads(n, groups, heads):
    ids = numerics.neuron_groups(n, groups, heads)
    assert ids.shape == (n,) and ids[0] == 0 and np.all(np.diff(ids) >= 0)  # runs of consecutive columns
    assert ids.max() + 1 == groups  # exactly the groups asked for
    head = np.arange(n) // (n // (heads or 1))
    for g in range(groups):
        members = head[ids == g]
        if groups >= (heads or 1):
            assert members.min() == members.max()  # inside one head
    if groups >= (heads or 1):
        for h in range(heads or 1):  # within a head, group sizes differ by at most one
            sizes = np.bincount(ids[head == h])
            sizes = sizes[sizes > 0]
            assert sizes.max() - sizes.min() <= 1
    else:  # whole heads per group
        for h in range(heads):
            assert len(set(ids[head == h])) == 1


def test_neuron_groups_bad_arguments():
    with pytest.raises(ValueError, match="groups must be in 1..8"):
        numerics.neuron_groups(8, 9)
    with pytest.raises(ValueError, match="groups must be in"):
        numerics.neuron_groups(8, 0)
    with pytest.raises(ValueError, match="heads"):
        numerics.neuron_groups(10, 2, heads=3)


# --- scales against a plain numpy reference ---------------------------------------------------------------


def _reference_params(w, bits, groups, heads, symmetric):
    """One range per group of output columns, computed with an explicit loop."""
    n = w.shape[1]
    head_dim = n // (heads or 1)
    # the rule written out again: per head, array_split of its columns into its share of the groups
    cols = []
    if heads and groups >= heads:
        base, extra = divmod(groups, heads)
        for h in range(heads):
            cols += [h * head_dim + c for c in np.array_split(np.arange(head_dim), base + (h < extra))]
    elif heads:  # fewer groups than heads: runs of whole heads
        cols = [np.concatenate([np.arange(h * head_dim, (h + 1) * head_dim) for h in run])
                for run in np.array_split(np.arange(heads), groups)]
    else:
        cols = np.array_split(np.arange(n), groups)
    scale, zp = np.zeros(n, np.float32), np.zeros(n, np.int64)
    for c in cols:
        block = w[:, c].astype(np.float64)
        if symmetric:
            s = np.float32(np.abs(block).max() / (2 ** (bits - 1) - 1))
            scale[c] = s
        else:
            lo, hi = min(block.min(), 0.0), max(block.max(), 0.0)
            s = np.float32((hi - lo) / (2 ** bits - 1))
            scale[c] = s
            zp[c] = np.clip(np.rint(-lo / np.float64(s)), 0, 2 ** bits - 1)
    return scale, zp, len(cols)


@pytest.mark.parametrize("bits,groups,heads,symmetric", [(3, 5, 3, True), (2, 5, 3, False), (4, 2, 3, False),
                                                         (8, 7, None, True), (3, 12, 3, False)])
def test_neuron_group_scales_match_numpy_reference(bits, groups, heads, symmetric):
    w = np.random.default_rng(bits + groups).laplace(scale=0.05, size=(20, 12)).astype(np.float32)
    params = numerics.lq_params(w, bits, symmetric=symmetric, granularity="neuron-group", groups=groups, heads=heads)
    scale, zp, count = _reference_params(w, bits, groups, heads, symmetric)
    assert params.axis == 1 and params.block_size is None and params.scale.shape == (12,)
    np.testing.assert_array_equal(params.scale, scale)
    if symmetric:
        assert params.zero_point is None
    else:
        np.testing.assert_array_equal(params.zero_point, zp)
    assert params.num_scales == count == groups
    q = numerics.quantize(w, params)
    qmin, qmax = numerics.int_range(bits, symmetric)
    expected = np.clip(np.rint(w / scale.astype(np.float64)) + (0 if symmetric else zp), qmin, qmax)
    np.testing.assert_array_equal(q, expected)


def test_neuron_group_extremes_are_tensor_and_channel():
    w = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    for symmetric in (True, False):
        one = numerics.lq_params(w, 3, symmetric=symmetric, granularity="neuron-group", groups=1)
        tensor = numerics.lq_params(w, 3, symmetric=symmetric, granularity="tensor")
        np.testing.assert_array_equal(one.scale, np.full(8, tensor.scale))
        np.testing.assert_array_equal(numerics.quantize(w, one), numerics.quantize(w, tensor))
        every = numerics.lq_params(w, 3, symmetric=symmetric, granularity="neuron-group", groups=8)
        channel = numerics.lq_params(w, 3, symmetric=symmetric, granularity="channel")
        np.testing.assert_array_equal(every.scale, channel.scale)
        np.testing.assert_array_equal(numerics.quantize(w, every), numerics.quantize(w, channel))
        aciq_every = numerics.aciq_params(w, 3, symmetric=symmetric, granularity="neuron-group", groups=8)
        aciq_channel = numerics.aciq_params(w, 3, symmetric=symmetric, granularity="channel")
        np.testing.assert_allclose(aciq_every.scale, aciq_channel.scale, rtol=1e-6)


def test_neuron_group_aciq_alpha_per_group():
    w = np.random.default_rng(2).laplace(scale=0.1, size=(30, 12)).astype(np.float32)
    params = numerics.aciq_params(w, 3, granularity="neuron-group", groups=3, heads=3)
    for h in range(3):
        block = w[:, 4 * h: 4 * h + 4].astype(np.float64)
        b = np.mean(np.abs(block - block.mean()))
        alpha = min(numerics.optimal_alpha(3, "laplace") * b, np.abs(block).max())
        np.testing.assert_allclose(params.scale[4 * h: 4 * h + 4], alpha / 3, rtol=1e-6)


# --- in the graph -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits,symmetric,groups", [(3, False, 6), (2, False, 5), (8, True, 6), (4, True, 3)])
def test_neuron_group_graph_equals_numpy_and_runs(tiny_onnx, tmp_path, bits, symmetric, groups):
    src = tiny_onnx["classification"]
    out = tmp_path / "ng.onnx"
    summary = convert(str(src), out, convert_options(method="lq", bits=bits, granularity="neuron-group",
                                                    groups=groups, symmetric=symmetric))
    plan = summary["plan"]
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    fp32 = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(src)).graph.initializer}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    names = [f"{t.name}_dequantized" for t in plan.weights]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(names, tiny_feeds())
    for t, value in zip(plan.weights, got):
        heads = 4 if t.role in ("query", "key", "value") else None  # the tiny BERT has 4 heads
        assert (t.granularity, t.groups, t.heads) == ("neuron-group", groups, heads)
        w = fp32[t.name]
        scale, zp, count = _reference_params(w, bits, groups, heads, symmetric)
        qmin, qmax = numerics.int_range(bits, symmetric)
        q = np.clip(np.rint(w / scale.astype(np.float64)) + (0 if symmetric else zp), qmin, qmax)
        expected = ((q - (0 if symmetric else zp)).astype(np.float32) * scale).astype(np.float32)
        np.testing.assert_array_equal(value, expected)  # read back from the graph by ONNX Runtime
        np.testing.assert_array_equal(inits[f"{t.name}_scale"], scale)  # per-axis: N values, G distinct
        assert len(np.unique(inits[f"{t.name}_scale"])) <= count == t.stats["num_scales"] == groups
    # the ideal size counts G scales (and G zero points, `bits` each) per matrix, not N
    weights = sum(t.num_params * bits / 8 + groups * 4 + (0 if symmetric else groups * bits / 8) for t in plan.weights)
    tables = sum(t.num_params + t.stats["num_scales"] * 4 for t in plan.embeddings)
    assert plan.ideal_bytes() == pytest.approx(weights + tables)
    logits = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, tiny_feeds())[0]
    assert logits.shape == (2, 3) and np.isfinite(logits).all()


def test_neuron_group_runs_on_int8_kernels(tiny_onnx, tmp_path):
    """Per-axis scales keep ONNX Runtime's integer MatMul (no float MatMul on dequantized weights)."""
    out = tmp_path / "ng.onnx"
    convert(str(tiny_onnx["classification"]), out,
            convert_options(method="lq", bits=3, granularity="neuron-group", groups=6, symmetric=False))
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    assert ops.count("MatMulIntegerToFloat") + ops.count("DynamicQuantizeMatMul") == 12


def test_groups_above_columns_become_per_channel(tiny_onnx, tmp_path):
    summary = convert(str(tiny_onnx["classification"]), tmp_path / "o.onnx",
                      convert_options(method="lq", bits=4, granularity="neuron-group", groups=128))
    assert {(t.role, t.groups) for t in summary["plan"].weights} >= {("query", 32), ("intermediate", 64)}
