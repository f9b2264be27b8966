"""export: ONNX equals PyTorch, dynamic axes, metadata, external data, atomic output, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from bert2onnxq import export as export_mod
from bert2onnxq.errors import BadInput
from bert2onnxq.export import export, load_hf_model, read_metadata


def _torch_vs_onnx(src: Path, onnx_path: Path, batch: int, seq: int, seed: int = 1) -> float:
    loaded = load_hf_model(str(src))
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, loaded.model.config.vocab_size, size=(batch, seq))
    mask = np.ones_like(ids)
    mask[0, seq // 2:] = 0  # one padded row
    types = np.zeros_like(ids)
    types[:, seq // 3:] = 1
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, feeds)
    with torch.no_grad():
        ref = loaded.model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    diffs = []
    for name, value in zip(export_mod.HEADS[loaded.head][1], got):
        expected = ref[name].numpy()
        assert value.shape == expected.shape
        if value.ndim == 2 and value.shape[1] == seq:
            value, expected = value[mask.astype(bool)], expected[mask.astype(bool)]
        diffs.append(np.abs(value - expected).max())
    return float(max(diffs))


@pytest.mark.parametrize("head", ["classification", "regression", "question-answering"])
def test_onnx_matches_torch_with_dynamic_axes(tiny_models, tiny_onnx, head):
    for batch, seq in [(1, 5), (3, 17), (2, 64)]:
        assert _torch_vs_onnx(tiny_models[head], tiny_onnx[head], batch, seq) < 1e-4


def test_metadata_tokenizer_and_opset(tiny_onnx, tiny_models):
    path = tiny_onnx["classification"]
    model = onnx.load(str(path))
    meta = read_metadata(model)
    assert meta["head"] == "classification"
    assert meta["source_model"] == str(tiny_models["classification"].resolve())
    assert json.loads(meta["labels"]) == {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    assert meta["tokenizer"] == "."
    assert (path.parent / "tokenizer.json").is_file()
    assert {o.domain: o.version for o in model.opset_import}[""] == 21
    names = {i.name for i in model.graph.initializer}
    assert "bert.encoder.layer.1.attention.self.query.weight" in names  # named after PyTorch, not onnx::MatMul_*
    assert not any(n.startswith("onnx::MatMul") for n in names)
    onnx.checker.check_model(model, full_check=True)


def test_attention_is_fusable_by_ort_optimizer(tiny_onnx):
    from onnxruntime.transformers.optimizer import optimize_model

    stats = optimize_model(str(tiny_onnx["classification"]), model_type="bert", num_heads=4,
                           hidden_size=32).get_fused_operator_statistics()
    assert stats["Attention"] == 2 and stats["SkipLayerNormalization"] == 4 and stats["BiasGelu"] == 2


def test_external_data_with_lowered_threshold(tiny_models, tmp_path):
    out = tmp_path / "ext" / "model.onnx"
    summary = export(str(tiny_models["classification"]), out, external_data_threshold=1000)
    assert summary["external_data"] and (out.parent / "model.onnx.data").stat().st_size > out.stat().st_size
    assert summary["max_abs_diff_vs_torch"] < 1e-4
    assert _torch_vs_onnx(tiny_models["classification"], out, 2, 9) < 1e-4


def test_save_dir_is_a_model_folder(tiny_models, tmp_path):
    out = tmp_path / "folder"
    export(str(tiny_models["question-answering"]), save_dir=out)
    assert {"model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}


def test_optimum_loads_save_dir(tiny_models, tmp_path):
    optimum = pytest.importorskip("optimum.onnxruntime")
    out = tmp_path / "optimum"
    export(str(tiny_models["classification"]), save_dir=out)
    model = optimum.ORTModelForSequenceClassification.from_pretrained(out)
    from transformers import AutoTokenizer

    enc = AutoTokenizer.from_pretrained(out)(["a good movie"], return_tensors="pt")
    assert model(**enc).logits.shape == (1, 3)


def test_not_a_model_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no config.json"):
        export(str(tmp_path / "empty"), tmp_path / "o.onnx")


def test_non_bert_architecture(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(BadInput, match="'gpt2' model"):
        export(str(tmp_path / "gpt2"), tmp_path / "o.onnx")


def test_unknown_hub_id_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BadInput, match="hub"):
        export("no-such-org/no-such-model", tmp_path / "o.onnx")


def test_unwritable_output(tiny_models, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(BadInput, match="cannot write"):
        export(str(tiny_models["classification"]), blocker / "model.onnx")


def test_failed_export_keeps_existing_output(tiny_models, tmp_path, monkeypatch):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous model")

    def boom(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(export_mod, "_torch_export", boom)
    with pytest.raises(RuntimeError):
        export(str(tiny_models["classification"]), out)
    assert out.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temp folder, no tokenizer files
