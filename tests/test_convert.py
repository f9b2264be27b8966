"""convert: exact dequantized weights in the graph, packing, checker, ORT == reference, plans, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import tiny_feeds
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from bert2onnxq import numerics
from bert2onnxq.convert import convert
from bert2onnxq.errors import BadInput
from bert2onnxq.methods import convert_options
from bert2onnxq.plan import QuantPlan

CASES = [  # (method, bits, granularity, symmetric)
    ("lq", 8, "channel", True),
    ("lq", 8, "tensor", False),
    ("lq", 6, "channel", True),
    ("aciq", 4, "channel", True),
    ("lq", 4, "group", False),
    ("aciq", 3, "group", True),
    ("lq", 2, "channel", True),
    ("aciq", 2, "group", False),
]


def _options(method, bits, granularity, symmetric, **kw):
    return convert_options(method=method, bits=bits, granularity=granularity, group_size=16, symmetric=symmetric, **kw)


def _fp32_weights(path: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


@pytest.fixture(scope="module")
def converted(tiny_onnx, tmp_path_factory):
    root = tmp_path_factory.mktemp("q")
    out = {}
    for case in CASES:
        path = root / ("_".join(map(str, case)) + ".onnx")
        out[case] = (path, convert(str(tiny_onnx["classification"]), path, _options(*case)))
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_dequantized_weights_equal_numpy_reference(case, converted, tiny_onnx):
    """Run each DequantizeLinear in the written graph (ORT) and compare with numerics on the FP32 weight."""
    method, bits, granularity, symmetric = case
    path, summary = converted[case]
    fp32 = _fp32_weights(tiny_onnx["classification"])
    model = onnx.load(str(path))
    plan = summary["plan"]
    names = [f"{t.name}_dequantized" for t in plan.weights]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(names, tiny_feeds())
    assert len(plan.weights) == 12  # 2 layers x (q, k, v, attention output, intermediate, output)
    for t, value in zip(plan.weights, got):
        w = fp32[t.name]
        if method == "lq":
            params = numerics.lq_params(w, bits, symmetric=symmetric, granularity=granularity, group_size=t.group_size)
        else:
            params = numerics.aciq_params(w, bits, symmetric=symmetric, granularity=granularity, group_size=t.group_size)
        expected = numerics.dequantize(numerics.quantize(w, params), params)
        np.testing.assert_array_equal(value, expected)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_packed_containers_and_checker(case, converted):
    _, bits, _, symmetric = case
    path, summary = converted[case]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    inits = {i.name: i for i in model.graph.initializer}
    container = numerics.container(bits, symmetric)
    expected_type = getattr(onnx.TensorProto, container.upper())
    for t in summary["plan"].weights:
        q = inits[f"{t.name}_quantized"]
        assert q.data_type == expected_type
        assert len(q.raw_data) == math.ceil(t.num_params * numerics.container_bits(bits) / 8)
        assert t.name not in inits  # the FP32 weight is gone
    opset = {o.domain: o.version for o in model.opset_import}[""]
    assert opset == (25 if bits == 2 else 21)


@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[6]], ids=lambda c: "-".join(map(str, c)))
def test_reference_evaluator_agrees_with_onnxruntime(case, converted):
    path, _ = converted[case]
    feeds = tiny_feeds()
    ref = ReferenceEvaluator(str(path)).run(None, feeds)[0]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(got, ref, atol=2e-3, rtol=1e-3)


def test_embeddings_stored_int8_per_row(converted, tiny_onnx):
    path, summary = converted[CASES[0]]
    fp32 = _fp32_weights(tiny_onnx["classification"])
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    assert len(summary["plan"].embeddings) == 3
    for t in summary["plan"].embeddings:
        table = fp32[t.name]
        q, scale = inits[f"{t.name}_quantized"], inits[f"{t.name}_scale"]
        assert q.dtype == np.int8 and scale.shape == (table.shape[0],)
        row_max = np.abs(table).max(axis=1)
        expected_scale = np.where(row_max == 0, 1.0, row_max / 127)  # an all-zero row ([PAD]) keeps scale 1
        np.testing.assert_allclose(scale, expected_scale.astype(np.float32), rtol=1e-6)
        np.testing.assert_array_equal(q, np.clip(np.rint(table / scale[:, None]), -127, 127))


def test_plan_round_trip_and_reapply(converted, tiny_onnx, tmp_path):
    path, summary = converted[CASES[3]]
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    stored = QuantPlan.from_json(meta["bert2onnxq.plan"])
    assert stored.to_json() == summary["plan"].to_json()
    assert stored.weights[0].alpha_ratio == pytest.approx(5.03, abs=0.01)  # ACIQ Laplace, 4 bits
    again = tmp_path / "again.onnx"
    convert(str(tiny_onnx["classification"]), again, plan=stored)
    a = {i.name: i.raw_data for i in onnx.load(str(path)).graph.initializer}
    b = {i.name: i.raw_data for i in onnx.load(str(again)).graph.initializer}
    assert a == b


def test_bits_out_of_range(tiny_onnx, tmp_path):
    with pytest.raises(BadInput, match="outside 2..8"):
        convert(str(tiny_onnx["classification"]), tmp_path / "o.onnx", convert_options(bits=9))
    assert not (tmp_path / "o.onnx").exists()


def test_plan_that_does_not_fit(converted, tiny_onnx, tmp_path):
    plan = converted[CASES[0]][1]["plan"]
    plan.weights[0].shape = (7, 7)
    with pytest.raises(BadInput, match="plan made for this model"):
        convert(str(tiny_onnx["classification"]), tmp_path / "o.onnx", plan=plan)
    assert list(tmp_path.iterdir()) == []


def test_already_quantized(converted, tmp_path):
    with pytest.raises(BadInput, match="already quantized"):
        convert(str(converted[CASES[0]][0]), tmp_path / "o.onnx")


def test_not_a_bert_graph(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "relu.onnx"))
    with pytest.raises(BadInput, match="no BERT encoder weights"):
        convert(str(tmp_path / "relu.onnx"), tmp_path / "o.onnx")
    assert not (tmp_path / "o.onnx").exists()


def test_existing_output_survives_failure(tiny_onnx, tmp_path):
    out = tmp_path / "o.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(BadInput):
        convert(str(tiny_onnx["classification"]), out, convert_options(granularity="rows"))
    assert out.read_bytes() == b"keep me"


def test_int4_embeddings_gather_block_quantized(tiny_onnx, tmp_path):
    out = tmp_path / "e4.onnx"
    summary = convert(str(tiny_onnx["classification"]), out, convert_options(emb_bits=4, act_bits=None))
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    fp32 = _fp32_weights(tiny_onnx["classification"])
    word = next(t for t in summary["plan"].embeddings if t.role == "word_embeddings")
    assert word.group_size == 32  # hidden 32: one block per row
    node = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized" and n.input[0].startswith(word.name))
    model.graph.output.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None))
    feeds = tiny_feeds()
    rows = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run([node.output[0]], feeds)[0]
    table = fp32[word.name]
    scale = np.abs(table).max(axis=1, keepdims=True) / 7
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    expected = (np.clip(np.rint(table / scale), -7, 7) * scale)[feeds["input_ids"]]
    np.testing.assert_allclose(rows, expected, rtol=1e-6, atol=1e-7)  # only the gathered rows are dequantized


@pytest.mark.parametrize("method", ["minmax", "aciq"])
def test_static_activation_calibration(tiny_onnx, tmp_path, method):
    from conftest import GLUE_DIR

    if not (GLUE_DIR / "STS-B" / "train.tsv").is_file():
        pytest.skip("needs ../shared/data/glue/STS-B")
    from bert2onnxq.analyse.activations import observe_activations

    def calibrate(path, names):
        return observe_activations(path, names, "stsb", samples=16, data_dir=GLUE_DIR)

    out = tmp_path / "static.onnx"
    summary = convert(str(tiny_onnx["regression"]), out, convert_options(act_calib="static", calib_method=method),
                      calibrate=calibrate)
    ranges = summary["plan"].activations.ranges
    assert len(ranges) == 2 * 4  # per layer: attention input (q/k/v share it), attention output, FFN in, FFN out
    assert all(lo < hi for lo, hi in ranges.values())
    model = onnx.load(str(out))
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) == len(ranges)
    assert not any(n.op_type == "DynamicQuantizeLinear" for n in model.graph.node)
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, tiny_feeds())


@pytest.mark.parametrize("bits,symmetric,expected", [(2, None, False), (3, None, False), (4, None, False), (5, None, True),
                                                     (8, None, True), (3, True, True), (8, False, False)])
def test_default_grid_depends_on_bits(tiny_onnx, bits, symmetric, expected):
    from bert2onnxq.convert import decide
    from bert2onnxq.onnx_io import load_ir

    model = load_ir(tiny_onnx["classification"])
    plan = decide(model, convert_options(bits=bits, symmetric=symmetric))
    assert {t.symmetric for t in plan.weights} == {expected}
