"""`bert2onnxq sensitivity`: which encoder layers (or layer roles) of a plan cost the accuracy.

Each unit is quantized alone with everything else FP32 ("only"), and the whole plan is applied but for
that unit ("all but"); both files are scored against FP32 on the same sample of the task. The units
that hurt most can then be kept at 8 bits (or FP32): that plan is written and scored too.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import BadInput
from ..plan import QuantPlan

MODES = ("only", "all-but")
ROLES = ("query", "key", "value", "attention_output", "intermediate", "output")


@dataclass(frozen=True)
class Unit:
    label: str  # "layer 3" or "layer 3 value"
    layer: int
    role: str | None
    names: frozenset[str]  # the plan's weight tensors it holds
    skip: str  # the --skip pattern that keeps it FP32


def plan_units(plan: QuantPlan, by: str) -> list[Unit]:
    """The plan's quantized encoder weights grouped per layer, or per (layer, role)."""
    if by not in ("layer", "role"):
        raise BadInput(f"--by {by}: choose layer or role")
    groups: dict[tuple, set[str]] = {}
    for t in plan.weights:
        if t.layer is None:
            continue
        key = (t.layer, t.role if by == "role" else None)
        groups.setdefault(key, set()).add(t.name)
    if not groups:
        raise BadInput("the plan quantizes no encoder weight: nothing to rank")
    units = []
    for (layer, role), names in sorted(groups.items(), key=lambda kv: (kv[0][0], ROLES.index(kv[0][1]) if kv[0][1] else 0)):
        example = next(iter(names))
        prefix = example[: example.index(f"layer.{layer}.") + len(f"layer.{layer}.")]
        if role is None:
            skip = prefix
        else:
            skip = example.removesuffix(".weight")
        units.append(Unit(f"layer {layer}" + (f" {role}" if role else ""), layer, role, frozenset(names), skip))
    return units


def without(plan: QuantPlan, names: set[str] | frozenset[str], *, embeddings: bool = True) -> QuantPlan:
    """`plan` with the weights in `names` left FP32 (and without embeddings unless `embeddings`)."""
    variant = copy.deepcopy(plan)
    variant.weights = [t for t in variant.weights if t.name not in names]
    variant.skip = sorted(set(variant.skip) | set(names))
    if not embeddings:
        variant.embeddings = []
    return variant


def raised(plan: QuantPlan, names: set[str], fp32: Path, bits: int | None) -> QuantPlan:
    """`plan` with the weights in `names` at `bits` instead (LQ per channel, the plan's target and
    activations), or FP32 when `bits` is None."""
    if bits is None:
        return without(plan, names)
    from ..convert import decide
    from ..methods import convert_options
    from ..onnx_io import load_ir

    wider = decide(load_ir(fp32), convert_options(bits=bits, target=plan.target, act_bits=plan.activations.bits))
    replacement = {t.name: t for t in wider.weights if t.name in names}
    variant = copy.deepcopy(plan)
    variant.weights = [replacement.get(t.name, t) for t in variant.weights]
    return variant


def only(plan: QuantPlan, names: frozenset[str]) -> QuantPlan:
    """Only the weights in `names` quantized: every other weight and the embeddings FP32."""
    return without(plan, {t.name for t in plan.weights} - set(names), embeddings=False)


def run_sensitivity(fp32: Path, task: str, plan: QuantPlan, output_dir: Path, *, by: str = "layer",
                    modes: tuple[str, ...] = MODES, samples: int = 500, keep_worst: int = 2, keep_bits: int | None = 8,
                    threads: int = 0,
                    data_dir: Path | None = None, data_file: Path | None = None, calibrate=None,
                    progress: Callable | None = None, command: str = "") -> dict:
    """Rank the plan's units; write sensitivity.json / .md / .png and keep-worst.plan.json (the plan with
    the `keep_worst` most harmful units at `keep_bits`, LQ per channel, or FP32 when None) in `output_dir`."""
    from ..convert import convert
    from ..onnx_io import check_writable, write_atomic
    from ..report import plot_sensitivity, sensitivity_markdown
    from ..validate import ReferenceCache, Subset, check_task, validate

    for m in modes:
        if m not in MODES:
            raise BadInput(f"--mode {m}: choose from {', '.join(MODES)}")
    if keep_worst < 0:
        raise BadInput(f"--keep-worst {keep_worst} must be >= 0")
    check_task(fp32, task)
    units = plan_units(plan, by)
    if keep_worst > len(units):
        raise BadInput(f"--keep-worst {keep_worst} is more than the plan's {len(units)} units")
    output_dir = Path(output_dir)
    existed = output_dir.exists()
    check_writable(output_dir)
    subset = Subset(split="dev", size=samples)
    cache = ReferenceCache()
    where = {"data_dir": data_dir, "data_file": data_file}
    work = Path(tempfile.mkdtemp(prefix=".sensitivity.", dir=output_dir))
    counter = iter(range(10**6))

    def score(variant: QuantPlan) -> dict:
        path = work / f"v{next(counter)}" / "model.onnx"
        summary = convert(str(fp32), path, plan=copy.deepcopy(variant), calibrate=calibrate)
        r = validate(path, task, reference=fp32, threads=threads, subset=subset, reference_cache=cache, **where)
        shutil.rmtree(path.parent, ignore_errors=True)
        primary = r["primary_metric"]
        return {"metric": r["model"]["metrics"][primary], "drop": r["comparison"]["drop"][primary],
                "agreement": r["comparison"]["agreement"], "logit_rel_rms": r["comparison"]["logit_rel_rms"],
                "bytes": summary["bytes"], "_result": r}

    start = time.perf_counter()
    try:
        tick = progress("units", 1 + len(units) * len(modes) + (1 if keep_worst else 0)) if progress else (lambda n: None)
        full = score(plan)
        tick(1)
        first = full.pop("_result")
        primary, examples = first["primary_metric"], first["examples"]
        fp32_metric = first["reference"]["metrics"][primary]
        rows = []
        for unit in units:
            row = {"unit": unit.label, "layer": unit.layer, "role": unit.role, "skip": unit.skip, "tensors": len(unit.names)}
            for mode in modes:
                scored = score(only(plan, unit.names) if mode == "only" else without(plan, unit.names))
                scored.pop("_result")
                row[mode] = scored
                tick(1)
            rows.append(row)
        ranked = sorted(rows, key=_harm, reverse=True)
        worst = ranked[:keep_worst]
        kept = None
        if worst:
            kept_names = set().union(*(set(u.names) for u in units if u.label in {w["unit"] for w in worst}))
            kept_plan = raised(plan, kept_names, fp32, keep_bits)
            kept = score(kept_plan)
            kept.pop("_result")
            kept.update(units=[w["unit"] for w in worst], skip=[w["skip"] for w in worst], bits=keep_bits,
                        plan=str(output_dir / "keep-worst.plan.json"))
            tick(1)
        report = {"task": task, "fp32": str(fp32), "plan_summary": plan.summary(), "by": by, "modes": list(modes),
                  "data": f"{subset.describe()}, {examples} examples", "primary_metric": primary,
                  "fp32_metric": fp32_metric, "full": full, "rows": rows, "ranking": [r["unit"] for r in ranked],
                  "keep_worst": kept, "seconds": round(time.perf_counter() - start, 1), "command": command}
        files = {"json": output_dir / "sensitivity.json", "markdown": output_dir / "sensitivity.md",
                 "plot": output_dir / "sensitivity.png"}
        if kept:
            write_atomic(output_dir / "keep-worst.plan.json", kept_plan.to_json())
        plot_sensitivity(report, files["plot"])
        report["files"] = {k: str(v) for k, v in files.items()} | ({"keep_worst_plan": kept["plan"]} if kept else {})
        write_atomic(files["markdown"], sensitivity_markdown(report))
        write_atomic(files["json"], json.dumps(report, indent=1))
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not existed and not any(output_dir.iterdir()):  # a failed run leaves no empty folder behind
            output_dir.rmdir()


def _harm(row: dict) -> tuple:
    """How much a unit costs: the output (logit) error it causes quantized alone, else the error that
    leaving it FP32 removes; then the metric drop. The error is continuous: a metric on a few hundred
    examples moves by whole examples and is often better than FP32 by chance."""
    alone, rest = row.get("only"), row.get("all-but")
    if alone:
        return (alone["logit_rel_rms"], alone["drop"])
    return (-rest["logit_rel_rms"], -rest["drop"])
