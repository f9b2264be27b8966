"""--method qbert: Q-BERT (Shen et al., AAAI 2020) decided post-training.

Analyse: the top Hessian eigenvalue of each encoder layer's weights on train batches of the task
(`hessian.py`, torch, on the Hugging Face model the ONNX was exported from), Omega = |mean| + std.
Decide: bits per layer from Omega (an average-bit budget over --bit-choices, or Q-BERT's fixed 2/3
mix), every weight on neuron-group ranges (groups of output columns, never straddling a head).
Apply: the ordinary passes; the plan records Omega, the eigenvalues and the bits, so `--plan`
re-applies the decision without the Hessian.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx_ir as ir

from . import hessian, numerics
from .convert import ConvertOptions, decide_plan, grid_is_symmetric, weight_array
from .errors import BadInput
from .graph.locate import WeightSite
from .plan import QuantPlan, TensorPlan

ORDERS = ("hessian", "reverse")
# The grid Q-BERT's 2-4 bits get unless told otherwise: all 2^bits levels (a narrow symmetric 2-bit grid is
# ternary) and ACIQ clipping; chosen from benchmarks/results/qbert_table.md (--grid-ablation rows).
DEFAULTS = {"granularity": "neuron-group", "groups": 128, "symmetric": False, "clip": "aciq"}


@dataclass(frozen=True)
class QBertOptions:
    """How Q-BERT analyses and allocates (the grid, groups, activations and embeddings are ConvertOptions')."""

    task: str | None = None  # whose train split feeds the Hessian
    data_dir: Path | None = None  # GLUE folder
    calib_file: Path | None = None  # SQuAD JSON or GLUE train TSV
    hf_model: str | None = None  # the PyTorch model; default: the ONNX's bert2onnxq.source_model
    avg_bits: float = 3.0
    bit_choices: tuple[int, ...] = (2, 3, 4)
    mix: tuple[int, int] | None = None  # Q-BERT's fixed (low, high) mix: the more sensitive half gets high
    order: str = "hessian"  # reverse: the same bits, most to the least sensitive layers (control)
    batches: int = 10
    batch_size: int = 8
    max_iter: int = 50
    tol: float = 1e-3
    seed: int = 0
    threads: int | None = 1  # torch threads for the analysis (None: torch's default); one was 5x faster than two here
    hessian: dict | None = None  # a plan's recorded analysis["hessian"]: re-decide the bits without recomputing

    def check(self) -> None:
        if self.order not in ORDERS:
            raise BadInput(f"unknown order '{self.order}': choose {' or '.join(ORDERS)}")
        if self.mix is not None:
            low, high = self.mix
            if not 2 <= low < high <= 8:
                raise BadInput(f"--mix {low}/{high} needs 2 <= low < high <= 8, e.g. 2/3")
        else:
            if not self.bit_choices or any(not 2 <= b <= 8 for b in self.bit_choices):
                raise BadInput(f"--bit-choices {','.join(map(str, self.bit_choices))} must be bits in 2..8")
            if not min(self.bit_choices) <= self.avg_bits <= 8:
                raise BadInput(f"--avg-bits {self.avg_bits} must lie between the smallest bit choice "
                               f"({min(self.bit_choices)}) and 8")
        if self.batches < 1 or self.batch_size < 1 or self.max_iter < 1:
            raise BadInput("--hessian-batches, --hessian-batch-size and --hessian-iters must be positive")
        if self.task is None and self.hessian is None:
            raise BadInput("--method qbert needs --task (and its data: --data-dir or --calib-file) to compute "
                           "the Hessian on train batches; or reuse a recorded one with --hessian-from PLAN.json")


def qbert_convert_options(qbert: QBertOptions, **overrides) -> ConvertOptions:
    """ConvertOptions for --method qbert with Q-BERT's defaults (neuron groups, asymmetric, ACIQ)."""
    return ConvertOptions(method="qbert", qbert=qbert, **{**DEFAULTS, **overrides})


def decide_qbert_plan(model: ir.Model, options: ConvertOptions, sites: list[WeightSite], source: str,
                      progress=None) -> QuantPlan:
    """The Q-BERT plan for the FP32 `model` converted from `source` (an .onnx path or an HF folder)."""
    qb = options.qbert or QBertOptions()
    qb.check()
    choices = sorted(set(qb.mix) if qb.mix else set(qb.bit_choices))
    # every decision but the bits is the ordinary one (LQ, or ACIQ with --clip aciq)
    base = replace(options, method="aciq" if options.clip == "aciq" else "lq", bits=max(choices))
    plan = decide_plan(model, base, sites)
    if not plan.weights:
        raise BadInput("--skip left no encoder weight to quantize")
    layers = sorted({t.layer for t in plan.weights})

    if qb.hessian is not None:  # a recorded analysis (--hessian-from): re-decide the bits only
        record = _recorded(qb.hessian, layers)
    else:
        record = analyse(model, source, sites, qb, max(layers) + 1, progress)
    by_layer_record = {entry["layer"]: entry for entry in record["layers"]}
    omegas = [by_layer_record[layer]["omega"] for layer in layers]

    sizes = [sum(t.num_params for t in plan.weights if t.layer == layer) for layer in layers]
    if qb.mix:
        bits = hessian.fixed_mix(omegas, *qb.mix)
        rule = f"fixed mix {qb.mix[0]}/{qb.mix[1]}: the more sensitive half of the layers (by Omega) gets {qb.mix[1]} bits"
    else:
        bits = hessian.allocate_bits(omegas, qb.avg_bits, choices, sizes)
        rule = (f"average {qb.avg_bits:g} bits over {','.join(map(str, choices))}, monotone in Omega, the whole "
                "budget, the most bits on the most sensitive layers")
    if qb.order == "reverse":
        bits = hessian.reverse(bits, omegas)
    by_layer = dict(zip(layers, bits))
    for t in plan.weights:
        _set_bits(t, by_layer[t.layer], options.symmetric)
    plan.method = "qbert"
    plan.analysis = {
        "hessian": record,
        "allocation": {
            "rule": rule, "order": qb.order,
            "bits": [{"layer": layer, "bits": b, "omega": o} for layer, b, o in zip(layers, bits, omegas)],
            "avg_bits": float(np.dot(bits, sizes) / sum(sizes)),
        },
    }
    return plan


def analyse(model: ir.Model, source: str, sites: list[WeightSite], qb: QBertOptions, num_layers: int,
            progress=None) -> dict:
    """The Hessian record of a plan: per layer the top eigenvalue of each batch, mean, std, Omega; settings, time."""
    hf = hf_source(model, source, qb.hf_model)
    loaded = load_matching_hf_model(hf, model, sites)
    start = time.perf_counter()
    sensitivities, batches = _hessian(loaded, qb, num_layers, progress)
    seconds = time.perf_counter() - start
    return {
        "model": hf, "task": qb.task, "data": str(qb.calib_file or qb.data_dir or "hub"),
        "batches": len(batches), "batch_size": qb.batch_size,
        "tokens": int(sum(int(b["attention_mask"].sum()) for b in batches)),
        "max_iter": qb.max_iter, "tol": qb.tol, "seed": qb.seed, "threads": _threads(qb.threads),
        "seconds": round(seconds, 2),
        "weights": "query, key, value, attention output, intermediate, output Linear weights of each layer",
        "layers": [{"layer": s.layer, "omega": s.omega, "mean": s.mean, "std": s.std, "eigenvalues": s.eigenvalues,
                    "iterations": s.iterations, "converged": s.converged, "seconds": round(s.seconds, 2)}
                   for s in (sensitivities[i] for i in range(num_layers))],
    }


def hessian_record(fp32_path: Path, task: str, *, data_dir: Path | None = None, calib_file: Path | None = None,
                   progress=None, **settings) -> dict:
    """The Hessian record (`analyse`) of the HF model behind an FP32 export, with the default settings
    unless `settings` (QBertOptions fields) say otherwise; what `--hessian-from` and sweeps reuse."""
    from .convert import load_ir
    from .graph.locate import check_quantizable

    model = load_ir(fp32_path)
    sites = check_quantizable(model)
    qb = QBertOptions(task=task, data_dir=data_dir, calib_file=calib_file, **settings)
    qb.check()
    return analyse(model, str(fp32_path), sites, qb, max(s.layer for s in sites) + 1, progress)


def _recorded(record: dict, layers: list[int]) -> dict:
    try:
        have = {entry["layer"] for entry in record["layers"] if isinstance(entry["omega"], (int, float))}
    except (KeyError, TypeError):
        raise BadInput("--hessian-from holds no Q-BERT Hessian record: pass a plan written by "
                       "'convert --method qbert --plan-out'") from None
    missing = sorted(set(layers) - have)
    if missing:
        raise BadInput(f"the recorded Hessian has no layer(s) {missing}: it was made for another model")
    return record


def _set_bits(t: TensorPlan, bits: int, symmetric: bool | None) -> None:
    t.bits = bits
    t.symmetric = grid_is_symmetric(bits, symmetric)  # None: the grid follows each layer's bits
    if t.clip != "none":
        t.alpha_ratio = numerics.optimal_alpha(bits, t.clip.removeprefix("aciq-"))


def hf_source(model: ir.Model, source: str, override: str | None) -> str:
    """The PyTorch model behind the ONNX: --hf-model, the HF folder given to convert, or the export's metadata."""
    if override:
        return str(override)
    if Path(source).suffix != ".onnx":
        return source
    recorded = model.metadata_props.get("bert2onnxq.source_model")
    if not recorded:
        raise BadInput("the ONNX file does not record its source model (bert2onnxq.source_model): "
                       "pass --hf-model DIR, the Hugging Face folder it was exported from")
    return recorded


def load_matching_hf_model(source: str, model: ir.Model, sites: list[WeightSite]):
    """export.load_hf_model, with a one-line hint to --hf-model, and a check that its weights are the ONNX's."""
    from .export import load_hf_model

    try:
        loaded = load_hf_model(source)
    except BadInput as exc:
        raise BadInput(f"Q-BERT needs the PyTorch model for its Hessian, and '{source}' did not load ({exc}); "
                       "pass --hf-model DIR") from None
    params = dict(loaded.model.named_parameters())
    for site in sites:
        if site.name not in params:
            raise BadInput(f"the Hugging Face model '{source}' has no parameter '{site.name}': pass --hf-model DIR, "
                           "the folder this ONNX was exported from")
        onnx_w = weight_array(model, site.name)  # MatMul weight [in, out] = Linear weight transposed
        torch_w = params[site.name].detach().numpy().T
        if torch_w.shape != onnx_w.shape or not np.allclose(torch_w, onnx_w, rtol=1e-5, atol=1e-6):
            raise BadInput(f"the Hugging Face model '{source}' is not the one this ONNX was exported from "
                           f"('{site.name}' differs): pass --hf-model DIR with the right folder")
    return loaded


def _threads(threads: int | None) -> int:
    import torch

    return threads or torch.get_num_threads()


def _hessian(loaded, qb: QBertOptions, num_layers: int, progress):
    import torch

    batches = hessian.calibration_batches(loaded.model, qb.task, loaded.tokenizer, num_batches=qb.batches,
                                          batch_size=qb.batch_size, data_dir=qb.data_dir, data_file=qb.calib_file,
                                          seed=qb.seed)
    before = torch.get_num_threads()
    if qb.threads:
        torch.set_num_threads(qb.threads)
    try:
        sens = hessian.layer_sensitivities(loaded.model, batches, num_layers, max_iter=qb.max_iter, tol=qb.tol,
                                           seed=qb.seed, progress=progress)
    finally:
        torch.set_num_threads(before)
    return {s.layer: s for s in sens}, batches


__all__ = ["DEFAULTS", "ORDERS", "QBertOptions", "decide_qbert_plan", "hf_source", "qbert_convert_options"]
