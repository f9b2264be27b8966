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

Candidates come from generators; Q-BERT plugs in with a `sweep.REGISTRY` entry (uniform stage) and
a `LAYER_SCORES` entry (mixed stage).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .convert import decide_plan, load_ir, quantize_tensors, weight_array
from .errors import BadInput
from .graph.locate import check_quantizable
from .numerics import container_bits
from .plan import QuantPlan
from .sweep import REGISTRY, Cell, Grid, check_bits, check_methods

SEARCH_DATA = ("train", "dev-half", "dev")


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
                       base: dict) -> list[Candidate]:
    """The sweep registry's cells as candidates, ordered by implied size (ties: more bits first)."""
    out = []
    for m in methods:
        for b in bits:
            for kw in REGISTRY[m].cells(b, grid):
                kw = {**base, **kw}
                cell = Cell.of(kw)
                plan = decide_plan(model, cell.convert_options(), sites)
                out.append(Candidate(f"{cell.variant} W{b}", "uniform", plan, cell.options, estimate_bytes(plan, fp32_rest), b))
    return sorted(out, key=lambda c: (c.estimate, -c.bits, c.label))


def lower_width(bits: int, allowed: list[int]) -> int | None:
    """The widest allowed bit width stored in a smaller container than `bits` (8 -> 4 -> 2), if any."""
    smaller = [b for b in allowed if container_bits(b) < container_bits(bits)]
    return max(smaller) if smaller else None


def weight_noise_scores(model, plan_lo: QuantPlan, fp32_path: Path | None = None) -> dict[int, float]:
    """Per layer: mean over its matrices of the relative weight error ||W - Q(W)||^2 / ||W||^2 at the
    lower width. A cheap, Hessian-free proxy for how much a layer suffers from fewer bits."""
    plan = copy.deepcopy(plan_lo)
    quantize_tensors(model, plan)  # fills stats["mse"] per tensor
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

    candidates = uniform_candidates(model, sites, 0, methods, bits, grid, base or {})
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
    plan_lo = decide_plan(model, lo_options, sites)
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


# ---------------------------------------------------------------------------------------------------------------
# convert --max-drop: the search on real files, then the chosen file, its plan, path and card


def search_subset(search_data: str, calib_samples: int, samples: int, seed: int = 0):
    from .validate import Subset

    if search_data == "train":
        # after the examples static calibration may use, so search never scores what calibrated
        return Subset(split="train", skip=calib_samples, size=samples, seed=seed)
    if search_data == "dev-half":
        return Subset(split="dev", half=0)
    if search_data == "dev":
        return Subset(split="dev")
    raise BadInput(f"unknown --search-data '{search_data}': choose from {', '.join(SEARCH_DATA)}")


def convert_max_drop(
    source: str,
    output: Path,
    *,
    task: str,
    max_drop: float,
    base: dict,
    methods: list[str],
    bits: list[int],
    grid: Grid,
    data_dir: Path | None = None,
    data_file: Path | None = None,
    search_data: str = "train",
    search_file: Path | None = None,
    search_samples: int = 1000,
    mixed_precision: bool = True,
    plan_out: Path | None = None,
    threads: int = 0,
    latency: bool = True,
    command: str = "",
    log: Callable[[str, object], None] | None = None,
) -> dict:
    """Search, write the chosen file (atomically) with `<stem>.plan.json`, `<stem>.search.json` and the
    model card `<stem>.md`; validate it on the full dev data for the report."""
    from .convert import convert
    from .latency import latency_ratio
    from .report import model_card, write_atomic
    from .sweep import check_writable, file_bytes, prepare_fp32
    from .tasks import get_task
    from .validate import Protocol, ReferenceCache, Subset, validate

    log = log or (lambda kind, payload: None)
    output = Path(output)
    if output.suffix != ".onnx":
        raise BadInput(f"output '{output}' must end in .onnx")
    if max_drop < 0:
        raise BadInput(f"--max-drop {max_drop} must be >= 0 (points of the task's primary metric)")
    methods, bits = check_methods(methods), check_bits(bits)
    if "qbert" in methods:
        raise BadInput("--max-drop searches lq, aciq and ocs plans (its mixed-precision stage already lowers layers "
                       "one by one): for Q-BERT's Hessian allocation run convert --method qbert --avg-bits B")
    t = get_task(task)
    if search_file is None and search_data == "train" and (t.name == "squad" or data_file is not None):
        raise BadInput("searching on the train split needs a GLUE --data-dir: pass --search-file (labelled data "
                       "held out from training) or --search-data dev-half")
    subset = Subset() if search_file is not None else search_subset(search_data, base.get("calib_samples", 128), search_samples)
    check_writable(output.parent)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.search.", dir=output.parent))
    try:
        fp32, _ = prepare_fp32(source, work) if Path(source).suffix != ".onnx" else (Path(source), {})
        fp32_kept = Path(source).suffix == ".onnx"
        cache = ReferenceCache()
        search_where = ({"data_file": Path(search_file)} if search_file is not None
                        else {"data_dir": data_dir, "data_file": data_file})
        data_text = (f"`{search_file}` (all examples)" if search_file is not None else f"{task} {subset.describe()}")
        fp32_search = validate(fp32, task, threads=threads, subset=subset, reference_cache=cache, **search_where)
        primary = fp32_search["primary_metric"]
        data_text += f", {fp32_search['examples']} examples"
        log("fp32", {"metric": fp32_search["model"]["metrics"][primary], "primary": primary, "data": data_text})
        counter = iter(range(10**6))

        def evaluate(c: Candidate) -> tuple[int, dict]:
            path = work / f"c{next(counter)}" / "model.onnx"
            summary = convert(str(fp32), path, plan=copy.deepcopy(c.plan))
            result = validate(path, task, reference=fp32, threads=threads, subset=subset, reference_cache=cache,
                              **search_where)
            size = summary["bytes"]
            shutil.rmtree(path.parent, ignore_errors=True)  # the plan re-makes it; keep the disk small
            return size, result["model"]["metrics"]

        result = search(fp32, max_drop=max_drop, evaluate=evaluate, methods=methods, bits=bits, grid=grid, base=base,
                        fp32_metric=fp32_search["model"]["metrics"][primary], primary=primary,
                        mixed_precision=mixed_precision, log=lambda step: log("step", step))
        if result.chosen is None:
            best = min(result.steps, key=lambda s: s.drop)
            raise BadInput(f"no candidate is within {max_drop:g} points of FP32 on the search data (the closest, "
                           f"{best.label}, drops {best.drop:.2f}): allow a larger --max-drop or add bit widths")
        chosen = result.chosen
        summary = convert(str(fp32), output, plan=copy.deepcopy(chosen.plan))
        plan = summary["plan"]
        summary["fp32_bytes"] = file_bytes(fp32)
        # the report: the full dev data, never used by the search unless --search-data dev says so
        final = validate(output, task, reference=fp32, threads=threads, protocol=Protocol(), reference_cache=cache,
                         data_dir=data_dir, data_file=data_file)
        measured = {"validation": final, "latency": latency_ratio(output, fp32) if latency else None}
        uniform_dev = None
        if chosen is not result.best_uniform:  # how much the mixed stage bought, on the report data too
            upath = work / "uniform" / "model.onnx"
            usummary = convert(str(fp32), upath, plan=copy.deepcopy(result.best_uniform.plan))
            uval = validate(upath, task, reference=fp32, threads=threads, reference_cache=cache,
                            data_dir=data_dir, data_file=data_file)
            uniform_dev = {"bytes": usummary["bytes"], "metrics": uval["model"]["metrics"], "drop": uval["comparison"]["drop"]}
        held_out = None
        if search_data == "dev-half" and search_file is None:  # the half of dev the search never scored
            half = validate(output, task, reference=fp32, threads=threads, subset=Subset(half=1), reference_cache=cache,
                            data_dir=data_dir, data_file=data_file)
            held_out = {"data": half["data"]["description"], "examples": half["examples"],
                        "metrics": half["model"]["metrics"], "drop": half["comparison"]["drop"]}
        plan_path = Path(plan_out) if plan_out else output.with_suffix(".plan.json")
        write_atomic(plan_path, plan.to_json())
        dev_drop = final["comparison"]["drop"][primary]
        split_note = (" The search used the same dev data as this report, so the reported drop is optimistic "
                      "(selected on the data it is measured on)." if search_data == "dev" and search_file is None else
                      f" The report below is on {final['data']['description']} ({final['examples']} examples), "
                      "which the search did not use" + (" except the half it searched on" if search_data == "dev-half"
                                                         and search_file is None else "") + ".")
        text = describe_path(result, max_drop, data_text) + "\n\n" + (
            f"Chosen: **{chosen.label}** ({summary['bytes'] / 2**20:.2f} MiB); best uniform plan passing the same "
            f"drop: {result.best_uniform.label} ({next(s.bytes for s in result.steps if s.label == result.best_uniform.label) / 2**20:.2f} MiB)."
            f"{split_note} On the report data the drop is {dev_drop:+.2f} points: "
            f"{'within' if dev_drop <= max_drop + 1e-9 else 'NOT within'} the {max_drop:g}-point budget."
            + (f" On the other half of dev alone ({held_out['examples']} examples, never scored by the search) the "
               f"drop is {held_out['drop'][primary]:+.2f} points." if held_out else ""))
        card = model_card(title=f"smallest file within {max_drop:g} points of FP32 ({chosen.label})",
                          source=source, fp32=str(fp32) if fp32_kept else None, plan=plan, summary=summary,
                          measured=measured, search={"text": text}, command=command, plan_file=str(plan_path))
        write_atomic(output.with_suffix(".md"), card)
        from .report import layer_bits, plot_layer_bits

        lb = layer_bits(plan)
        plot = output.with_suffix(".layer_bits.png")
        if lb["mixed"]:  # where the bits went, per layer
            plot_layer_bits([{"status": "ok", "variant": chosen.label, "layer_bits": lb}], plot,
                            title=f"{output.name}: weight bits per encoder layer")
        record = {"output": str(output), "task": task, "max_drop": max_drop, "primary_metric": primary,
                  "search_data": data_text, "fp32_search_metric": result.fp32_metric,
                  "steps": [s.__dict__ for s in result.steps], "layer_order": result.layer_order,
                  "layer_scores": {str(k): v for k, v in result.layer_scores.items()},
                  "chosen": {"label": chosen.label, "stage": chosen.stage, "bytes": summary["bytes"],
                             "plan_summary": plan.summary(), "options": chosen.options},
                  "best_uniform": {"label": result.best_uniform.label,
                                   "bytes": next(s.bytes for s in result.steps if s.label == result.best_uniform.label),
                                   "dev": uniform_dev},
                  "report": {"data": final["data"]["description"], "examples": final["examples"],
                             "metrics": final["model"]["metrics"], "fp32_metrics": final["reference"]["metrics"],
                             "drop": final["comparison"]["drop"], "within_budget": dev_drop <= max_drop + 1e-9,
                             "held_out_half": held_out,
                             "latency_ratio": measured["latency"]["ratio"] if measured["latency"] else None},
                  "files": {"model": str(output), "plan": str(plan_path), "card": str(output.with_suffix(".md")),
                            "search": str(output.with_suffix(".search.json")),
                            **({"layer_bits_plot": str(plot)} if plot.is_file() and lb["mixed"] else {})},
                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command}
        write_atomic(output.with_suffix(".search.json"), json.dumps(record, indent=1))
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)
