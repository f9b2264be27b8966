"""bert2onnxq sensitivity: units of a plan, the variants it scores, the ranking and the kept-FP32 plan."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import WORDS, make_tiny_bert, run_cli


@pytest.fixture(scope="module")
def tiny_sst2(tmp_path_factory):
    from bert2onnxq.export import export

    root = tmp_path_factory.mktemp("sens")
    hf = make_tiny_bert(root / "hf", labels=("negative", "positive"), num_layers=3)
    fp32 = export(str(hf), root / "fp32" / "model.onnx")["output"]
    rng = np.random.default_rng(0)
    rows = ["sentence\tlabel"] + [" ".join(rng.choice(WORDS, 8)) + f"\t{i % 2}" for i in range(60)]
    (root / "glue" / "SST-2").mkdir(parents=True)
    (root / "glue" / "SST-2" / "dev.tsv").write_text("\n".join(rows) + "\n")
    return fp32, root / "glue"


def _plan(fp32, **options):
    from bert2onnxq.convert import decide
    from bert2onnxq.methods import convert_options
    from bert2onnxq.onnx_io import load_ir

    return decide(load_ir(fp32), convert_options(**options))


def test_units_and_variants(tiny_sst2, tmp_path):
    from bert2onnxq.convert import convert
    from bert2onnxq.onnx_io import load_ir, weight_array
    from bert2onnxq.search.sensitivity import only, plan_units, without

    fp32, _ = tiny_sst2
    plan = _plan(fp32, bits=3)
    layers, roles = plan_units(plan, "layer"), plan_units(plan, "role")
    assert [u.label for u in layers] == ["layer 0", "layer 1", "layer 2"] and len(roles) == 18
    assert roles[2].label == "layer 0 value" and roles[2].skip.endswith("layer.0.attention.self.value")
    unit = layers[1]
    alone, rest = only(plan, unit.names), without(plan, unit.names)
    assert {t.name for t in alone.weights} == set(unit.names) and not alone.embeddings
    assert {t.name for t in rest.weights} == {t.name for t in plan.weights} - set(unit.names) and rest.embeddings
    source = load_ir(fp32)
    out = tmp_path / "alone.onnx"
    convert(str(fp32), out, plan=alone)
    written = load_ir(out)
    for t in plan.weights:  # every weight outside the unit is the FP32 initializer, bit for bit
        if t.name not in unit.names:
            assert np.array_equal(weight_array(written, t.name), weight_array(source, t.name))
        else:
            assert t.name not in written.graph.initializers  # replaced by its quantized form


def test_run_ranks_by_logit_error_and_keeps_the_worst(tiny_sst2, tmp_path):
    from bert2onnxq.search import run_sensitivity

    fp32, glue = tiny_sst2
    plan = _plan(fp32, bits=2)
    report = run_sensitivity(fp32, "sst2", plan, tmp_path, samples=40, keep_worst=1, data_dir=glue)
    rows = {r["unit"]: r for r in report["rows"]}
    errors = [rows[u]["only"]["logit_rel_rms"] for u in report["ranking"]]
    assert errors == sorted(errors, reverse=True) and len(errors) == 3
    worst = rows[report["ranking"][0]]
    saved = json.loads((tmp_path / "keep-worst.plan.json").read_text())
    bits = {t["name"]: t["bits"] for t in saved["weights"]}  # the worst layer at 8 bits, the rest as planned
    assert bits == {t.name: 8 if t.layer == worst["layer"] else 2 for t in plan.weights}
    assert report["keep_worst"]["skip"] == [worst["skip"]] and report["keep_worst"]["bits"] == 8
    fp32_kept = run_sensitivity(fp32, "sst2", plan, tmp_path / "fp32", samples=40, keep_worst=1, keep_bits=None,
                                modes=("only",), data_dir=glue)
    saved = json.loads((tmp_path / "fp32" / "keep-worst.plan.json").read_text())
    worst = {r["unit"]: r for r in fp32_kept["rows"]}[fp32_kept["ranking"][0]]
    assert {t["name"] for t in saved["weights"]} == {t.name for t in plan.weights if t.layer != worst["layer"]}
    assert report["full"]["logit_rel_rms"] > 0 and all(r["only"]["agreement"] is not None for r in report["rows"])
    for name in ("sensitivity.json", "sensitivity.md", "sensitivity.png"):
        assert (tmp_path / name).is_file()
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]


def test_cli_by_role_from_a_quantized_file(tiny_sst2, tmp_path):
    from bert2onnxq.convert import convert
    from bert2onnxq.methods import convert_options

    fp32, glue = tiny_sst2
    q = tmp_path / "q.onnx"
    convert(str(fp32), q, convert_options(bits=4))
    proc = run_cli("sensitivity", "--model", str(fp32), "--task", "sst2", "--data-dir", str(glue), "--plan", str(q),
                   "--by", "role", "--mode", "only", "--samples", "20", "--keep-worst", "0", "-o", str(tmp_path / "s"), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert len(report["rows"]) == 18 and report["modes"] == ["only"] and report["keep_worst"] is None
