"""Quantization-aware fine-tuning: what was trained is what is shipped.

After a few steps through the plan's grid, the torch fake-quant model's logits equal ONNX Runtime's
logits of the quantized file convert writes from the fine-tuned weights (max abs <= 1e-3), on every
kind of grid and kernel; the FP32 export is untouched; bad inputs get one-line errors.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from conftest import tiny_feeds

from bert2onnxq.convert import decide, quantize_and_apply
from bert2onnxq.errors import BadInput
from bert2onnxq.export import load_hf_model
from bert2onnxq.methods import convert_options
from bert2onnxq.onnx_io import load_ir, save_onnx, weight_array
from bert2onnxq.plan import check_kernels
from bert2onnxq.quantize.finetune import FinetuneSettings, finetune, train_batches


def _features(n=24, vocab=60, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(6, 14))
        out.append({"input_ids": rng.integers(5, vocab, length), "attention_mask": np.ones(length, np.int64),
                    "token_type_ids": np.zeros(length, np.int64)})
    return out


def _shipped_minus_trained(model, plan, record, student, path, **kept) -> float:
    """Quantize the fine-tuned graph by its plan, save it to `path`, and return the max abs difference between
    ONNX Runtime's outputs of that file and the torch fake-quant student's."""
    import torch
    from onnx_ir import to_proto

    plan.finetune = record
    quantize_and_apply(model, plan, **kept)
    save_onnx(to_proto(model), path)
    feeds = tiny_feeds()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    with torch.no_grad():
        out = student(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    want = [out.logits] if getattr(out, "logits", None) is not None else [out.start_logits, out.end_logits]
    return max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))


def test_train_batches_cover_a_pass_and_grouped_ones_pad_as_little_as_sorting():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 385, 1000)

    def padded(batches):
        return sum(int(lengths[b].max()) * len(b) for b in batches)

    for grouped in (False, True):
        batches = train_batches(lengths, 16, np.random.default_rng(1), grouped, megabatch=100)
        seen = np.concatenate(batches)
        assert all(len(b) == 16 for b in batches) and len(seen) == 992 and len(set(seen.tolist())) == 992
        if grouped:  # one run of 62 batches: as little padding as sorting those 992 examples by length
            best = np.sort(lengths[seen])[::-1]
            assert padded(batches) == sum(int(best[i]) * 16 for i in range(0, 992, 16))
            assert padded(batches) < 0.7 * padded(train_batches(lengths, 16, np.random.default_rng(1), False))
    # without grouping, the batches are the shuffle cut in order
    order = np.random.default_rng(2).permutation(1000)[:992]
    np.testing.assert_array_equal(np.concatenate(train_batches(lengths, 16, np.random.default_rng(2), False)), order)
    assert [len(b) for b in train_batches(lengths[:5], 16, rng)] == [5]


GRIDS = {
    "4-bit per channel, int8 GEMM": dict(bits=4),
    "3-bit neuron groups, asymmetric ACIQ (Q-BERT's grid)": dict(method="aciq", bits=3, granularity="neuron-group",
                                                                 groups=3, symmetric=False),
    "4-bit group-16, MatMulNBits": dict(bits=4, granularity="group", group_size=16),
    "3-bit group-16, two-level int8": dict(bits=3, granularity="group", group_size=16, group_kernel="int8"),
    "3-bit OCS weight splits": dict(method="ocs", bits=3),
    "2-bit per channel, weight-only, int4 embeddings": dict(bits=2, act_bits=None, emb_bits=4),
    "4-bit per channel, per-token activations": dict(bits=4, act_calib="per-token"),
    "3-bit group-16, two-level int8, per-token activations": dict(bits=3, granularity="group", group_size=16,
                                                                 group_kernel="int8", act_calib="per-token"),
    "8-bit OCS (Concat + Gather form), per-token activations": dict(method="ocs", bits=8, act_calib="per-token"),
}


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("head", ["classification", "question-answering"])
def test_trained_fake_quant_model_is_the_shipped_file(tiny_models, tiny_onnx, tmp_path, grid, head):
    fp32 = tiny_onnx[head]
    before = fp32.read_bytes()
    model = load_ir(fp32)
    plan = decide(model, convert_options(**GRIDS[grid]))
    check_kernels(plan)
    loaded = load_hf_model(str(tiny_models[head]))
    w0 = weight_array(model, plan.weights[0].name).copy()
    record, student = finetune(model, plan, loaded, _features(), FinetuneSettings(steps=3, batch_size=4, lr=1e-2,
                                                                                  eval_every=0), data="synthetic")
    assert record["parameters_written"] > len(plan.weights) and record["steps"] == 3
    assert record["check_seconds"] == 0.0 and 0.0 <= record["refresh_seconds"] <= record["seconds"]  # eval_every=0: no checks
    assert not np.array_equal(weight_array(model, plan.weights[0].name), w0)  # training moved the weights
    assert _shipped_minus_trained(model, plan, record, student, tmp_path / "ft.onnx") <= 1e-3, grid
    assert fp32.read_bytes() == before  # the FP32 export is unchanged


def test_finetune_refuses_what_it_cannot_reproduce(tiny_models, tiny_onnx):
    model = load_ir(tiny_onnx["classification"])
    loaded = load_hf_model(str(tiny_models["classification"]))
    for options, message in ((dict(bits=4, act_calib="static"), "act-calib static"),
                             (dict(method="ocs", bits=3, rounding="gptq"), "OCS weight splits")):
        plan = decide(model, convert_options(**options))
        with pytest.raises(BadInput, match=message):
            finetune(model, plan, loaded, _features(), FinetuneSettings(steps=1), data="synthetic")
    plan = decide(model, convert_options(bits=4))
    with pytest.raises(BadInput, match="no train examples"):
        finetune(model, plan, loaded, [], FinetuneSettings(steps=1), data="synthetic")
    with pytest.raises(BadInput, match="held-out checks"):
        finetune(model, plan, loaded, _features(), FinetuneSettings(steps=1, eval_every=0, keep="best"), data="synthetic")


@pytest.mark.parametrize("head", ["classification", "question-answering"])
def test_keep_best_ships_the_checked_step_with_the_lowest_held_out_loss(tiny_models, tiny_onnx, tmp_path, head):
    """A destructive lr leaves every later check worse than step 0: keep=best ships step 0, which for a
    nearest plan is the FP32 weights, and the file computes what the restored student does."""
    model = load_ir(tiny_onnx[head])
    plan = decide(model, convert_options(bits=4))
    loaded = load_hf_model(str(tiny_models[head]))
    w0 = weight_array(model, plan.weights[0].name).copy()
    settings = FinetuneSettings(steps=4, batch_size=4, lr=10.0, eval_every=2, eval_samples=8, keep="best")
    record, student = finetune(model, plan, loaded, _features(40), settings, data="synthetic")
    losses = [h["held_out_loss"] for h in record["agreement"]]
    assert [h["step"] for h in record["agreement"]] == [0, 2, 4] and losses[0] < min(losses[1:])
    assert record["kept_step"] == 0
    np.testing.assert_array_equal(weight_array(model, plan.weights[0].name), w0)
    assert _shipped_minus_trained(model, plan, record, student, tmp_path / "best.onnx") <= 1e-3


GPTQ_GRIDS = {
    "2-bit per channel": dict(bits=2),
    "3-bit neuron groups, asymmetric ACIQ, searched ranges": dict(method="aciq", bits=3, granularity="neuron-group",
                                                                  groups=3, symmetric=False, gptq_grid="search"),
    "3-bit group-16, two-level int8": dict(bits=3, granularity="group", group_size=16, group_kernel="int8"),
}


@pytest.mark.parametrize("grid", list(GPTQ_GRIDS))
def test_finetune_from_gptq_starts_on_its_integers_keeps_its_grid_and_ships_what_was_trained(
        tiny_models, stsb, tmp_path, grid):
    import copy

    import onnx
    from stsb_data import stsb_calibrate

    from bert2onnxq import numerics
    from bert2onnxq.convert import convert, gptq_integers
    from bert2onnxq.quantize.fake_quant import prepare
    from bert2onnxq.quantize.finetune import FinetuneJob

    fp32, calibrate = stsb["fp32"], stsb_calibrate(stsb)
    options = convert_options(rounding="gptq", **GPTQ_GRIDS[grid])
    model = load_ir(fp32)
    plan = decide(model, options)
    check_kernels(plan)
    start = gptq_integers(model, plan, fp32, calibrate)
    loaded = load_hf_model(str(tiny_models["regression"]))
    # before training, the student's weights are GPTQ's dequantized integers, exactly; its latent weights
    # are GPTQ's compensated ones, off the cells' centres
    modules = dict(prepare(copy.deepcopy(loaded.model), plan, start).named_modules())
    for t in plan.weights:
        module, q = modules[t.name.removesuffix(".weight")], start[t.name]
        got = module.weight.detach().numpy().T
        assert np.array_equal(got, numerics.dequantize(q.values, q.params)), t.name
        latent = module.parametrizations.weight.original.detach().numpy().T
        assert np.array_equal(latent, q.latent) and not np.allclose(latent, got), t.name
    settings = FinetuneSettings(steps=3, batch_size=4, lr=1e-2, eval_every=0)
    record, student = finetune(model, plan, loaded, _features(), settings, data="synthetic", start=start)
    assert record["start"].startswith("GPTQ's integers")
    kept = {name: qt.params for name, qt in start.items()}
    assert _shipped_minus_trained(model, plan, record, student, tmp_path / "ft.onnx", kept=kept) <= 1e-3
    # convert end to end: the same grid as the post-training GPTQ file, other integers
    job = FinetuneJob(settings, task="stsb", data_dir=stsb["glue"], hf_model=str(tiny_models["regression"]))
    convert(str(fp32), tmp_path / "g.onnx", options, calibrate=calibrate)
    summary = convert(str(fp32), tmp_path / "c.onnx", options, calibrate=calibrate, finetune=job)
    assert summary["plan"].finetune["start"].startswith("GPTQ's integers")
    post = {x.name: x for x in onnx.load(str(tmp_path / "g.onnx")).graph.initializer}
    tuned = {x.name: x for x in onnx.load(str(tmp_path / "c.onnx")).graph.initializer}
    grids = [f"{w}{suffix}" for w in start for suffix in ("_scale", "_channel_scale", "_zero_point", "_multiplier")
             if f"{w}{suffix}" in post]
    assert grids and all(post[n].SerializeToString() == tuned[n].SerializeToString() for n in grids)
    assert any(post[f"{n}_quantized"].raw_data != tuned[f"{n}_quantized"].raw_data for n in start)


@pytest.mark.parametrize("rounding", ["nearest", "gptq"])
def test_convert_finetune_end_to_end(tmp_path, rounding):
    """The command: a fine-tuned file, the plan and card saying so; replaying its plan without --finetune refused."""
    import json
    import subprocess
    import sys

    from conftest import assert_one_line_error, make_tiny_bert

    from bert2onnxq.export import export

    hf = make_tiny_bert(tmp_path / "hf", labels=("negative", "positive"))
    fp32 = export(str(hf), tmp_path / "fp32" / "model.onnx")["output"]
    glue = tmp_path / "glue" / "SST-2"
    glue.mkdir(parents=True)
    words = ["good", "bad", "film", "plot", "great", "dull", "a", "the"]
    rng = np.random.default_rng(0)
    rows = [" ".join(rng.choice(words, int(rng.integers(3, 9)))) + f"\t{i % 2}" for i in range(40)]
    (glue / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (glue / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(rows[:8]) + "\n")
    out = tmp_path / "ft.onnx"
    cmd = [sys.executable, "-m", "bert2onnxq", "convert", "--model", str(fp32), "--bits", "4", "--finetune", "--task", "sst2",
           "--data-dir", str(tmp_path / "glue"), "--finetune-steps", "4", "--finetune-batch-size", "4", "-o", str(out),
           "--plan-out", str(tmp_path / "plan.json"), "--json", "--rounding", rounding]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    record = summary["finetune"]
    assert record["steps"] == 4 and record["batch_size"] == 4 and record["data"].startswith("sst2 train split")
    assert record["source_model"] == str(hf.resolve()) and record["examples"] + record["held_out"] == 40
    assert "fine-tuned 4 steps" in summary["plan_summary"]
    assert record["start"].startswith("GPTQ's integers" if rounding == "gptq" else "the FP32 weights")
    card = out.with_suffix(".md").read_text()
    assert "| Fine-tuned | yes" in card and "starting from " + record["start"] in card
    assert json.loads((tmp_path / "plan.json").read_text())["finetune"]["steps"] == 4
    again = subprocess.run([sys.executable, "-m", "bert2onnxq", "convert", "--model", str(fp32), "--plan",
                            str(tmp_path / "plan.json"), "-o", str(tmp_path / "again.onnx")], capture_output=True, text=True)
    assert_one_line_error(again, "the plan was fine-tuned")
    assert not (tmp_path / "again.onnx").exists()
