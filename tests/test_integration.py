"""Integration: export each shared model, validate on its dev set, compare with MODELS.md (±0.2)."""

from __future__ import annotations

import pytest

from bert2onnxq.export import export
from bert2onnxq.validate import validate
from conftest import GLUE_DIR, SHARED_MODELS, SQUAD_HELDOUT, needs_shared

# From ../shared/models/MODELS.md, "Reference metrics under the validate protocol".
EXPECTED = {
    "minilm-l6-sst2": ("sst2", {"accuracy": 86.81}),
    "minilm-l6-mrpc": ("mrpc", {"accuracy": 80.15, "f1": 86.39}),
    "minilm-l6-squad": ("squad", {"exact_match": 48.88, "f1": 63.69}),
}

pytestmark = [pytest.mark.integration, needs_shared(SHARED_MODELS, GLUE_DIR, SQUAD_HELDOUT)]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_export_then_validate_reproduces_fp32_metric(name, tmp_path):
    task, expected = EXPECTED[name]
    summary = export(str(SHARED_MODELS / name), tmp_path / "model.onnx")
    assert summary["max_abs_diff_vs_torch"] < 1e-4
    data = {"data_file": SQUAD_HELDOUT} if task == "squad" else {"data_dir": GLUE_DIR}
    result = validate(tmp_path / "model.onnx", task, threads=2, **data)
    assert result["examples"] == {"sst2": 872, "mrpc": 408, "squad": 2447}[task]
    for metric, value in expected.items():
        assert result["model"]["metrics"][metric] == pytest.approx(value, abs=0.2), metric
