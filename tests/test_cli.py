"""CLI: bad input gives one line on stderr, a non-zero exit, no traceback and no output file."""

from __future__ import annotations

import json

import pytest

from conftest import GLUE_DIR, assert_one_line_error, needs_shared, run_cli


def test_help_has_examples():
    for command in ("export", "validate"):
        proc = run_cli(command, "--help")
        assert proc.returncode == 0 and "Examples:" in proc.stdout


def test_export_path_that_is_not_a_model(tmp_path):
    out = tmp_path / "o.onnx"
    assert_one_line_error(run_cli("export", "--model", str(tmp_path), "-o", str(out)), "no config.json")
    assert not out.exists()


def test_export_unwritable_output(tiny_models, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = run_cli("export", "--model", str(tiny_models["classification"]), "-o", str(blocker / "m.onnx"))
    assert_one_line_error(proc, "cannot write")


def test_validate_corrupt_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not protobuf" * 10)
    assert_one_line_error(run_cli("validate", str(bad), "--task", "sst2", "--data-dir", str(tmp_path)), "not a readable ONNX")


def test_validate_unknown_task(tiny_onnx):
    proc = run_cli("validate", str(tiny_onnx["classification"]), "--task", "nope")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "nope" in proc.stderr


def test_validate_data_dir_without_task(tiny_onnx, tmp_path):
    proc = run_cli("validate", str(tiny_onnx["classification"]), "--task", "mnli", "--data-dir", str(tmp_path))
    assert_one_line_error(proc, "MNLI")


def test_validate_head_mismatch(tiny_onnx, tmp_path):
    proc = run_cli("validate", str(tiny_onnx["question-answering"]), "--task", "sst2", "--data-dir", str(tmp_path))
    assert_one_line_error(proc, "question-answering head")


def test_cuda_without_gpu(tiny_onnx, tmp_path):
    import onnxruntime as ort
    from stsb_data import make_stsb

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    glue = make_stsb(tiny_onnx["regression"], tmp_path / "glue", dev=4, train=4)["glue"]  # no ../shared needed
    proc = run_cli("validate", str(tiny_onnx["regression"]), "--task", "stsb", "--device", "cuda",
                   "--data-dir", str(glue), "--limit", "4")
    assert_one_line_error(proc, "CUDAExecutionProvider")


@needs_shared(GLUE_DIR / "STS-B")
def test_validate_json_and_reference(tiny_onnx):
    model = str(tiny_onnx["regression"])
    proc = run_cli("validate", model, "--task", "stsb", "--data-dir", str(GLUE_DIR), "--limit", "40",
                   "--reference", model, "--json", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["examples"] == 40 and set(result["model"]["metrics"]) == {"pearson", "spearmanr"}
    cmp = result["comparison"]
    assert cmp["max_logit_diff"] == 0.0 and all(v == 0.0 for v in cmp["drop"].values())
    assert result["model"]["runtime"]["providers"] == ["CPUExecutionProvider"]
    assert result["model"]["runtime"]["intra_op_num_threads"] == 1


def test_convert_help_and_bad_bits(tiny_onnx, tmp_path):
    assert "Examples:" in run_cli("convert", "--help").stdout
    out = tmp_path / "q.onnx"
    proc = run_cli("convert", "--model", str(tiny_onnx["classification"]), "--bits", "9", "-o", str(out))
    assert_one_line_error(proc, "outside 2..8")
    assert not out.exists()


def test_convert_bad_plan_and_quantized_input(tiny_onnx, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text('{"version": 1, "method": "lq"}')
    proc = run_cli("convert", "--model", str(tiny_onnx["classification"]), "--plan", str(plan), "-o", str(tmp_path / "a.onnx"))
    assert_one_line_error(proc, "not a bert2onnxq plan")
    q = tmp_path / "q.onnx"
    assert run_cli("convert", "--model", str(tiny_onnx["classification"]), "--bits", "4", "-o", str(q), "--json").returncode == 0
    assert_one_line_error(run_cli("convert", "--model", str(q), "-o", str(tmp_path / "b.onnx")), "already quantized")
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "b.onnx").exists()


@pytest.mark.parametrize("args,needle", [(["--method", "lq", "--ocs-ratio", "0.05"], "--ocs-ratio applies to --method ocs"),
                                         (["--method", "lq", "--clip", "aciq"], "--clip applies to --method ocs or qbert"),
                                         (["--method", "aciq", "--avg-bits", "3"], "--avg-bits applies to --method qbert"),
                                         (["--method", "ocs", "--hessian-from", "p.json"], "--hessian-from applies to"),
                                         (["--method", "ocs", "--aciq-dist", "gauss"], None)])
def test_convert_refuses_options_of_another_method(tiny_onnx, tmp_path, args, needle):
    out = tmp_path / "o.onnx"
    if "--hessian-from" in args:  # a real plan file, so that the error is about the method
        (tmp_path / "p.json").write_text(json.dumps({"version": 1, "method": "qbert", "weights": [],
                                                     "analysis": {"hessian": {"layers": []}}}))
        args = [a if a != "p.json" else str(tmp_path / "p.json") for a in args]
    proc = run_cli("convert", "--model", str(tiny_onnx["classification"]), *args, "-o", str(out))
    if needle is None:  # OCS has ACIQ's prior of its own (used with --clip aciq)
        assert proc.returncode == 0, proc.stderr
        return
    assert_one_line_error(proc, needle)
    assert not out.exists()


def test_convert_bad_paths(tiny_onnx, tmp_path):
    src = str(tiny_onnx["classification"])
    folder = tmp_path / "out.onnx"
    folder.mkdir()
    assert_one_line_error(run_cli("convert", "--model", src, "-o", str(folder)), "is a folder")
    binary = tmp_path / "plan.json"
    binary.write_bytes(bytes(range(256)) * 4)
    assert_one_line_error(run_cli("convert", "--model", src, "--plan", str(binary), "-o", str(tmp_path / "a.onnx")),
                          "not a readable JSON text")
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = tmp_path / "b.onnx"
    assert_one_line_error(run_cli("convert", "--model", src, "--plan-out", str(blocker / "p.json"), "-o", str(out)),
                          "cannot write --plan-out")
    assert not out.exists() and not (tmp_path / "a.onnx").exists()
    # a plan beside the model is written with it
    ok = run_cli("convert", "--model", src, "--plan-out", str(tmp_path / "c.plan.json"), "-o", str(tmp_path / "c.onnx"))
    assert ok.returncode == 0 and json.loads((tmp_path / "c.plan.json").read_text())["method"] == "lq"
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("command", ["validate", "sweep"])
def test_negative_threads(tiny_onnx, tmp_path, command):
    args = ([str(tiny_onnx["regression"]), "--task", "stsb"] if command == "validate"
            else ["--model", str(tiny_onnx["regression"]), "--task", "stsb", "-o", str(tmp_path / "s")])
    proc = run_cli(command, *args, "--threads", "-1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--threads" in proc.stderr
