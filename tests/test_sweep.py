"""sweep: cells, the results files, model cards, resuming a killed sweep, executors, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import assert_one_line_error, run_cli


# ---------------------------------------------------------------------------------------------------------------
# cells


def test_cell_ids_are_stable_and_ignore_defaults():
    from bert2onnxq.sweep import Cell, Grid, make_cells

    a = Cell.of({"method": "lq", "bits": 4})
    assert a == Cell.of({"method": "lq", "bits": 4, "granularity": "channel", "group_size": 128})
    # pinned: a resumed sweep must find the cells an earlier version wrote
    assert a.id == "lq-w4-0c10d46c"
    assert Cell.of({"method": "lq", "bits": 4, "granularity": "group", "group_size": 32}).id != a.id
    cells = make_cells(["lq", "ocs"], [8, 2], Grid(granularities=("channel", "group"), group_size=32, ocs_ratios=(0.01, 0.05)))
    assert len(cells) == 2 * 2 + 2 * 2 * 2 and len({c.id for c in cells}) == len(cells)
    assert {c.variant for c in cells if c.method == "ocs"} == {
        "OCS r=0.01 per-channel", "OCS r=0.05 per-channel", "OCS r=0.01 group-32", "OCS r=0.05 group-32"}


def test_method_and_bits_errors():
    from bert2onnxq.errors import BadInput
    from bert2onnxq.sweep import check_bits, check_methods, parse_setting

    assert check_methods(["lq", "qbert", "lq"]) == ["lq", "qbert"]
    with pytest.raises(BadInput, match="unknown method 'foo'"):
        check_methods(["foo"])
    with pytest.raises(BadInput, match="outside 2..8"):
        check_bits([8, 1])
    assert parse_setting("emb_bits=4") == ("emb_bits", 4)
    assert parse_setting("symmetric=false") == ("symmetric", False)
    assert parse_setting("skip=a,b") == ("skip", ("a", "b"))
    with pytest.raises(BadInput, match="--set bits"):
        parse_setting("bits=4")


# ---------------------------------------------------------------------------------------------------------------
# a whole sweep


@pytest.fixture(scope="module")
def swept(stsb, tmp_path_factory):
    from bert2onnxq.sweep import run_sweep

    out = tmp_path_factory.mktemp("sweep")
    events = []
    result = run_sweep(str(stsb["fp32"]), out, "stsb", ["lq", "aciq"], [8, 4, 2], data_dir=stsb["glue"],
                       threads=1, on_event=lambda kind, payload: events.append(kind))
    return out, result, events


def test_sweep_writes_every_file(swept):
    import csv

    out, result, events = swept
    assert len(result["ran"]) == 6 and not result["failed"] and not result["skipped"]
    assert events[:2] == ["fp32", "plan"] and events.count("cell") == 6
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {(r["method"], r["bits"]) for r in rows} == {(m, b) for m in ("lq", "aciq") for b in (8, 4, 2)}
    for r in rows:
        assert r["status"] == "ok" and r["fp32_metrics"]["pearson"] == pytest.approx(100, abs=1e-3)
        assert r["pct_of_fp32"]["pearson"] == pytest.approx(r["metrics"]["pearson"], rel=1e-4)
        assert r["bytes"] == (out / "models" / r["id"] / "model.onnx").stat().st_size < r["fp32_bytes"]
        assert r["latency_ratio"] > 0 and r["latency"]["setup"]["seq"] == 128
        assert (out / "cells" / f"{r['id']}.json").is_file()
    by = {(r["method"], r["bits"]): r for r in rows}
    # the packed payload shrinks with the bits; on this tiny graph the files themselves need not (2-4 bits are
    # asymmetric by default: zero points and a Cast/Sub per weight outweigh the bits saved on 16x16 matrices)
    assert by[("lq", 2)]["ideal_bytes"] < by[("lq", 4)]["ideal_bytes"] < by[("lq", 8)]["ideal_bytes"]
    # every cell moved the logits, 8 bits only a little; no order across bits: the tiny model's scores barely
    # spread, and both its Pearson and its logit error at 2-8 bits move with the CPU's float rounding and the
    # thread layout (LQ-8 Pearson 83.5 < LQ-4 97.0 on one machine; LQ-2 logit error < LQ-8's in one CI run)
    assert all(0 < r["logit_rel_rms"] < 1 for r in rows) and by[("lq", 8)]["logit_rel_rms"] < 0.05
    assert all(r["layer_bits"]["layers"] == [r["bits"]] * 2 for r in rows)
    table = list(csv.DictReader((out / "results.csv").open()))
    assert len(table) == 6 and {"method", "bits", "metric", "pct_of_fp32", "size_mib", "latency_ratio"} <= set(table[0])
    assert {float(t["metric"]) for t in table} == {r["metrics"]["pearson"] for r in rows}
    md = (out / "results.md").read_text()
    assert "| Method | W8 | W4 | W2 |" in md
    lq_line = next(line for line in md.splitlines() if line.startswith("| LQ per-channel |"))
    assert f"{by[('lq', 2)]['metrics']['pearson']:.2f}" in lq_line.split("|")[4]  # W2 is the third bits column
    assert (out / "metric_vs_size.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "layer_bits.png").exists()  # no mixed plan in a uniform sweep


def test_cell_model_card_has_the_fields(swept):
    out, result, _ = swept
    card = (out / "models" / result["ran"][0] / "model.md").read_text()
    for field in ("Source model", "Plan", "Weight bits per layer", "File size", "Accuracy vs FP32", "pearson",
                  "drop (points)", "Latency", "x the FP32 export's time", "ONNX Runtime", "Session options",
                  "qdq_matmulnbits_accuracy_level", "Reproduce"):
        assert field in card, field


def test_layer_bits_plot_for_mixed_rows(tmp_path):
    from bert2onnxq.report import plot_layer_bits

    row = {"status": "ok", "variant": "mixed", "layer_bits": {"layer_index": [0, 1, 2], "layers": [8, 4, 8],
                                                              "mixed": True, "mean": 6.67}}
    assert plot_layer_bits([row], tmp_path / "lb.png")
    assert (tmp_path / "lb.png").read_bytes()[:4] == b"\x89PNG"
    assert not plot_layer_bits([{**row, "layer_bits": {**row["layer_bits"], "mixed": False}}], tmp_path / "none.png")


def test_sweep_resumes_after_kill(stsb, tmp_path):
    """Kill a real sweep process after its first cell file appears; the re-run does only the rest."""
    out = tmp_path / "res"
    args = ["sweep", "--model", str(stsb["fp32"]), "--task", "stsb", "--data-dir", str(stsb["glue"]),
            "--methods", "lq,aciq", "--bits", "8,6,4,3,2", "--no-latency", "--threads", "1", "-o", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "bert2onnxq", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not list((out / "cells").glob("*.json")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {f.name: f.read_bytes() for f in (out / "cells").glob("*.json")}
    assert 1 <= len(before) < 10, "the sweep should have been killed midway"
    for data in before.values():  # atomic: every cell file there is whole
        assert json.loads(data)["status"] == "ok"
    assert not (out / "results.md").exists()

    again = run_cli(*args, "--jobs", "2", "--json")
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    done_before = {name.removesuffix(".json") for name in before}
    assert set(result["skipped"]) == done_before
    assert set(result["ran"]) == set(result["cells"]) - done_before and len(result["cells"]) == 10
    for name, data in before.items():  # finished cells were not redone
        assert (out / "cells" / name).read_bytes() == data
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert len(rows) == 10 and all(r["status"] == "ok" for r in rows)
    assert not list((out / "models").glob("*/.*.tmp"))  # the killed cell's temporary folder was cleaned


def test_resume_from_another_directory_skips_every_cell(swept, stsb, monkeypatch):
    from bert2onnxq.sweep import run_sweep

    out, first, _ = swept
    monkeypatch.chdir(stsb["fp32"].parent)
    again = run_sweep(stsb["fp32"].name, out, "stsb", ["lq", "aciq"], [8, 4, 2], data_dir=stsb["glue"], threads=1)
    assert again["ran"] == [] and set(again["skipped"]) == set(first["ran"])


def test_sweep_refuses_another_sweeps_folder(swept, stsb):
    from bert2onnxq.errors import BadInput
    from bert2onnxq.sweep import run_sweep

    out, _, _ = swept
    with pytest.raises(BadInput, match="holds a sweep of"):
        run_sweep(str(stsb["fp32"]), out, "stsb", ["lq"], [8], data_dir=stsb["glue"], limit=5)


@pytest.mark.parametrize("args,needle", [
    (["--methods", "lq,foo"], "unknown method 'foo'"),
    (["--methods", "gptq"], "unknown method 'gptq'"),
    (["--bits", "8,9"], "--bits 9 is outside 2..8"),
    (["--bits", "8,x"], "comma-separated integers"),
    (["--set", "nope=1"], "--set nope"),
])
def test_sweep_bad_input(stsb, tmp_path, args, needle):
    out = tmp_path / "res"
    proc = run_cli("sweep", "--model", str(stsb["fp32"]), "--task", "stsb", "--data-dir", str(stsb["glue"]),
                   "-o", str(out), *args)
    assert_one_line_error(proc, needle)
    assert not (out / "cells").exists()


def test_sweep_unwritable_output(stsb, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = run_cli("sweep", "--model", str(stsb["fp32"]), "--task", "stsb", "-o", str(blocker / "res"))
    assert_one_line_error(proc, "cannot write")


def test_sweep_help_has_examples():
    proc = run_cli("sweep", "--help")
    assert proc.returncode == 0 and "Examples:" in proc.stdout and "--executor" in proc.stdout


def test_ray_executor(stsb, tmp_path):
    try:
        import ray  # noqa: F401
    except ImportError:
        proc = run_cli("sweep", "--model", str(stsb["fp32"]), "--task", "stsb", "--data-dir", str(stsb["glue"]),
                       "--executor", "ray", "-o", str(tmp_path / "res"))
        assert_one_line_error(proc, "pip install 'bert2onnxq[ray]'")
        return
    from bert2onnxq.sweep import run_sweep

    result = run_sweep(str(stsb["fp32"]), tmp_path / "res", "stsb", ["lq"], [8, 4], data_dir=stsb["glue"],
                       executor="ray", latency=False)
    assert len(result["ran"]) == 2 and not result["failed"]
    assert len(list((tmp_path / "res" / "cells").glob("*.json"))) == 2


def test_cells_that_calibrate_activations(stsb, tmp_path):
    """--set ocs_activations=true / act_calib=static: cells calibrate on the task's train split."""
    from bert2onnxq.sweep import Grid, run_sweep

    out = tmp_path / "cal"
    grid = Grid(extra=(("ocs_activations", True), ("act_calib", "static")))
    result = run_sweep(str(stsb["fp32"]), out, "stsb", ["ocs"], [8], grid, data_dir=stsb["glue"], latency=False,
                       threads=1)
    assert not result["failed"] and len(result["ran"]) == 1
    plan = json.loads((out / "models" / result["ran"][0] / "plan.json").read_text())
    assert plan["activations"]["mode"] == "static" and plan["activations"]["splits"] and plan["activations"]["ranges"]


def test_gptq_cells(stsb, tmp_path):
    """--set rounding=gptq: every cell rounds with GPTQ on the task's train inputs; its id differs from nearest's."""
    from bert2onnxq.sweep import Cell, Grid, make_cells, run_sweep

    grid = Grid(extra=(("rounding", "gptq"),))
    (cell,) = make_cells(["lq"], [3], grid)
    assert cell.id != Cell.of({"method": "lq", "bits": 3}).id and "rounding=gptq" in cell.variant
    result = run_sweep(str(stsb["fp32"]), tmp_path / "g", "stsb", ["lq"], [3], grid, data_dir=stsb["glue"],
                       latency=False, threads=1)
    assert not result["failed"] and result["ran"] == [cell.id]
    plan = json.loads((tmp_path / "g" / "models" / cell.id / "plan.json").read_text())
    assert plan["rounding"]["method"] == "gptq" and all(t["stats"]["out_err"] < t["stats"]["out_err_nearest"]
                                                        for t in plan["weights"])


def test_qbert_cells_share_one_hessian(stsb, tmp_path):
    """Q-BERT in a sweep: the Hessian is computed once (qbert-hessian.json) and each cell allocates bits
    around its column from it; a re-run reuses both."""
    from bert2onnxq.sweep import qbert_choices, run_sweep

    out = tmp_path / "qb"
    events = []
    result = run_sweep(str(stsb["fp32"]), out, "stsb", ["qbert"], [4, 3], data_dir=stsb["glue"], latency=False,
                       threads=1, on_event=lambda kind, payload: events.append(kind))
    assert events.count("hessian") == 1 and not result["failed"] and len(result["ran"]) == 2
    record = json.loads((out / "qbert-hessian.json").read_text())
    assert [entry["layer"] for entry in record["layers"]] == [0, 1]
    rows = {r["bits"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    for bits, row in rows.items():
        layers = row["layer_bits"]["layers"]
        assert set(layers) <= set(qbert_choices(bits)) and sum(layers) / len(layers) <= bits
        assert row["options"]["granularity"] == "neuron-group" and "symmetric" not in row["options"]
        assert row["variant"] == "Q-BERT bits±1 by Ω neuron groups"
    plan = json.loads((out / "models" / rows[3]["id"] / "plan.json").read_text())
    # the grid follows each layer's bits: asymmetric at 2-4, symmetric from 5
    assert {(w["bits"], w["symmetric"]) for w in plan["weights"]} <= {(2, False), (3, False), (4, False)}
    assert len({w["bits"] for w in plan["weights"]}) == 2
    assert plan["method"] == "qbert" and plan["analysis"]["hessian"]["layers"] == record["layers"]
    again = run_sweep(str(stsb["fp32"]), out, "stsb", ["qbert"], [4, 3], data_dir=stsb["glue"], latency=False,
                      threads=1, on_event=lambda kind, payload: events.append(kind))
    assert not again["ran"] and len(again["skipped"]) == 2 and events.count("hessian") == 1


def _slow_cell(cell, setup):
    """A cell for the pool test: the first finishes at once, the others only after 5 s (then leave a mark)."""
    import time as _time
    from pathlib import Path as _Path

    if cell == 0:
        return {"cell": 0}
    _time.sleep(5)
    (_Path(setup) / f"ran-{cell}").write_text("")
    return {"cell": cell}


def test_interrupted_local_pool_stops_at_once(tmp_path):
    """Ctrl-C while `--jobs 2` runs: the workers are stopped, no further cell starts or finishes."""
    import time

    from bert2onnxq.sweep.execute import execute

    first = None
    with pytest.raises(KeyboardInterrupt):
        for row in execute(list(range(6)), str(tmp_path), 2, "local", None, _slow_cell, None):
            assert row == {"cell": 0}
            first = time.monotonic()
            raise KeyboardInterrupt
    assert time.monotonic() - first < 2.5  # not the 5 s the running cells would take
    time.sleep(6)
    assert not list(tmp_path.glob("ran-*"))
