"""3/5/6/7-bit weights stored that many bits each: exact packing, the same logits as the INT4/INT8
container form, and files at their nominal size."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import SHARED_MODELS, needs_shared, tiny_feeds


def test_pack_bits_layout_and_round_trip():
    from bert2onnxq.numerics import pack_bits, unpack_bits

    # 1..7, 0 at 3 bits: one 24-bit little-endian word 0b000_111_110_101_100_011_010_001
    assert pack_bits(np.array([1, 2, 3, 4, 5, 6, 7, 0]), 3).tolist() == [0b11010001, 0b01011000, 0b00011111]
    rng = np.random.default_rng(0)
    for bits in (3, 5, 6, 7):
        values = rng.integers(0, 1 << bits, size=1001)
        packed = pack_bits(values, bits)
        assert packed.dtype == np.uint8 and packed.size == 126 * bits  # ceil(1001 / 8) runs of `bits` bytes
        assert np.array_equal(unpack_bits(packed, bits, values.size), values)
    with pytest.raises(ValueError):
        pack_bits(np.array([8]), 3)
    with pytest.raises(ValueError):
        pack_bits(np.array([-1]), 5)


def _run(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize("bits", [3, 5, 6, 7])
@pytest.mark.parametrize("granularity,symmetric", [("channel", True), ("channel", False), ("group", False)])
def test_packed_files_equal_the_container_form(tiny_onnx, tmp_path, bits, granularity, symmetric):
    from bert2onnxq.convert import convert
    from bert2onnxq.methods import convert_options

    src = str(tiny_onnx["classification"])
    options = dict(bits=bits, granularity=granularity, group_size=16, symmetric=symmetric)
    container = convert(src, tmp_path / "c.onnx", convert_options(**options))  # the default
    packed = convert(src, tmp_path / "p.onnx", convert_options(pack_bits=True, **options))
    assert {t.storage for t in packed["plan"].weights} == {"bits"} and {t.storage for t in container["plan"].weights} == {""}
    feeds = tiny_feeds()
    assert np.array_equal(_run(tmp_path / "c.onnx", feeds), _run(tmp_path / "p.onnx", feeds))
    model = onnx.load(str(tmp_path / "p.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    for t in packed["plan"].weights:
        stored = inits[f"{t.name}_quantized"]
        assert stored.data_type == onnx.TensorProto.UINT8
        assert len(stored.raw_data) == -(-t.num_params // 8) * bits  # exactly `bits` bits per weight
    container_inits = {i.name: i for i in onnx.load(str(tmp_path / "c.onnx")).graph.initializer}
    assert sum(len(inits[f"{t.name}_quantized"].raw_data) for t in packed["plan"].weights) < sum(
        len(container_inits[f"{t.name}_quantized"].raw_data) for t in packed["plan"].weights)


def test_old_plans_keep_the_container(tiny_onnx, tmp_path):
    import json

    from bert2onnxq.convert import convert
    from bert2onnxq.methods import convert_options
    from bert2onnxq.plan import QuantPlan

    src = str(tiny_onnx["classification"])
    plan = convert(src, tmp_path / "a.onnx", convert_options(bits=3, pack_bits=True))["plan"]
    raw = json.loads(plan.to_json())
    for t in raw["weights"]:
        del t["storage"]  # as written before bit packing existed
    convert(src, tmp_path / "old.onnx", plan=QuantPlan.from_json(json.dumps(raw)))
    convert(src, tmp_path / "container.onnx", convert_options(bits=3, pack_bits=False))
    assert (tmp_path / "old.onnx").read_bytes() == (tmp_path / "container.onnx").read_bytes()


@needs_shared(SHARED_MODELS / "minilm-l6-sst2")
def test_packed_minilm_is_at_its_nominal_size(tmp_path):
    from bert2onnxq.convert import convert
    from bert2onnxq.export import export
    from bert2onnxq.inspect import runtime_graph
    from bert2onnxq.methods import convert_options

    fp32 = export(str(SHARED_MODELS / "minilm-l6-sst2"), tmp_path / "fp32" / "model.onnx")["output"]
    for bits, granularity in ((3, "channel"), (3, "group"), (5, "channel"), (6, "channel")):
        out = tmp_path / f"q{bits}{granularity}.onnx"
        summary = convert(fp32, out, convert_options(bits=bits, granularity=granularity, group_size=32, pack_bits=True))
        assert summary["size_vs_ideal"] <= 1.03, (bits, granularity, summary["size_vs_ideal"])
        rt = runtime_graph(out)  # unpacked and folded at load: nothing of it left to run
        assert rt["dequantize_linear_at_run_time"] == 0 and rt["ops"].get("BitShift", 0) == 0
