"""What a deployer is handed: predictions files, Optimum folders, the stored plan, labels matched by name,
the batch a number holds for, and outputs that are never lost or half-written."""

from __future__ import annotations

import json
import os
import re
import signal
import string
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, SHARED_MODELS, SQUAD_HELDOUT, needs_shared, run_cli

DEMO = REPO / "models" / "minilm-l6-sst2-demo"
DEMO_GLUE = REPO / "models" / "data" / "glue"


@pytest.fixture(scope="module")
def demo_fp32(tmp_path_factory):
    from bert2onnxq.export import export

    return Path(export(str(DEMO), tmp_path_factory.mktemp("demo") / "fp32" / "model.onnx")["output"])


def _set_labels(src: Path, dst: Path, labels: dict) -> Path:
    import onnx

    model = onnx.load(str(src))
    for p in model.metadata_props:
        if p.key == "bert2onnxq.labels":
            p.value = json.dumps(labels)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    for f in src.parent.iterdir():
        if f.name.startswith("tokenizer"):
            (dst.parent / f.name).write_bytes(f.read_bytes())
    return dst


def test_labels_mapped_by_name_and_forced(demo_fp32, tmp_path):
    from bert2onnxq.errors import BadInput
    from bert2onnxq.validate import Protocol, validate

    plain = validate(demo_fp32, "sst2", data_dir=DEMO_GLUE, protocol=Protocol(limit=200))
    swapped = _set_labels(demo_fp32, tmp_path / "swapped" / "model.onnx", {"0": "positive", "1": "negative"})
    remapped = validate(swapped, "sst2", data_dir=DEMO_GLUE, protocol=Protocol(limit=200))
    # the same logits, the class names swapped: every prediction flips, so accuracy is exactly the complement
    assert remapped["model"]["metrics"]["accuracy"] == pytest.approx(100 - plain["model"]["metrics"]["accuracy"])
    assert plain["labels"] == "by name" and "remapped" in remapped["labels"]
    rte = tmp_path / "rte.tsv"
    rte.write_text("index\tsentence1\tsentence2\tlabel\n0\tA man sleeps.\tA man is awake.\tnot_entailment\n"
                   "1\tA dog runs.\tAn animal moves.\tentailment\n")
    with pytest.raises(BadInput, match="are not task rte's"):
        validate(demo_fp32, "rte", data_file=rte)
    forced = validate(demo_fp32, "rte", data_file=rte, force=True)
    assert forced["labels"].startswith("by position, forced") and forced["examples"] == 2


def test_label_mapping_rules():
    from bert2onnxq.tasks import get_task
    from bert2onnxq.tasks.glue import label_mapping

    mnli = get_task("mnli")
    assert label_mapping(mnli, {"0": "CONTRADICTION", "1": "NEUTRAL", "2": "ENTAILMENT"})[0] == {0: 2, 1: 1, 2: 0}
    assert label_mapping(mnli, {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}) == ({0: 0, 1: 1, 2: 2},
                                                                                   "by position (the model's labels are unnamed)")
    assert label_mapping(get_task("sst2"), {"0": "NEG", "1": "POS"})[0] == {0: 0, 1: 1}
    assert label_mapping(get_task("qqp"), {"0": "negative", "1": "positive"})[0] is None


def test_batch_rule_and_default_protocol(demo_fp32, tmp_path):
    from bert2onnxq.convert import convert
    from bert2onnxq.methods import convert_options
    from bert2onnxq.validate import Protocol, batch_rule, validate

    dynamic, weight_only = tmp_path / "d.onnx", tmp_path / "w.onnx"
    convert(str(demo_fp32), dynamic, convert_options(bits=8))
    convert(str(demo_fp32), weight_only, convert_options(bits=4, granularity="group", group_size=32, act_bits=None))
    assert batch_rule(dynamic)[0] == 1 and batch_rule(weight_only)[0] == 32 and batch_rule(demo_fp32)[0] == 32
    r = validate(dynamic, "sst2", reference=demo_fp32, data_dir=DEMO_GLUE, protocol=Protocol(limit=64))
    assert r["protocol"]["batch_size"] == 1 and r["reference"]["batch_size"] == 32
    assert "DynamicQuantizeLinear" in r["protocol"]["batch_rule"]
    given = validate(dynamic, "sst2", data_dir=DEMO_GLUE, protocol=Protocol(limit=64, batch_size=8))
    assert given["protocol"]["batch_size"] == 8


def test_glue_predictions_file(demo_fp32, tmp_path):
    from bert2onnxq.tasks import get_task
    from bert2onnxq.validate import Protocol, validate

    out = tmp_path / "SST-2.tsv"
    r = validate(demo_fp32, "sst2", data_dir=DEMO_GLUE, protocol=Protocol(limit=50), predictions_out=out)
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert rows[0] == ["index", "prediction"] and len(rows) == 51
    labels = [e.label for e in get_task("sst2").load_examples(data_dir=DEMO_GLUE, limit=50)]
    accuracy = 100 * sum(int(p) == y for (_, p), y in zip(rows[1:], labels)) / 50
    assert accuracy == pytest.approx(r["model"]["metrics"]["accuracy"])


# the official evaluate-v1.1.py normalisation and scores, written out again here on purpose
def _normalize(s):
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _f1(prediction, truth):
    p, t = _normalize(prediction).split(), _normalize(truth).split()
    same = sum((Counter(p) & Counter(t)).values())
    if same == 0:
        return 0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


def _official(dataset, predictions):
    f1 = em = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue
                truths = [a["text"] for a in qa["answers"]]
                em += max(_normalize(predictions[qa["id"]]) == _normalize(t) for t in truths)
                f1 += max(_f1(predictions[qa["id"]], t) for t in truths)
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f1 / total}


@needs_shared(SHARED_MODELS / "minilm-l6-squad", SQUAD_HELDOUT)
def test_squad_predictions_score_as_the_official_script(tmp_path):
    from bert2onnxq.export import export
    from bert2onnxq.validate import Protocol, validate

    fp32 = export(str(SHARED_MODELS / "minilm-l6-squad"), tmp_path / "fp32" / "model.onnx")["output"]
    data = json.loads(SQUAD_HELDOUT.read_text())
    data["data"] = data["data"][:2]
    small = tmp_path / "two-articles.json"
    small.write_text(json.dumps(data))
    out = tmp_path / "predictions.json"
    r = validate(fp32, "squad", data_file=small, protocol=Protocol(), predictions_out=out)
    predictions = json.loads(out.read_text())
    assert len(predictions) == r["examples"] > 50
    official = _official(data["data"], predictions)
    assert official["f1"] == pytest.approx(r["model"]["metrics"]["f1"], abs=1e-9)
    assert official["exact_match"] == pytest.approx(r["model"]["metrics"]["exact_match"], abs=1e-9)
    assert r["model"]["metrics"]["f1"] > 40  # a real model answers


def test_convert_save_dir_from_an_export_save_dir(tiny_models, tmp_path):
    from bert2onnxq.inspect import stored_plan

    assert run_cli("export", "--model", str(tiny_models["classification"]), "--save-dir", str(tmp_path / "fp32")).returncode == 0
    proc = run_cli("convert", "--model", str(tmp_path / "fp32"), "--bits", "4", "--granularity", "group",
                   "--group-size", "16", "--save-dir", str(tmp_path / "q4"), "--plan-out", str(tmp_path / "q4" / "plan.json"))
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "q4"
    assert {"model.onnx", "config.json", "model.md", "plan.json", "tokenizer.json"} <= {f.name for f in folder.iterdir()}
    assert json.loads((folder / "config.json").read_text()) == json.loads((tmp_path / "fp32" / "config.json").read_text())
    assert json.loads(stored_plan(folder / "model.onnx")) == json.loads((folder / "plan.json").read_text())
    assert not [f for f in folder.iterdir() if f.name.startswith(".")]
    optimum = pytest.importorskip("optimum.onnxruntime")  # checked in Optimum's own venv: benchmarks/optimum_check.py
    model = optimum.ORTModelForSequenceClassification.from_pretrained(folder)
    assert model is not None


def test_inspect_plan_round_trip(tiny_onnx, tmp_path):
    from bert2onnxq.convert import convert
    from bert2onnxq.methods import convert_options

    first = tmp_path / "a.onnx"
    convert(str(tiny_onnx["classification"]), first, convert_options(method="aciq", bits=3))
    proc = run_cli("inspect", str(first), "--plan")
    assert proc.returncode == 0
    (tmp_path / "plan.json").write_text(proc.stdout)
    assert run_cli("convert", "--model", str(tiny_onnx["classification"]), "--plan", str(tmp_path / "plan.json"),
                   "-o", str(tmp_path / "b.onnx")).returncode == 0
    assert (tmp_path / "b.onnx").read_bytes() == first.read_bytes()


def test_failing_card_keeps_the_old_output(tiny_onnx, tmp_path):
    from bert2onnxq.convert import convert
    from bert2onnxq.methods import convert_options

    out = tmp_path / "q.onnx"
    out.write_bytes(b"old model")
    (tmp_path / "q.md").write_text("old card")

    def card(model_path, summary):
        raise OSError("disk full while writing the card")

    with pytest.raises(OSError):
        convert(str(tiny_onnx["classification"]), out, convert_options(bits=8), card=card)
    assert out.read_bytes() == b"old model" and (tmp_path / "q.md").read_text() == "old card"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["q.md", "q.onnx"]


def test_max_drop_outside_budget_exits_3(tiny_onnx, tmp_path, monkeypatch):
    from click.testing import CliRunner

    import bert2onnxq.search as search
    from bert2onnxq.cli import main

    record = {"output": str(tmp_path / "q.onnx"), "max_drop": 1.0, "primary_metric": "accuracy",
              "chosen": {"label": "lq W4", "bytes": 2**20}, "best_uniform": {"label": "lq W4", "bytes": 2**20},
              "report": {"data": "dev", "examples": 10, "metrics": {"accuracy": 80.0}, "fp32_metrics": {"accuracy": 85.0},
                         "drop": {"accuracy": 5.0}, "within_budget": False},
              "files": {"plan": "p", "search": "s", "card": "c"}}
    monkeypatch.setattr(search, "convert_max_drop", lambda *a, **k: record)
    result = CliRunner().invoke(main, ["convert", "--model", str(tiny_onnx["classification"]), "--max-drop", "1",
                                       "--task", "sst2", "-o", str(tmp_path / "q.onnx")])
    assert result.exit_code == 3
    assert "not within budget" in result.output and "+5.00" in result.output
    record["report"]["within_budget"] = True
    assert CliRunner().invoke(main, ["convert", "--model", str(tiny_onnx["classification"]), "--max-drop", "1",
                                     "--task", "sst2", "-o", str(tmp_path / "q.onnx")]).exit_code == 0


def test_sigterm_leaves_no_temporary_files(tiny_models, tmp_path):
    out = tmp_path / "out" / "q.onnx"
    proc = subprocess.Popen([sys.executable, "-m", "bert2onnxq", "convert", "--model", str(tiny_models["classification"]),
                             "--bits", "4", "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.parent.is_dir() and any(out.parent.glob(".q.onnx.*.tmp")):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be terminated"
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "terminated" in stderr and "Traceback" not in stderr
    assert not out.parent.exists() or not list(out.parent.iterdir())
