"""bench and inspect: results that match the files, JSON that parses, and one-line errors for bad input."""

from __future__ import annotations

import json

import onnx
import pytest
from test_cli import assert_one_line_error, run_cli

from bert2onnxq.bench import BenchSettings, bench, synthetic_feeds
from bert2onnxq.convert import convert
from bert2onnxq.errors import BadInput
from bert2onnxq.inspect import inspect_model
from bert2onnxq.methods import convert_options

FAST = dict(warmup=1, rounds=2, runs_per_round=1, threads=1)


@pytest.fixture(scope="module")
def quantized(tiny_onnx, tmp_path_factory):
    root = tmp_path_factory.mktemp("bi")
    src = str(tiny_onnx["classification"])
    files = {"lq8": root / "lq8.onnx", "g4": root / "g4.onnx", "ocs3": root / "ocs3.onnx"}
    plans = {"lq8": convert(src, files["lq8"], convert_options())["plan"],
             "g4": convert(src, files["g4"], convert_options(bits=4, granularity="group", group_size=16, symmetric=False))["plan"],
             "ocs3": convert(src, files["ocs3"], convert_options(method="ocs", bits=3, ocs_ratio=0.05))["plan"]}
    return files, plans


def _relu_model(path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])), str(path))
    return path


def test_bench_side_by_side(tiny_onnx, quantized):
    fp32 = tiny_onnx["classification"]
    files, _ = quantized
    report = bench([fp32, files["lq8"], files["g4"]], BenchSettings(batch=2, seq=16, **FAST))
    models = report["models"]
    assert [m["path"] for m in models] == [str(fp32), str(files["lq8"]), str(files["g4"])]
    assert models[0]["ratio_to_first"] == 1.0
    for m, path in zip(models, (fp32, files["lq8"], files["g4"])):
        assert m["bytes"] == path.stat().st_size and m["runs"] == 2 and len(m["round_medians_ms"]) == 2
        assert 0 < m["p10_ms"] <= m["median_ms"] <= m["p90_ms"]
        assert m["throughput_seq_per_s"] == pytest.approx(2 / (m["median_ms"] / 1000))
        assert m["peak_memory_bytes"] > 0  # a fresh process loaded and ran it
        assert m["numerics"]["identical"]  # threads=1 vs ORT's default threads: same numbers
        assert m["runtime"]["numerics_options"]["session.qdq_matmulnbits_accuracy_level"].startswith("unset")
    assert len(report["load_average_before"]) == 3 and report["settings"]["batch"] == 2


def test_bench_feeds_and_bad_input(tiny_onnx, tmp_path):
    feeds = synthetic_feeds(["input_ids", "attention_mask"], 3, 7, vocab=60)
    assert feeds["input_ids"].shape == (3, 7) and feeds["input_ids"].max() < 60 and set(feeds) == {"input_ids", "attention_mask"}
    with pytest.raises(BadInput, match="no input_ids"):
        bench([_relu_model(tmp_path / "relu.onnx")], BenchSettings(**FAST))
    with pytest.raises(BadInput, match="at least 1"):
        bench([tiny_onnx["classification"]], BenchSettings(batch=0))


def test_bench_cli_json_and_table(tiny_onnx, quantized, tmp_path):
    files, _ = quantized
    args = ["bench", str(files["lq8"]), "--vs", str(tiny_onnx["classification"]), "--seq", "16", "--rounds", "2",
            "--runs-per-round", "1", "--warmup", "1", "--threads", "1", "--no-memory"]
    proc = run_cli(*args, "--json", "--batch", "1", "--batch", "2")
    assert proc.returncode == 0, proc.stderr
    reports = json.loads(proc.stdout)
    assert [r["settings"]["batch"] for r in reports] == [1, 2] and len(reports[0]["models"]) == 2
    proc = run_cli(*args)
    assert proc.returncode == 0 and "x first" in proc.stdout and "lq8.onnx" in proc.stdout
    assert "Examples:" in run_cli("bench", "--help").stdout


def test_bench_cli_errors(tmp_path, tiny_onnx):
    assert_one_line_error(run_cli("bench", str(tmp_path / "missing.onnx")), "does not exist")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 not protobuf" * 10)
    assert_one_line_error(run_cli("bench", str(tiny_onnx["classification"]), "--vs", str(bad)), "not a readable ONNX")
    assert_one_line_error(run_cli("bench", str(_relu_model(tmp_path / "relu.onnx"))), "no input_ids")
    assert_one_line_error(run_cli("bench", str(tiny_onnx["classification"]), "--session-config", "nokey"), "KEY=VALUE")


def test_inspect_quantized(quantized):
    files, plans = quantized
    r = inspect_model(files["g4"])
    plan = plans["g4"]
    enc = [w for w in r["weights"] if w["part"] == "encoder"]
    assert len(enc) == 12 and len([w for w in r["weights"] if w["part"] == "embeddings"]) == 3
    assert {(w["layer"], w["role"]) for w in enc} == {(t.layer, t.role) for t in plan.weights}
    for w in enc:
        assert (w["bits"], w["container"], w["granularity"], w["group_size"], w["kernel"]) == (4, "uint4", "group", 16, "matmulnbits")
    assert r["plan"]["target"] == "cpu" and r["plan_summary"] == plan.summary()
    sizes = r["sizes"]
    assert sizes["file_bytes"] == files["g4"].stat().st_size
    assert sum(p["bytes"] for p in sizes["parts"].values()) == sizes["initializer_bytes"]
    assert sizes["parts"]["encoder"]["ideal_bytes"] <= sizes["parts"]["encoder"]["bytes"]
    assert r["runtime"]["linear_kernels"]["nbits"] == 12
    assert r["runtime"]["matmulnbits"] == [{"bits": 4, "block_size": 16, "accuracy_level": 4}]
    ocs = inspect_model(files["ocs3"], runtime=False)
    splits = {(w["layer"], w["role"]): (w["ocs_splits"], w["ocs_form"]) for w in ocs["weights"] if w["part"] == "encoder"}
    assert splits == {(t.layer, t.role): (len(t.ocs_channels), "fold") for t in plans["ocs3"].weights}
    assert "runtime" not in ocs


def test_inspect_fp32_and_ort_quantized(tiny_onnx, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = inspect_model(tiny_onnx["classification"])
    assert "plan" not in fp32 and {(w["bits"], w["container"]) for w in fp32["weights"]} == {(32, "float")}
    assert fp32["runtime"]["linear_kernels"]["fp32"] >= 12
    out = tmp_path / "ort.onnx"
    quantize_dynamic(str(tiny_onnx["classification"]), str(out), weight_type=QuantType.QInt8, per_channel=True)
    r = inspect_model(out)
    enc = [w for w in r["weights"] if w["part"] == "encoder"]
    assert len(enc) == 12 and {(w["bits"], w["container"], w["granularity"]) for w in enc} == {(8, "int8", "channel")}
    assert r["runtime"]["linear_kernels"]["int8"] >= 12


def test_inspect_cli(quantized, tmp_path):
    files, _ = quantized
    proc = run_cli("inspect", str(files["ocs3"]), "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["plan"]["ocs"]["folded_tensors"] == 12 and r["runtime"]["ocs_gathers"] == 0
    proc = run_cli("inspect", str(files["lq8"]))
    assert proc.returncode == 0 and "weights" in proc.stdout and "attention_output" in proc.stdout and "linear layers" in proc.stdout
    assert "Examples:" in run_cli("inspect", "--help").stdout
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 not protobuf" * 10)
    assert_one_line_error(run_cli("inspect", str(bad)), "not a readable ONNX")
    assert_one_line_error(run_cli("inspect", str(tmp_path / "model.txt")), "not an .onnx file")
    assert_one_line_error(run_cli("inspect", str(tmp_path / "missing.onnx")), "does not exist")
