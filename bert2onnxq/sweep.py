"""sweep = many plans over one export: every cell (method, ConvertOptions kwargs) is converted,
validated against the FP32 export and timed; each finished cell is saved on its own, so a killed
sweep resumes where it stopped, and the aggregate files are rebuilt from the cell files.

A method enters the sweep (and the `convert --max-drop` search, which draws its uniform candidates
from the same registry) through one `REGISTRY` entry: bits -> ConvertOptions kwargs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Iterable

from . import __version__
from .convert import METHODS as CONVERT_METHODS
from .convert import ConvertOptions
from .errors import BadInput
from .report import layer_bits, model_card, write_atomic, write_results

CELL_VERSION = 1


# ---------------------------------------------------------------------------------------------------------------
# methods and cells


@dataclass(frozen=True)
class Grid:
    """Sweep-wide choices that multiply or shape the cells of every method."""

    granularities: tuple[str, ...] = ("channel",)
    group_size: int = 128
    ocs_ratios: tuple[float, ...] = (0.02,)
    extra: tuple[tuple[str, object], ...] = ()  # ConvertOptions kwargs for every cell (--set KEY=VALUE)


def _uniform(method: str) -> Callable[[int, Grid], list[dict]]:
    def cells(bits: int, grid: Grid) -> list[dict]:
        out = []
        for gran in grid.granularities:
            kw = {**dict(grid.extra), "method": method, "bits": bits, "granularity": gran}
            if gran == "group":
                kw["group_size"] = grid.group_size
            if method == "ocs":
                out += [{**kw, "ocs_ratio": r} for r in grid.ocs_ratios]
            else:
                out.append(kw)
        return out
    return cells


@dataclass(frozen=True)
class Method:
    name: str
    title: str  # as the papers' tables name it
    cells: Callable[[int, Grid], list[dict]]  # bits (the table's column) -> ConvertOptions kwargs per row variant


def _qbert(bits: int, grid: Grid) -> list[dict]:
    """Q-BERT at an average of `bits` per weight, each layer at bits-1, bits or bits+1 by its Hessian
    Omega (so the 8- and 2-bit columns come out uniform); neuron groups and ACIQ. The grid follows each
    layer's bits as in the other rows (asymmetric at 2-4 bits, symmetric at 5-8: signed int8 GEMM at run time)."""
    return [{**dict(grid.extra), "method": "qbert", "bits": bits, "granularity": "neuron-group", "clip": "aciq"}]


def qbert_choices(bits: int) -> tuple[int, ...]:
    return tuple(b for b in (bits - 1, bits, bits + 1) if 2 <= b <= 8)


REGISTRY: dict[str, Method] = {
    "lq": Method("lq", "LQ", _uniform("lq")),
    "aciq": Method("aciq", "ACIQ", _uniform("aciq")),
    "ocs": Method("ocs", "OCS", _uniform("ocs")),
    "qbert": Method("qbert", "Q-BERT", _qbert),
}
# methods announced but not in this build: a clear error instead of "unknown"
PENDING: dict[str, str] = {}


def available_methods() -> list[str]:
    return [m for m in REGISTRY if m in CONVERT_METHODS]


def check_methods(methods: Iterable[str]) -> list[str]:
    names = [m.strip().lower() for m in methods if m.strip()]
    if not names:
        raise BadInput("no method given: pass --methods, e.g. lq,aciq,ocs")
    for m in names:
        if m in available_methods():
            continue
        choices = ", ".join(available_methods())
        if m in PENDING or m in CONVERT_METHODS:
            raise BadInput(f"method '{m}' is not available in this build: {PENDING.get(m, 'it has no sweep entry')}; "
                           f"choose from {choices}")
        raise BadInput(f"unknown method '{m}': choose from {choices}")
    return list(dict.fromkeys(names))


def check_bits(bits: Iterable[int]) -> list[int]:
    out = []
    for b in bits:
        if not 2 <= int(b) <= 8:
            raise BadInput(f"--bits {b} is outside 2..8")
        out.append(int(b))
    if not out:
        raise BadInput("no bit width given: pass --bits, e.g. 8,6,4,3,2")
    return sorted(set(out), reverse=True)


_DEFAULTS = {f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
             for f in fields(ConvertOptions)}
_TYPES = {f.name: str(f.type) for f in fields(ConvertOptions)}


def canonical(kwargs: dict) -> dict:
    """The kwargs that differ from ConvertOptions' defaults (method and bits always kept), JSON-ready.

    Cell ids hash this, so a field added to ConvertOptions later (with a default) changes no id.
    """
    out = {}
    for k, v in sorted(kwargs.items()):
        if k not in _DEFAULTS:
            raise BadInput(f"unknown convert option '{k}': choose from {', '.join(sorted(_DEFAULTS))}")
        if isinstance(v, tuple):
            v = list(v)
        if k in ("method", "bits") or v != (list(_DEFAULTS[k]) if isinstance(_DEFAULTS[k], tuple) else _DEFAULTS[k]):
            out[k] = v
    return out


@dataclass(frozen=True)
class Cell:
    """One conversion of the sweep: a row (method variant) x column (bits) of the table."""

    options_json: str  # canonical kwargs as sorted JSON: hashable, stable

    @classmethod
    def of(cls, kwargs: dict) -> "Cell":
        return cls(json.dumps(canonical(kwargs), sort_keys=True))

    @property
    def options(self) -> dict:
        return json.loads(self.options_json)

    @property
    def method(self) -> str:
        return self.options["method"]

    @property
    def bits(self) -> int:
        return int(self.options["bits"])

    @property
    def id(self) -> str:
        """`<method>-w<bits>-<8 hex of the canonical options>`: readable, and stable across runs."""
        digest = hashlib.sha1(self.options_json.encode()).hexdigest()[:8]
        return f"{self.method}-w{self.bits}-{digest}"

    @property
    def variant(self) -> str:
        """The table row: method title plus what distinguishes it (not the bits, which are the column)."""
        o = self.options
        method = REGISTRY[self.method].title if self.method in REGISTRY else self.method.upper()
        parts = [method]
        if o.get("method") == "qbert":
            parts.append("bits±1 by Ω")
        if o.get("method") == "ocs":
            parts.append(f"r={o.get('ocs_ratio', _DEFAULTS['ocs_ratio'])}")
            if o.get("clip") == "aciq":
                parts.append("+ACIQ")
        gran = o.get("granularity", _DEFAULTS["granularity"])
        parts.append(f"group-{o.get('group_size', _DEFAULTS['group_size'])}" if gran == "group"
                     else "neuron groups" if gran == "neuron-group" else f"per-{gran}")
        for k, v in sorted(o.items()):
            if k not in ("method", "bits", "granularity", "group_size", "ocs_ratio", "clip"):
                parts.append(f"{k}={v}")
        return " ".join(parts)

    def convert_options(self) -> ConvertOptions:
        o = self.options
        o = {k: tuple(v) if isinstance(_DEFAULTS.get(k), tuple) else v for k, v in o.items()}
        return ConvertOptions(**o)


def make_cells(methods: list[str], bits: list[int], grid: Grid) -> list[Cell]:
    cells = []
    for m in methods:
        for b in bits:
            for kw in REGISTRY[m].cells(b, grid):
                cell = Cell.of(kw)
                cell.convert_options().check()  # bad --set values fail before any work
                if cell not in cells:
                    cells.append(cell)
    return cells


def parse_setting(item: str) -> tuple[str, object]:
    """'KEY=VALUE' for --set, typed after ConvertOptions' field (bool, int, float, none, tuple)."""
    if "=" not in item:
        raise BadInput(f"--set '{item}' must be KEY=VALUE, e.g. emb_bits=4")
    key, raw = (s.strip() for s in item.split("=", 1))
    key = key.replace("-", "_")
    if key not in _DEFAULTS or key in ("method", "bits"):
        raise BadInput(f"--set {key}: not a convert option a sweep can fix (choose from "
                       f"{', '.join(k for k in sorted(_DEFAULTS) if k not in ('method', 'bits'))})")
    kind = _TYPES[key]  # the field's annotation, e.g. "bool | None", "int", "tuple[str, ...]"
    try:
        if raw.lower() == "none":
            value = None
        elif kind.startswith("bool"):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            value = raw.lower() in ("true", "1", "yes")
        elif kind.startswith("tuple"):
            value = tuple(s for s in raw.split(",") if s)
        elif kind.startswith("float"):
            value = float(raw)
        elif kind.startswith("int"):
            value = int(raw)
        else:
            value = raw
    except ValueError:
        raise BadInput(f"--set {key}={raw}: expected a {kind} value, e.g. {_DEFAULTS[key]!r}") from None
    return key, value


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

    def calibrate(self, fp32_path, names):
        """Activation statistics on the task's train samples (cells with static ranges or activation splits)."""
        from .calibrate import observe_activations

        return observe_activations(fp32_path, names, self.task, data_dir=Path(self.data_dir) if self.data_dir else None,
                                   data_file=Path(self.calib_file) if self.calib_file else None)

    def protocol(self):
        from .validate import Protocol

        return Protocol(max_length=self.max_length, batch_size=self.batch_size, limit=self.limit)

    def reference_cache(self):
        from .validate import ReferenceCache

        return ReferenceCache(Path(self.out) / "fp32" / "reference-outputs")

    def data(self) -> dict:
        return {"data_dir": Path(self.data_dir) if self.data_dir else None,
                "data_file": Path(self.data_file) if self.data_file else None}


def file_bytes(path: Path) -> int:
    """The model's bytes on disk, external data included."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def measure(model: Path, setup: Setup, fp32_result: dict | None = None) -> dict:
    """Validate `model` against the FP32 export (FP32 run from the cache) and time it."""
    from .latency import latency_ratio
    from .validate import validate

    start = time.perf_counter()
    result = validate(model, setup.task, reference=Path(setup.fp32), threads=setup.threads,
                      protocol=setup.protocol(), reference_cache=setup.reference_cache(), **setup.data())
    out = {"validation": result, "validate_seconds": round(time.perf_counter() - start, 2), "latency": None}
    if setup.latency:
        out["latency"] = latency_ratio(model, Path(setup.fp32), threads=setup.latency_threads)
    return out


def run_cell(cell: Cell, setup: Setup) -> dict:
    """Convert, validate and time one cell; returns its row (status 'error' with the reason on failure)."""
    from .convert import convert

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
        from .qbert import QBertOptions

        if not setup.hessian:
            raise BadInput("a qbert cell needs the sweep's Hessian record")
        record = json.loads(Path(setup.hessian).read_text())
        options = replace(options, qbert=QBertOptions(hessian=record, avg_bits=float(cell.bits),
                                                      bit_choices=qbert_choices(cell.bits)))
    return options


def qbert_hessian(fp32: Path, out: Path, task: str, data_dir: Path | None, calib_file: Path | None) -> Path:
    """The Hessian record of the sweep's model (computed once, on train batches; reused on resume)."""
    path = Path(out) / "qbert-hessian.json"
    if not path.is_file():
        from .qbert import hessian_record

        write_atomic(path, json.dumps(hessian_record(fp32, task, data_dir=data_dir, calib_file=calib_file), indent=1))
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


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BadInput(f"cannot write to '{out}' ({exc.strerror or exc}): choose a writable -o") from None


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
    from .validate import model_metadata

    target = out / "fp32" / "model.onnx"
    if target.is_file() and model_metadata(target).get("source_model") == str(source):
        return target, {"exported": False, "reused": True}
    from .export import export

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
) -> dict:
    """Run every missing cell and rebuild the result files; returns {ran, skipped, failed, files, ...}.

    on_event(kind, payload) is told about: 'fp32' (baseline scored), 'plan' (cells to run, skipped),
    'cell' (a finished row).
    """
    from .tasks import get_task
    from .validate import validate

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
        setup = replace(setup, hessian=str(qbert_hessian(fp32, out, task, data_dir, calib_file)))
    ran, failed = [], []

    def record(row: dict) -> None:
        write_atomic(cell_path(out, row["id"]), json.dumps(row, indent=1))
        (ran if row["status"] == "ok" else failed).append(row["id"])
        emit("cell", row)

    for row in execute(todo, setup, jobs, executor, ray_address):
        record(row)

    manifest.update(command=command or manifest.get("command", ""), methods=methods, bits=bits,
                    updated_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    write_atomic(out / "sweep.json", json.dumps(manifest, indent=1))
    files = write_results(out, all_rows(out), manifest)
    return {"output": str(out), "cells": [c.id for c in cells], "ran": ran, "failed": failed,
            "skipped": [c.id for c in cells if c.id in done], "files": files, "fp32": manifest["fp32"]}


def execute(cells: list[Cell], setup: Setup, jobs: int, executor: str, ray_address: str | None) -> Iterable[dict]:
    """Yield each cell's row as it finishes: in process, in `jobs` local processes, or as Ray tasks."""
    if not cells:
        return
    if executor == "ray":
        yield from _execute_ray(cells, setup, ray_address)
    elif jobs == 1:
        for cell in cells:
            yield run_cell(cell, setup)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: fresh interpreters, no forked ONNX Runtime thread pools
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_cell, cell, setup) for cell in cells]
            try:
                for future in as_completed(futures):
                    yield future.result()
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise


def _import_ray():
    try:
        import ray  # optional extra: only --executor ray needs it
    except ImportError:
        raise BadInput("--executor ray needs Ray, which is not installed: pip install 'bert2onnxq[ray]'") from None
    return ray


def _execute_ray(cells: list[Cell], setup: Setup, address: str | None) -> Iterable[dict]:
    """One Ray task per cell. Workers read the FP32 export and data and write the cell's model under
    the results folder, so on a multi-node cluster those paths must be on a shared filesystem; the
    rows come back to the driver, which writes the cell files exactly as the local executor does."""
    ray = _import_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except Exception as exc:
            raise BadInput(f"cannot connect to Ray ({str(exc).splitlines()[0][:200]}): check --ray-address") from None
    task = ray.remote(num_cpus=max(1, setup.threads))(run_cell)
    pending = {task.remote(cell, setup): cell for cell in cells}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            cell = pending.pop(ref)
            try:
                yield ray.get(ref)
            except Exception as exc:  # a lost worker: the cell is reported failed, a re-run retries it
                yield {"version": CELL_VERSION, "id": cell.id, "method": cell.method, "variant": cell.variant,
                       "bits": cell.bits, "options": cell.options, "status": "error",
                       "error": f"Ray task failed: {str(exc).splitlines()[0][:300]}"}
