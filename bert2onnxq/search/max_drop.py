"""`convert --max-drop`: the search on real files, then the chosen file, its plan, search path and card."""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from ..errors import BadInput
from ..methods import Grid
from ..sweep.cells import check_bits, check_methods
from .candidates import Candidate, describe_path, search

SEARCH_DATA = ("train", "dev-half", "dev")


def search_subset(search_data: str, samples: int):
    from ..validate import Subset

    if search_data == "train":
        # from the far end of the calibration order, so search never scores what calibrated
        return Subset(split="train", holdout=True, size=samples)
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
    roundings: tuple[str, ...] = ("nearest",),
    calibrate=None,
    log: Callable[[str, object], None] | None = None,
) -> dict:
    """Search, write the chosen file (atomically) with `<stem>.plan.json`, `<stem>.search.json` and the
    model card `<stem>.md`; validate it on the full dev data for the report. `roundings` adds a search
    dimension; gptq candidates calibrate with `calibrate` (convert's callback)."""
    from ..convert import convert
    from ..latency import latency_ratio
    from ..onnx_io import check_writable, file_bytes
    from ..report import model_card
    from ..sweep import prepare_fp32
    from ..tasks import get_task
    from ..validate import Protocol, ReferenceCache, Subset, validate

    log = log or (lambda kind, payload: None)
    output = Path(output)
    if output.suffix != ".onnx":
        raise BadInput(f"output '{output}' must end in .onnx")
    if max_drop < 0:
        raise BadInput(f"--max-drop {max_drop} must be >= 0 (points of the task's primary metric)")
    methods, bits = check_methods(methods), check_bits(bits)
    for r in roundings:
        if r not in ("nearest", "gptq"):
            raise BadInput(f"unknown rounding '{r}' in --search-rounding: choose nearest, gptq or both")
    if "gptq" in roundings and calibrate is None:
        raise BadInput("--search-rounding gptq needs calibration samples: pass --task with its train data")
    if "qbert" in methods:
        raise BadInput("--max-drop searches lq, aciq and ocs plans (its mixed-precision stage already lowers layers "
                       "one by one): for Q-BERT's Hessian allocation run convert --method qbert --avg-bits B")
    t = get_task(task)
    if search_file is None and search_data == "train" and (t.name == "squad" or data_file is not None):
        raise BadInput("searching on the train split needs a GLUE --data-dir: pass --search-file (labelled data "
                       "held out from training) or --search-data dev-half")
    subset = Subset() if search_file is not None else search_subset(search_data, search_samples)
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
            summary = convert(str(fp32), path, plan=copy.deepcopy(c.plan), calibrate=calibrate)
            result = validate(path, task, reference=fp32, threads=threads, subset=subset, reference_cache=cache,
                              **search_where)
            size = summary["bytes"]
            shutil.rmtree(path.parent, ignore_errors=True)  # the plan re-makes it; keep the disk small
            return size, result["model"]["metrics"]

        result = search(fp32, max_drop=max_drop, evaluate=evaluate, methods=methods, bits=bits, grid=grid, base=base,
                        fp32_metric=fp32_search["model"]["metrics"][primary], primary=primary,
                        mixed_precision=mixed_precision, roundings=roundings, log=lambda step: log("step", step))
        if result.chosen is None:
            best = min(result.steps, key=lambda s: s.drop)
            raise BadInput(f"no candidate is within {max_drop:g} points of FP32 on the search data (the closest, "
                           f"{best.label}, drops {best.drop:.2f}): allow a larger --max-drop or add bit widths")
        chosen = result.chosen
        staged = work / "final"  # every output is written here and moved into place at the end, model last
        model_file = staged / output.name
        summary = convert(str(fp32), model_file, plan=copy.deepcopy(chosen.plan), calibrate=calibrate)
        plan = summary["plan"]
        summary["fp32_bytes"] = file_bytes(fp32)
        summary["output"] = str(output)
        # the report: the full dev data, never used by the search unless --search-data dev says so
        final = validate(model_file, task, reference=fp32, threads=threads, protocol=Protocol(), reference_cache=cache,
                         data_dir=data_dir, data_file=data_file)
        measured = {"validation": final, "latency": latency_ratio(model_file, fp32) if latency else None}
        uniform_dev = None
        if chosen is not result.best_uniform:  # how much the mixed stage bought, on the report data too
            upath = work / "uniform" / "model.onnx"
            usummary = convert(str(fp32), upath, plan=copy.deepcopy(result.best_uniform.plan), calibrate=calibrate)
            uval = validate(upath, task, reference=fp32, threads=threads, reference_cache=cache,
                            data_dir=data_dir, data_file=data_file)
            uniform_dev = {"bytes": usummary["bytes"], "metrics": uval["model"]["metrics"], "drop": uval["comparison"]["drop"]}
        held_out = None
        if search_data == "dev-half" and search_file is None:  # the half of dev the search never scored
            half = validate(model_file, task, reference=fp32, threads=threads, subset=Subset(half=1), reference_cache=cache,
                            data_dir=data_dir, data_file=data_file)
            held_out = {"data": half["data"]["description"], "examples": half["examples"],
                        "metrics": half["model"]["metrics"], "drop": half["comparison"]["drop"]}
        plan_path = Path(plan_out) if plan_out else output.with_suffix(".plan.json")
        beside = plan_path.parent.resolve() == output.parent.resolve()
        (staged / plan_path.name if beside else plan_path.with_name(f".{plan_path.name}.staged")).write_text(plan.to_json())
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
        (staged / output.with_suffix(".md").name).write_text(card)
        from ..report import layer_bits, plot_layer_bits

        lb = layer_bits(plan)
        plot = output.with_suffix(".layer_bits.png")
        if lb["mixed"]:  # where the bits went, per layer
            plot_layer_bits([{"status": "ok", "variant": chosen.label, "layer_bits": lb}], staged / plot.name,
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
                            **({"layer_bits_plot": str(plot)} if lb["mixed"] else {})},
                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command}
        (staged / output.with_suffix(".search.json").name).write_text(json.dumps(record, indent=1))
        if not beside:
            os.replace(plan_path.with_name(f".{plan_path.name}.staged"), plan_path)
        for f in sorted(staged.iterdir(), key=lambda f: f.name == output.name):
            os.replace(f, output.parent / f.name)
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)
