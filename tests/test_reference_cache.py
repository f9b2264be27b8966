"""validate's ReferenceCache (FP32 runs reused across calls and processes) and Subset selection."""

from __future__ import annotations

from pathlib import Path

import pytest

# ---------------------------------------------------------------------------------------------------------------
# the reference cache and subsets


def test_reference_cache_replays_fp32_exactly(stsb, tmp_path):
    from bert2onnxq.convert import convert
    from bert2onnxq.methods import convert_options
    from bert2onnxq.validate import ReferenceCache, validate

    q = Path(convert(str(stsb["fp32"]), tmp_path / "q" / "model.onnx", convert_options(bits=4))["output"])
    plain = validate(q, "stsb", reference=stsb["fp32"], data_dir=stsb["glue"], threads=1)
    disk = ReferenceCache(tmp_path / "cache")
    first = validate(q, "stsb", reference=stsb["fp32"], data_dir=stsb["glue"], threads=1, reference_cache=disk)
    assert disk.hits == 0 and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    fresh = ReferenceCache(tmp_path / "cache")  # another process: reads the FP32 run from disk
    again = validate(q, "stsb", reference=stsb["fp32"], data_dir=stsb["glue"], threads=1, reference_cache=fresh)
    assert fresh.hits == 1 and again["reference"]["cached"]
    for r in (first, again):
        assert r["comparison"] == plain["comparison"] and r["reference"]["metrics"] == plain["reference"]["metrics"]
    assert plain["reference"]["metrics"]["pearson"] == pytest.approx(100.0, abs=1e-3)
    # other features (a subset) must not hit
    other = validate(q, "stsb", reference=stsb["fp32"], data_dir=stsb["glue"], threads=1, reference_cache=fresh,
                     protocol=__import__("bert2onnxq.validate", fromlist=["Protocol"]).Protocol(limit=10))
    assert fresh.hits == 1 and other["examples"] == 10


def test_subset_selection():
    from bert2onnxq.validate import Subset

    items = list(range(100))
    assert Subset(split="train", skip=10).select(items) == list(range(10, 100))
    assert Subset(half=1).select(items) == list(range(1, 100, 2))
    sample = Subset(skip=20, size=15, seed=3).select(items)
    assert sample == Subset(skip=20, size=15, seed=3).select(items) and len(sample) == 15 and min(sample) >= 20
    assert sample == sorted(sample)
    assert "random sample of 15 (seed 3)" in Subset(skip=20, size=15, seed=3).describe()
