"""Accuracy-targeted conversion (`convert --max-drop D`): the smallest file whose validated primary
metric is within D points of FP32 on the search data.

Two stages, both driven by validation on the *search* data (never the data of the final report,
unless the user chooses `--search-data dev` and the report says so):

1. Uniform plans: every (method, bits, granularity) cell the sweep registry makes, ordered by the
   file size its plan implies; validated from the smallest up; the first that passes is the
   smallest passing uniform plan (every smaller one was validated and failed).
2. Mixed precision: starting from that plan, each encoder layer in turn (least sensitive first)
   drops to the next smaller storage width; a change is kept when the file still passes. The
   order comes from a layer-scoring function in `LAYER_SCORES`: the weight-noise proxy below,
   and Q-BERT's Hessian score once it exists.

Uniform candidates are the sweep cells of the methods registry (methods.REGISTRY); a layer score
plugs into the mixed stage with a `LAYER_SCORES` entry.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import BadInput
from ..graph.locate import check_quantizable
from ..methods import REGISTRY, Grid, get_method
from ..numerics import container_bits
from ..onnx_io import load_ir, weight_array
from ..plan import QuantPlan
from ..quantize import quantize_plan
from ..sweep.cells import Cell, check_bits, check_methods, for_method


@dataclass
class Candidate:
    label: str
    stage: str  # uniform | mixed
    plan: QuantPlan
    options: dict | None = None  # ConvertOptions kwargs (uniform)
    estimate: float = 0.0  # bytes the plan implies (container bits x params + scales + FP32 rest)
    bits: int = 0


@dataclass
class Step:
    """One line of the search path."""

    label: str
    stage: str
    estimate: int
    bytes: int | None = None
    metric: float | None = None
    drop: float | None = None
    passed: bool | None = None
    note: str = ""


@dataclass
class SearchResult:
    chosen: Candidate | None
    best_uniform: Candidate | None
    steps: list[Step] = field(default_factory=list)
    fp32_metric: float | None = None
    primary: str = ""
    layer_order: list[int] = field(default_factory=list)
    layer_scores: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# sizes and candidates


def _scales(t) -> int:
    rows = t.shape[0] + (math.ceil(t.ocs_ratio * t.shape[0]) if t.ocs_ratio else 0)
    if t.granularity in ("row", "row-block"):  # embeddings: per row, or per row block
        return t.shape[0] * (t.shape[1] // t.group_size if t.group_size else 1)
    if t.granularity == "tensor":
        return 1
    if t.granularity == "channel" or not t.group_size:
        return t.shape[1]
    # blocks along the input axis; a granularity added later (Q-BERT's neuron groups) only needs an
    # estimate good enough to order candidates, and the real file size is what gets reported
    return t.shape[1] * math.ceil(rows / t.group_size)


def estimate_bytes(plan: QuantPlan, fp32_rest: int) -> float:
    """Bytes of the file this plan makes, before making it: storage (container) bits x params,
    OCS rows included, + 4-byte scales (+ zero points) + the FP32 tensors the plan leaves alone."""
    total = float(fp32_rest)
    for t in plan.weights + plan.embeddings:
        rows = t.shape[0] + (math.ceil(t.ocs_ratio * t.shape[0]) if t.ocs_ratio else 0)
        params = rows * int(np.prod(t.shape[1:]))
        scales = _scales(t)
        total += params * container_bits(t.bits) / 8 + scales * 4 + (0 if t.symmetric else scales)
    return total


def uniform_candidates(model, sites, fp32_rest: int, methods: list[str], bits: list[int], grid: Grid,
                       base: dict, roundings: tuple[str, ...] = ("nearest",)) -> list[Candidate]:
    """The sweep registry's cells (x each rounding) as candidates, ordered by implied size (ties: more
    bits first, nearest before gptq)."""
    out = []
    for m in methods:
        for b in bits:
            for kw in REGISTRY[m].sweep_cells(b, grid):
                for rounding in roundings:
                    cell = Cell.of(for_method({**base, **kw, "rounding": rounding}, m))
                    plan = decide_uniform(model, sites, cell.convert_options())
                    out.append(Candidate(f"{cell.variant} W{b}", "uniform", plan, cell.options,
                                         estimate_bytes(plan, fp32_rest), b))
    return sorted(out, key=lambda c: (c.estimate, -c.bits, c.label))


def decide_uniform(model, sites, options) -> QuantPlan:
    """The plan of a method that needs no analysis (the search's candidates)."""
    options.check()
    return get_method(options.method).decide(model, sites, options, None)


def lower_width(bits: int, allowed: list[int]) -> int | None:
    """The widest allowed bit width stored in a smaller container than `bits` (8 -> 4 -> 2), if any."""
    smaller = [b for b in allowed if container_bits(b) < container_bits(bits)]
    return max(smaller) if smaller else None


def weight_noise_scores(model, plan_lo: QuantPlan, fp32_path: Path | None = None) -> dict[int, float]:
    """Per layer: mean over its matrices of the relative weight error ||W - Q(W)||^2 / ||W||^2 at the
    lower width. A cheap, Hessian-free proxy for how much a layer suffers from fewer bits."""
    plan = copy.deepcopy(plan_lo)
    quantize_plan(model, plan)  # fills stats["mse"] per tensor
    scores: dict[int, list[float]] = {}
    for t in plan.weights:
        w = weight_array(model, t.name)
        scores.setdefault(t.layer, []).append(t.stats["mse"] / float(np.mean(w.astype(np.float64) ** 2)))
    return {layer: float(np.mean(v)) for layer, v in scores.items()}


# name -> f(model, plan at the lower width, fp32 path) -> {layer: score}; higher = more sensitive.
# Q-BERT adds "hessian" (Omega_l x weight noise, from its per-layer Hessian spectrum).
LAYER_SCORES: dict[str, Callable] = {"weight-noise": weight_noise_scores}


def mixed(plan_hi: QuantPlan, plan_lo: QuantPlan, layers: set[int]) -> QuantPlan:
    """`plan_hi` with every weight of `layers` taken from `plan_lo`."""
    lo = {t.name: t for t in plan_lo.weights}
    plan = copy.deepcopy(plan_hi)
    plan.weights = [copy.deepcopy(lo[t.name]) if t.layer in layers else t for t in plan.weights]
    for t in plan.weights:
        t.stats = {}
    return plan


# ---------------------------------------------------------------------------------------------------------------
# the search


def search(
    fp32_path: Path,
    *,
    max_drop: float,
    evaluate: Callable[[Candidate], tuple[int, dict]],
    methods: list[str],
    bits: list[int],
    grid: Grid,
    base: dict | None = None,
    fp32_metric: float,
    primary: str,
    mixed_precision: bool = True,
    layer_score: str = "weight-noise",
    roundings: tuple[str, ...] = ("nearest",),
    log: Callable[[Step], None] | None = None,
) -> SearchResult:
    """Find the smallest passing candidate. `evaluate(candidate) -> (file bytes, metrics)` converts
    and validates it on the search data; pass = fp32_metric - metrics[primary] <= max_drop."""
    log = log or (lambda step: None)
    methods, bits = check_methods(methods), check_bits(bits)
    if layer_score not in LAYER_SCORES:
        raise BadInput(f"unknown layer order '{layer_score}': choose from {', '.join(LAYER_SCORES)}")
    model = load_ir(fp32_path)
    sites = check_quantizable(model)
    planned = {s.name for s in sites}
    result = SearchResult(None, None, fp32_metric=fp32_metric, primary=primary)

    def try_candidate(c: Candidate) -> bool:
        step = Step(c.label, c.stage, round(c.estimate))
        size, metrics = evaluate(c)
        step.bytes, step.metric = size, metrics[primary]
        step.drop = fp32_metric - metrics[primary]
        step.passed = step.drop <= max_drop + 1e-9
        result.steps.append(step)
        log(step)
        return step.passed

    candidates = uniform_candidates(model, sites, 0, methods, bits, grid, base or {}, roundings)
    emb = {t.name for c in candidates for t in c.plan.embeddings}
    fp32_rest = sum(v.const_value.nbytes for n, v in model.graph.initializers.items() if n not in planned | emb)
    for c in candidates:
        c.estimate += fp32_rest
    # stage 1: smallest implied size first; the first pass wins (ties in size: more bits first)
    best_bytes = None
    for c in candidates:
        if result.best_uniform is not None and c.estimate >= result.best_uniform.estimate:
            break
        if try_candidate(c):
            result.best_uniform, best_bytes = c, result.steps[-1].bytes
    result.chosen = result.best_uniform
    if result.best_uniform is None or not mixed_precision:
        return result

    # stage 2: mixed precision from the best uniform plan
    c0 = result.best_uniform
    lo_bits = lower_width(c0.bits, bits)
    if lo_bits is None:
        return result
    lo_options = Cell.of({**c0.options, "bits": lo_bits}).convert_options()
    plan_lo = decide_uniform(model, sites, lo_options)
    scores = LAYER_SCORES[layer_score](model, plan_lo, fp32_path)
    order = sorted(scores, key=lambda layer: scores[layer])
    result.layer_order, result.layer_scores = order, scores
    lowered: set[int] = set()
    current_bytes = best_bytes
    for layer in order:
        trial = lowered | {layer}
        plan = mixed(c0.plan, plan_lo, trial)
        label = f"{c0.label}, layers {','.join(map(str, sorted(trial)))} at {lo_bits} bits"
        c = Candidate(label, "mixed", plan, c0.options, estimate_bytes(plan, fp32_rest), c0.bits)
        if try_candidate(c) and result.steps[-1].bytes < current_bytes:
            lowered, current_bytes = trial, result.steps[-1].bytes
            result.chosen = c
    return result


def describe_path(result: SearchResult, max_drop: float, data: str) -> str:
    """The search path as Markdown, for the model card."""
    lines = [f"Searched for the smallest file whose `{result.primary}` is at most {max_drop:g} points below FP32 "
             f"({result.fp32_metric:.2f}) on the search data: {data}. Uniform plans were validated from the smallest "
             "implied size up (the first that passes is the smallest passing one); then layers of the best "
             "uniform plan were lowered one at a time to the next smaller storage width, least sensitive first "
             + (f"(order {', '.join(map(str, result.layer_order))}, by relative weight noise)" if result.layer_order else "")
             + ", a change kept while the file still passes.", "",
             "| # | stage | candidate | MiB | " + result.primary + " | drop | passes |", "|---:|---|---|---:|---:|---:|---|"]
    for i, s in enumerate(result.steps, 1):
        lines.append(f"| {i} | {s.stage} | {s.label} | {s.bytes / 2**20:.2f} | {s.metric:.2f} | {s.drop:+.2f} | "
                     f"{'yes' if s.passed else 'no'} |")
    return "\n".join(lines)
