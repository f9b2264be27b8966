"""Running a sweep: every cell (sweep.cells) is converted, validated against the FP32 export and
timed; each finished cell is saved on its own, so a killed sweep resumes where it stopped, and the
aggregate files are rebuilt from the cell files.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .. import __version__
from ..errors import BadInput
from ..methods import ConvertOptions
from ..methods.qbert import bit_choices_around
from ..onnx_io import check_writable, file_bytes, write_atomic
from ..report import layer_bits, model_card, write_results
from .cells import Cell, Grid, check_bits, check_methods, make_cells
from .execute import _import_ray, execute

CELL_VERSION = 1


# ---------------------------------------------------------------------------------------------------------------
# one cell (runs in the driver, a worker process, or a Ray task)


@dataclass(frozen=True)
class Setup:
    """What every cell needs; picklable, so that workers and Ray tasks receive it as is."""

    fp32: str
    out: str
    task: str
    data_dir: str | None = None
    data_file: str | None = None
    limit: int | None = None
    batch_size: int = 32
    max_length: int | None = None
    threads: int = 0
    latency: bool = True
    latency_threads: int = 1
    keep_models: bool = True
    source: str = ""
    hessian: str | None = None  # Q-BERT: the sweep's one Hessian record (JSON), shared by every qbert cell
    calib_file: str | None = None  # train data for static ranges / activation splits (default: data_dir's train)

    def calibrate(self, fp32_path, names, samples=None, moments=False, min_tokens=0, weights=None):
        """Activation statistics on the task's train samples (static ranges, activation splits, GPTQ)."""
        from ..analyse.activations import task_calibrator

        calibrate = task_calibrator(self.task, data_dir=Path(self.data_dir) if self.data_dir else None,
                                    data_file=Path(self.calib_file) if self.calib_file else None)
        return calibrate(fp32_path, names, samples, moments, min_tokens, weights)

    def protocol(self):
        from ..validate import Protocol

        return Protocol(max_length=self.max_length, batch_size=self.batch_size, limit=self.limit)

    def reference_cache(self):
        from ..validate import ReferenceCache

        return ReferenceCache(Path(self.out) / "fp32" / "reference-outputs")

    def data(self) -> dict:
        return {"data_dir": Path(self.data_dir) if self.data_dir else None,
                "data_file": Path(self.data_file) if self.data_file else None}


def measure(model: Path, setup: Setup, fp32_result: dict | None = None) -> dict:
    """Validate `model` against the FP32 export (FP32 run from the cache) and time it."""
    from ..latency import latency_ratio
    from ..validate import validate

    start = time.perf_counter()
    result = validate(model, setup.task, reference=Path(setup.fp32), threads=setup.threads,
                      protocol=setup.protocol(), reference_cache=setup.reference_cache(), **setup.data())
    out = {"validation": result, "validate_seconds": round(time.perf_counter() - start, 2), "latency": None}
    if setup.latency:
        out["latency"] = latency_ratio(model, Path(setup.fp32), threads=setup.latency_threads)
    return out


def run_cell(cell: Cell, setup: Setup) -> dict:
    """Convert, validate and time one cell; returns its row (status 'error' with the reason on failure)."""
    from ..convert import convert

    out = Path(setup.out)
    folder = out / "models" / cell.id
    row = {"version": CELL_VERSION, "id": cell.id, "method": cell.method, "variant": cell.variant, "bits": cell.bits,
           "options": cell.options, "task": setup.task, "bert2onnxq": __version__}
    start = time.perf_counter()
    try:
        if folder.is_dir():  # leftovers of a killed run: atomic_output's temporary folders
            for stale in folder.glob(".*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
        t0 = time.perf_counter()
        summary = convert(setup.fp32, folder / "model.onnx", cell_options(cell, setup), calibrate=setup.calibrate)
        convert_seconds = round(time.perf_counter() - t0, 2)
        plan = summary["plan"]
        summary["fp32_bytes"] = file_bytes(Path(setup.fp32))
        measured = measure(folder / "model.onnx", setup)
        row.update(status="ok", **summarize(measured, plan, summary, summary["fp32_bytes"]))
        row["seconds"] = {"convert": convert_seconds, "validate": measured["validate_seconds"]}
        row["model"] = str(folder / "model.onnx") if setup.keep_models else None
        write_atomic(folder / "plan.json", plan.to_json())
        card = model_card(title=f"{cell.variant}, {cell.bits}-bit weights", source=setup.source or setup.fp32,
                          fp32=setup.fp32, plan=plan, summary=summary, measured=measured,
                          command=f"bert2onnxq sweep (cell {cell.id}; options {json.dumps(cell.options)})",
                          plan_file=str(folder / "plan.json"))
        write_atomic(folder / "model.md", card)
        if not setup.keep_models:  # the cell file and the card keep everything but the weights
            for f in folder.glob("model.onnx*"):
                f.unlink()
    except Exception as exc:  # one cell must not sink the sweep; the row says why, a re-run retries it
        msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        row.update(status="error", error=f"{type(exc).__name__}: {msg}" if not isinstance(exc, BadInput) else msg)
    row["seconds"] = {**row.get("seconds", {}), "total": round(time.perf_counter() - start, 2)}
    row["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return row


def cell_options(cell: Cell, setup: Setup) -> ConvertOptions:
    """The cell's ConvertOptions; Q-BERT cells get the sweep's Hessian and their bit budget."""
    options = cell.convert_options()
    if cell.method == "qbert":
        if not setup.hessian:
            raise BadInput("a qbert cell needs the sweep's Hessian record")
        record = json.loads(Path(setup.hessian).read_text())
        options = replace(options, method_options=replace(options.method_options, hessian=record,
                                                          avg_bits=float(cell.bits),
                                                          bit_choices=bit_choices_around(cell.bits)))
    return options


def qbert_hessian(fp32: Path, out: Path, task: str, data_dir: Path | None, calib_file: Path | None,
                  progress=None) -> Path:
    """The Hessian record of the sweep's model (computed once, on train batches; reused on resume)."""
    path = Path(out) / "qbert-hessian.json"
    if not path.is_file():
        from ..analyse.hessian_record import HessianSettings, export_hessian_record

        settings = HessianSettings(task=task, data_dir=data_dir, calib_file=calib_file)
        write_atomic(path, json.dumps(export_hessian_record(fp32, settings, progress), indent=1))
    return path


def summarize(measured: dict, plan, summary: dict, fp32_bytes: int) -> dict:
    """The row fields of a validated, timed file (shared by sweep cells and the --max-drop search)."""
    v = measured["validation"]
    metrics, ref = v["model"]["metrics"], v["reference"]["metrics"]
    cmp = v["comparison"]
    lat = measured.get("latency")
    return {
        "primary_metric": v["primary_metric"], "metrics": metrics, "fp32_metrics": ref,
        "pct_of_fp32": {k: (100 * metrics[k] / ref[k] if ref.get(k) else None) for k in metrics},
        "drop": cmp["drop"], "agreement": cmp["agreement"], "logit_rel_rms": cmp["logit_rel_rms"],
        "max_logit_diff": cmp["max_logit_diff"],
        "bytes": summary["bytes"], "fp32_bytes": fp32_bytes, "size_ratio": summary["bytes"] / fp32_bytes,
        "ideal_bytes": summary["ideal_bytes"], "container_ideal_bytes": summary["container_ideal_bytes"],
        "plan_summary": plan.summary(), "layer_bits": layer_bits(plan), "ocs": plan.ocs_overhead(),
        "latency_ratio": lat["ratio"] if lat else None, "latency": lat,
        "examples": v["examples"], "data": v["data"]["description"], "runtime": v["model"]["runtime"],
    }


# ---------------------------------------------------------------------------------------------------------------
# the driver


def cell_path(out: Path, cell_id: str) -> Path:
    return Path(out) / "cells" / f"{cell_id}.json"


def finished(out: Path) -> dict[str, dict]:
    """Rows of the cells finished in `out` (status ok); unreadable or failed cells count as not done."""
    rows = {}
    for f in sorted((Path(out) / "cells").glob("*.json")):
        try:
            row = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if row.get("status") == "ok" and row.get("version") == CELL_VERSION:
            rows[row["id"]] = row
    return rows


def all_rows(out: Path) -> list[dict]:
    rows = []
    for f in sorted((Path(out) / "cells").glob("*.json")):
        try:
            rows.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    return rows


def prepare_fp32(source: str, out: Path) -> tuple[Path, dict]:
    """The FP32 export to sweep over: the given .onnx, or one export of the HF model into out/fp32."""
    if Path(source).suffix == ".onnx":
        if not Path(source).is_file():
            raise BadInput(f"'{source}' does not exist: pass an FP32 .onnx or a Hugging Face model folder")
        return Path(source), {"exported": False}
    from ..validate import model_metadata

    target = out / "fp32" / "model.onnx"
    if target.is_file() and model_metadata(target).get("source_model") == str(source):
        return target, {"exported": False, "reused": True}
    from ..export import export

    summary = export(str(source), target)
    return target, {"exported": True, "max_abs_diff_vs_torch": summary["max_abs_diff_vs_torch"]}


def load_manifest(out: Path, expected: dict) -> dict | None:
    """The sweep's identity (model, task, data, protocol); another sweep's folder is refused."""
    path = Path(out) / "sweep.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        return None
    for key, value in expected.items():
        if manifest.get("identity", {}).get(key) != value:
            have = manifest.get("identity", {})
            raise BadInput(f"'{out}' holds a sweep of {have.get('source')} on {have.get('task')} with other settings "
                           f"({key}: {have.get(key)!r}, now {value!r}): choose another -o or remove that folder")
    return manifest


def run_sweep(
    source: str,
    out: Path,
    task: str,
    methods: list[str],
    bits: list[int],
    grid: Grid = Grid(),
    *,
    data_dir: Path | None = None,
    data_file: Path | None = None,
    calib_file: Path | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    jobs: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    threads: int = 0,
    latency: bool = True,
    keep_models: bool = True,
    command: str = "",
    on_event: Callable[[str, dict], None] | None = None,
    progress=None,
) -> dict:
    """Run every missing cell and rebuild the result files; returns {ran, skipped, failed, files, ...}.

    on_event(kind, payload) is told about: 'fp32' (baseline scored), 'plan' (cells to run, skipped),
    'cell' (a finished row).
    """
    from ..tasks import get_task
    from ..validate import validate

    emit = on_event or (lambda kind, payload: None)
    methods = check_methods(methods)
    bits = check_bits(bits)
    get_task(task)  # unknown task: one line, before any work
    if jobs < 1:
        raise BadInput(f"--jobs {jobs} must be at least 1")
    if executor not in ("local", "ray"):
        raise BadInput(f"unknown executor '{executor}': choose local or ray")
    cells = make_cells(methods, bits, grid)
    out = Path(out)
    check_writable(out)
    if executor == "ray":
        _import_ray()  # missing extra: fail before the export, not after
    if Path(source).exists():
        source = str(Path(source).resolve())  # a resumed sweep is found again from another working directory
    fp32, export_info = prepare_fp32(source, out)
    # local: the machine's cores shared by the jobs; Ray: a modest 2 per task, the cluster adds tasks
    threads = threads or (2 if executor == "ray" else max(1, (os.cpu_count() or 1) // jobs))
    setup = Setup(fp32=str(fp32.resolve()), out=str(out.resolve()), task=task,
                  data_dir=str(Path(data_dir).resolve()) if data_dir else None,
                  data_file=str(Path(data_file).resolve()) if data_file else None,
                  limit=limit, batch_size=batch_size, max_length=max_length, threads=threads, latency=latency,
                  keep_models=keep_models, source=str(source),
                  calib_file=str(Path(calib_file).resolve()) if calib_file else None)
    identity = {"source": str(source), "task": task, "data_dir": setup.data_dir, "data_file": setup.data_file,
                "limit": limit, "batch_size": batch_size, "max_length": max_length}
    manifest = load_manifest(out, identity)
    if manifest is None or manifest.get("fp32", {}).get("path") != setup.fp32:
        result = validate(fp32, task, threads=threads, protocol=setup.protocol(),
                          reference_cache=setup.reference_cache(), **setup.data())
        manifest = {"identity": identity, "export": export_info,
                    "fp32": {"path": setup.fp32, "metrics": result["model"]["metrics"], "bytes": file_bytes(fp32),
                             "primary_metric": result["primary_metric"], "examples": result["examples"],
                             "features": result["features"], "data": result["data"]["description"],
                             "protocol": result["protocol"], "runtime": result["model"]["runtime"]}}
        write_atomic(out / "sweep.json", json.dumps(manifest, indent=1))
    else:
        # the FP32 run lives in the on-disk reference cache; workers read it from there
        pass
    emit("fp32", manifest["fp32"])

    done = finished(out)
    todo = [c for c in cells if c.id not in done]
    emit("plan", {"cells": [c.id for c in cells], "todo": [c.id for c in todo], "skipped": [c.id for c in cells if c.id in done]})
    if any(c.method == "qbert" for c in todo):
        emit("hessian", {})
        setup = replace(setup, hessian=str(qbert_hessian(fp32, out, task, data_dir, calib_file, progress)))
    ran, failed = [], []

    def record(row: dict) -> None:
        write_atomic(cell_path(out, row["id"]), json.dumps(row, indent=1))
        (ran if row["status"] == "ok" else failed).append(row["id"])
        emit("cell", row)

    for row in execute(todo, setup, jobs, executor, ray_address, run_cell, lost_row):
        record(row)

    manifest.update(command=command or manifest.get("command", ""), methods=methods, bits=bits,
                    updated_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    write_atomic(out / "sweep.json", json.dumps(manifest, indent=1))
    files = write_results(out, all_rows(out), manifest)
    return {"output": str(out), "cells": [c.id for c in cells], "ran": ran, "failed": failed,
            "skipped": [c.id for c in cells if c.id in done], "files": files, "fp32": manifest["fp32"]}


def lost_row(cell: Cell, error: str) -> dict:
    """The row of a cell whose worker was lost: reported failed, a re-run retries it."""
    return {"version": CELL_VERSION, "id": cell.id, "method": cell.method, "variant": cell.variant,
            "bits": cell.bits, "options": cell.options, "status": "error", "error": error}
