"""benchmarks/cuda_check.sh, the check prepared for a lent GPU machine: its CPU-side parts run here
(DEVICE=cpu) from the repository alone, and it refuses CUDA clearly where ONNX Runtime has no CUDA provider."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO


def _run(tmp_path, **env):
    environ = {**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "PYTHON": sys.executable,
               "WHEELS": str(tmp_path / "no-wheels"), "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(["bash", str(REPO / "benchmarks" / "cuda_check.sh")], capture_output=True, text=True,
                          env=environ, timeout=900)


def test_cpu_side_of_the_cuda_check(tmp_path):
    proc = _run(tmp_path, DEVICE="cpu", LIMIT="64", ROUNDS="2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "cuda_check.json").read_text())
    for m in ("lq8", "g4"):
        v = record["files"][m]["validate"]
        assert v["examples"] == 64 and v["comparison"]["agreement"] > 80
        assert v["model"]["runtime"]["providers"][0] == "CPUExecutionProvider"
    # --target cuda graphs are weight-only: the 4-bit group-32 weights run as MatMulNBits, LQ-8 too
    assert record["files"]["g4"]["runtime"]["linear_kernels"].get("nbits") == 36
    assert {b["settings"]["batch"] for b in record["bench"]} == {1, 8}
    assert "| lq8 |" in (tmp_path / "out" / "cuda_check.md").read_text()


def test_refuses_cuda_without_the_provider(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        import pytest

        pytest.skip("this onnxruntime has CUDA")
    proc = _run(tmp_path, DEVICE="cuda")
    assert proc.returncode == 3 and "no CUDAExecutionProvider" in proc.stderr
