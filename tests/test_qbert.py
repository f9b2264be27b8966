"""convert --method qbert: the plan records the Hessian and the bits, re-applies without it; errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import pytest
from conftest import GLUE_DIR, make_tiny_bert, needs_shared

from bert2onnxq.convert import convert
from bert2onnxq.errors import BadInput
from bert2onnxq.methods import ConvertOptions
from bert2onnxq.plan import QuantPlan

# --- convert --method qbert ------------------------------------------------------------------------------

needs_stsb = needs_shared(GLUE_DIR / "STS-B" / "train.tsv")


def _qbert(**kw):
    from bert2onnxq.methods.qbert import QBertOptions

    qb = dict(task="stsb", data_dir=GLUE_DIR, batches=2, batch_size=4, max_iter=15)
    qb.update(kw)
    return ConvertOptions(granularity="neuron-group", groups=6, symmetric=False, method_options=QBertOptions(**qb))


@pytest.fixture(scope="module")
def qbert_converted(tiny_onnx, tmp_path_factory):
    if not (GLUE_DIR / "STS-B" / "train.tsv").is_file():
        pytest.skip("needs ../shared/data/glue/STS-B")
    root = tmp_path_factory.mktemp("qbert")
    ticks = []
    summary = convert(str(tiny_onnx["regression"]), root / "q.onnx", _qbert(), plan_out=root / "plan.json",
                      progress=lambda label, total: (lambda n: ticks.append((label, total, n))))
    return root, summary, ticks


@needs_stsb
def test_qbert_plan_records_hessian_and_bits(qbert_converted):
    root, summary, ticks = qbert_converted
    plan = summary["plan"]
    assert plan.method == "qbert" and len(ticks) == 2 * 2 and ticks[0][1] == 4  # 2 layers x 2 batches
    hess, alloc = plan.analysis["hessian"], plan.analysis["allocation"]
    assert [layer["layer"] for layer in hess["layers"]] == [0, 1] and hess["seconds"] > 0
    for layer in hess["layers"]:
        lam = np.array(layer["eigenvalues"])
        assert len(lam) == 2 and layer["omega"] == pytest.approx(abs(lam.mean()) + lam.std())
    bits = {b["layer"]: b["bits"] for b in alloc["bits"]}
    omegas = [layer["omega"] for layer in hess["layers"]]
    top = int(np.argmax(omegas))
    assert alloc["avg_bits"] == 3.0 and bits == {top: 4, 1 - top: 2}  # the whole budget, most to the top
    for t in plan.weights:
        assert t.bits == bits[t.layer] and t.granularity == "neuron-group" and not t.symmetric
    meta = {p.key: p.value for p in onnx.load(str(root / "q.onnx")).metadata_props}
    assert QuantPlan.from_json(meta["bert2onnxq.plan"]).analysis == json.loads(plan.to_json())["analysis"]


@needs_stsb
def test_qbert_hawq_allocation_minimises_omega_weighted_error(qbert_converted, tiny_onnx, tmp_path):
    import itertools

    from bert2onnxq import numerics
    from bert2onnxq.onnx_io import load_ir, weight_array

    root, summary, _ = qbert_converted
    hessian = summary["plan"].analysis["hessian"]
    options = _qbert(hessian=hessian, allocation="hawq", avg_bits=2.5, bit_choices=(2, 3, 4))
    plan = convert(str(tiny_onnx["regression"]), tmp_path / "h.onnx", options)["plan"]
    alloc = plan.analysis["allocation"]
    assert "HAWQ" in alloc["rule"]
    model = load_ir(str(tiny_onnx["regression"]))
    sse = {b["layer"]: {int(k): v for k, v in b["weight_sse"].items()} for b in alloc["bits"]}
    for layer, by_bits in sse.items():  # recorded error = nearest rounding on that layer's grid, recomputed here
        assert by_bits[2] > by_bits[3] > by_bits[4] > 0
    layer0 = [t for t in plan.weights if t.layer == 0]
    assert {t.clip for t in layer0} == {"none"}
    for b in (2, 3, 4):  # recomputed from numerics: each weight's (unclipped) neuron-group grid at b bits
        total = 0.0
        for t in layer0:
            w = weight_array(model, t.name)
            params = numerics.lq_params(w, b, symmetric=False, granularity="neuron-group", groups=t.groups,
                                        heads=t.heads)
            total += float(np.sum((w - numerics.dequantize(numerics.quantize(w, params), params)) ** 2))
        assert sse[0][b] == pytest.approx(total, rel=1e-9)
    omega = {layer["layer"]: layer["omega"] for layer in hessian["layers"]}
    chosen = {b["layer"]: b["bits"] for b in alloc["bits"]}
    best = min(itertools.product((2, 3, 4), repeat=2), key=lambda bb: sum(omega[i] * sse[i][b] for i, b in enumerate(bb))
               if sum(bb) <= 5 else np.inf)
    assert tuple(chosen[i] for i in (0, 1)) == best and sum(best) <= 5
    with pytest.raises(BadInput, match="--mix fixes the bits"):
        convert(str(tiny_onnx["regression"]), tmp_path / "m.onnx", _qbert(hessian=hessian, allocation="hawq", mix=(2, 3)))
    assert not (tmp_path / "m.onnx").exists()


@needs_stsb
def test_qbert_plan_reapplies_without_hessian(qbert_converted, tiny_onnx, tmp_path, monkeypatch):
    root, summary, _ = qbert_converted
    import bert2onnxq.analyse.hessian as hessian

    def boom(*a, **k):
        raise AssertionError("the Hessian must not be recomputed for --plan")

    monkeypatch.setattr(hessian, "layer_sensitivities", boom)
    again = tmp_path / "again.onnx"
    convert(str(tiny_onnx["regression"]), again, plan=QuantPlan.load(root / "plan.json"))
    a = {i.name: i.raw_data for i in onnx.load(str(root / "q.onnx")).graph.initializer}
    b = {i.name: i.raw_data for i in onnx.load(str(again)).graph.initializer}
    assert a == b


@needs_stsb
def test_qbert_reverse_order_and_mix(qbert_converted, tiny_onnx, tmp_path):
    _, summary, _ = qbert_converted
    forward = {b["layer"]: b["bits"] for b in summary["plan"].analysis["allocation"]["bits"]}
    rev = convert(str(tiny_onnx["regression"]), tmp_path / "r.onnx", _qbert(order="reverse"))["plan"]
    backward = {b["layer"]: b["bits"] for b in rev.analysis["allocation"]["bits"]}
    assert backward == {0: forward[1], 1: forward[0]}  # same Hessian (seeded), bits swapped
    mix = convert(str(tiny_onnx["regression"]), tmp_path / "m.onnx", _qbert(mix=(2, 3)))["plan"]
    omegas = [layer["omega"] for layer in mix.analysis["hessian"]["layers"]]
    top = int(np.argmax(omegas))
    assert {t.layer: t.bits for t in mix.weights} == {top: 3, 1 - top: 2}


@needs_stsb
def test_qbert_reuses_a_recorded_hessian(qbert_converted, tiny_onnx, tmp_path, monkeypatch):
    root, summary, _ = qbert_converted
    import bert2onnxq.analyse.hessian as hessian

    monkeypatch.setattr(hessian, "layer_sensitivities", lambda *a, **k: pytest.fail("recomputed the Hessian"))
    record = summary["plan"].analysis["hessian"]
    plan = convert(str(tiny_onnx["regression"]), tmp_path / "m.onnx",
                   _qbert(task=None, hessian=record, mix=(2, 3)))["plan"]
    assert plan.analysis["hessian"] == record
    top = max(record["layers"], key=lambda entry: entry["omega"])["layer"]
    assert {t.layer: t.bits for t in plan.weights} == {top: 3, 1 - top: 2}
    with pytest.raises(BadInput, match="another model"):
        convert(str(tiny_onnx["regression"]), tmp_path / "x.onnx",
                _qbert(hessian={**record, "layers": record["layers"][:1]}))


@needs_stsb
def test_qbert_bad_input(tiny_onnx, tiny_models, tmp_path):
    from bert2onnxq.methods.qbert import QBertOptions

    out = tmp_path / "o.onnx"
    with pytest.raises(BadInput, match="needs --task"):
        convert(str(tiny_onnx["regression"]), out, ConvertOptions(method_options=QBertOptions()))
    other = make_tiny_bert(tmp_path / "other", "regression", seed=1)
    with pytest.raises(BadInput, match="not the one this ONNX was exported from"):
        convert(str(tiny_onnx["regression"]), out, _qbert(hf_model=str(other)))
    with pytest.raises(BadInput, match="pass --hf-model"):
        convert(str(tiny_onnx["regression"]), out, _qbert(hf_model=str(tmp_path)))  # no config.json
    with pytest.raises(BadInput, match="3 labels but stsb needs 1"):
        convert(str(tiny_onnx["regression"]), out, _qbert(hf_model=str(tiny_models["classification"])))
    with pytest.raises(BadInput, match="--mix"):
        convert(str(tiny_onnx["regression"]), out, _qbert(mix=(3, 2)))
    with pytest.raises(BadInput, match="--avg-bits"):
        convert(str(tiny_onnx["regression"]), out, _qbert(avg_bits=1.5))
    assert not out.exists()


def test_qbert_onnx_without_source_metadata(tiny_onnx, tmp_path):
    model = onnx.load(str(tiny_onnx["regression"]))
    kept = [p for p in model.metadata_props if p.key != "bert2onnxq.source_model"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    path = tmp_path / "nosource.onnx"
    onnx.save(model, str(path))
    with pytest.raises(BadInput, match="--hf-model DIR"):
        convert(str(path), tmp_path / "o.onnx", _qbert())
    assert not (tmp_path / "o.onnx").exists()


def test_plan_without_analysis_still_loads():
    plan = QuantPlan.from_json(json.dumps({"method": "lq", "weights": [], "version": 1}))
    assert plan.analysis == {} and replace(plan).analysis == {}


# --- CLI ------------------------------------------------------------------------------------------------


def test_cli_qbert_help_and_one_line_errors(tiny_onnx, tmp_path):
    from test_cli import assert_one_line_error, run_cli

    proc = run_cli("convert", "--help")
    assert proc.returncode == 0 and "--method qbert" in proc.stdout and "--hessian-batches" in proc.stdout
    out = tmp_path / "o.onnx"
    assert_one_line_error(run_cli("convert", "--model", str(tiny_onnx["regression"]), "--method", "qbert",
                                  "-o", str(out)), "needs --task")
    assert_one_line_error(run_cli("convert", "--model", str(tiny_onnx["regression"]), "--method", "qbert",
                                  "--task", "stsb", "--mix", "3/2", "-o", str(out)), "--mix 3/2")
    assert not out.exists()


@needs_stsb
def test_cli_qbert_json(tiny_onnx, tmp_path):
    from test_cli import run_cli

    out = tmp_path / "q.onnx"
    proc = run_cli("convert", "--model", str(tiny_onnx["regression"]), "--method", "qbert", "--task", "stsb",
                   "--data-dir", str(GLUE_DIR), "--groups", "6", "--hessian-batches", "2", "--hessian-batch-size", "4",
                   "--hessian-iters", "10", "--hessian-threads", "1", "--mix", "2/3", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert sorted(b["bits"] for b in summary["analysis"]["allocation"]["bits"]) == [2, 3]
    hess = summary["analysis"]["hessian"]
    assert hess["threads"] == 1 and hess["solver"] == "lanczos" and hess["unpadded"] is False and out.is_file()
    assert "qbert: 12 weights at 2/3 bits (neuron-group)" in summary["plan_summary"]


def test_qbert_convert_options_defaults():
    from bert2onnxq.methods import qbert_convert_options
    from bert2onnxq.methods.qbert import QBertOptions

    options = qbert_convert_options(QBertOptions(task="sst2"), emb_bits=None)
    assert (options.method, options.granularity, options.groups, options.symmetric, options.method_options.clip) == \
        ("qbert", "neuron-group", 128, False, "aciq")
    assert options.emb_bits is None and options.act_bits == 8

