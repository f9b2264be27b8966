"""What the benchmark scripts share: the shared models and data, FP32 exports, validation with the
FP32 reference computed once, the kernels ONNX Runtime runs, and the environment of a run."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared"
MODELS = {  # model folder -> (task, data kind)
    "minilm-l6-sst2": "sst2",
    "minilm-l6-mrpc": "mrpc",
    "minilm-l6-squad": "squad",
}
SQUAD_FILE = "data/squad/dev-v1.1-heldout12.json"
SQUAD_TRAIN = "data/squad/dev-v1.1-train36.json"  # calibration and fine-tuning: the other 36 articles
CALIB_SAMPLES = 128  # convert's default --calib-samples
METRIC_LABEL = {"accuracy": "acc", "f1": "F1", "exact_match": "EM"}
GROUP_BITS = (4, 3, 2)
NBITS_BITS = (4, 2)
GROUP_SIZE = 32
THREADS = 2

def fp32_export(source: Path, work: Path) -> tuple[Path, dict]:
    """The FP32 export of `source` under `work`, reused when it is already there."""
    from bert2onnxq.export import export

    path = work / "fp32" / "model.onnx"
    if path.is_file() and (path.parent / "tokenizer.json").is_file():
        return path, {"reused": True, "seconds": 0.0}
    start = time.perf_counter()
    summary = export(str(source), path)
    return path, {"reused": False, "seconds": round(time.perf_counter() - start, 2),
                  "max_abs_diff_vs_torch": summary["max_abs_diff_vs_torch"]}


def copy_tokenizer(fp32: Path, folder: Path) -> None:
    for f in fp32.parent.iterdir():
        if f.is_file() and not f.name.startswith("model.onnx"):
            shutil.copy2(f, folder / f.name)


def copy_metadata(fp32: Path, target: Path) -> bool:
    """Give `target` the bert2onnxq.* metadata of `fp32` (ORT's quantizers may drop metadata_props)."""
    import onnx

    src = onnx.load(str(fp32), load_external_data=False)
    model = onnx.load(str(target))
    have = {p.key for p in model.metadata_props}
    missing = [p for p in src.metadata_props if p.key.startswith("bert2onnxq.") and p.key not in have]
    if not missing:
        return False
    for p in missing:
        model.metadata_props.add(key=p.key, value=p.value)
    onnx.save(model, str(target))
    return True


def attention_matmuls(fp32: Path) -> int:
    """MatMuls of the FP32 graph without a constant weight (Q·K^T and P·V): never quantized."""
    import onnx

    model = onnx.load(str(fp32), load_external_data=False)
    constants = {i.name for i in model.graph.initializer}
    return sum(1 for n in model.graph.node if n.op_type == "MatMul" and not any(i in constants for i in n.input))


def linear_kernels(path: Path, attention: int, config: dict | None = None) -> dict:
    """What ONNX Runtime (ORT_ENABLE_ALL, CPU) runs for the linear layers after its graph fusions."""
    import tempfile
    from collections import Counter

    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(options.optimized_model_filepath)
    ops = Counter(n.op_type for n in model.graph.node)
    levels = sorted({a.i for n in model.graph.node if n.op_type == "MatMulNBits"
                     for a in n.attribute if a.name == "accuracy_level"})
    info = {"int8": ops["MatMulIntegerToFloat"] + ops["DynamicQuantizeMatMul"] + ops["MatMulInteger"]
                    + ops["QLinearMatMul"],
            "nbits": ops["MatMulNBits"], "nbits_accuracy_levels": levels,
            "fp32": ops["MatMul"] + ops["FusedMatMul"] - attention,
            "dequantize_linear": ops["DequantizeLinear"], "gemm": ops["Gemm"]}
    parts = []
    if info["int8"]:
        parts.append(f"{info['int8']} int8")
    if info["nbits"]:
        parts.append(f"{info['nbits']} NBits L{'/'.join(map(str, levels)) or '0'}")
    if info["fp32"]:
        parts.append(f"{info['fp32']} fp32" + (" (DQ)" if info["dequantize_linear"] else ""))
    info["label"] = ", ".join(parts) or "-"
    return info


class _Replay:
    """Stands in for the FP32 Runner: returns the outputs it already produced for these features."""

    def __init__(self, runner, outputs, n_features):
        self._runner, self._outputs, self._n = runner, outputs, n_features

    def describe(self):
        return self._runner.describe()

    def run_features(self, features, batch_size=32, pad_id=0, on_batch=None):
        if len(features) != self._n:
            raise RuntimeError("reference cache: feature count changed")
        return self._outputs


@contextmanager
def reference_cache(fp32: Path, enabled: bool = True):
    """Patch validate's make_runner so that the FP32 model runs once per feature set."""
    import bert2onnxq.validate as validate_module

    if not enabled:
        yield
        return
    real = validate_module.make_runner
    target = Path(fp32).resolve()
    store: dict = {}

    def make_runner(model_path, device="cpu", threads=0, config=None):
        runner = real(model_path, device, threads, config)
        if Path(model_path).resolve() != target:
            return runner
        key = (device, threads, tuple(sorted((config or {}).items())))

        class Recording:
            def describe(self):
                return runner.describe()

            def run_features(self, features, batch_size=32, pad_id=0, on_batch=None):
                k = key + (len(features), batch_size)
                if k in store:
                    return _Replay(runner, store[k], len(features)).run_features(features)
                outputs = runner.run_features(features, batch_size, pad_id, on_batch)
                store[k] = outputs
                return outputs

        return Recording()

    validate_module.make_runner = make_runner
    try:
        yield
    finally:
        validate_module.make_runner = real


def describe_task(entry: dict, result: dict) -> str:
    """Record the task's metrics and protocol from the model's first validation; its primary metric."""
    primary = result["primary_metric"]
    others = [k for k in result["model"]["metrics"] if k != primary]
    entry.update(primary_metric=primary, second_metric=others[0] if others else None, examples=result["examples"],
                 features=result["features"], protocol=result["protocol"], runtime=result["model"]["runtime"])
    return primary


def run_validate(path: Path, task: str, fp32: Path | None, data: dict, limit: int | None,
                 session_config: dict | None = None) -> tuple[dict, float]:
    from bert2onnxq.validate import Protocol, validate

    start = time.perf_counter()
    result = validate(path, task, reference=fp32, threads=THREADS, session_config=session_config or None,
                      protocol=Protocol(limit=limit, batch_size=32), **data)  # the tables: batch 32
    return result, round(time.perf_counter() - start, 2)


def environment() -> dict:
    import subprocess

    import onnx
    import onnxruntime

    import bert2onnxq

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "git_commit": git("rev-parse", "--short", "HEAD"),
            "package_uncommitted_changes": bool(git("status", "--porcelain", "--", "bert2onnxq")),
            "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs".replace("  ", " "),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
            "bert2onnxq": getattr(bert2onnxq, "__version__", "?")}


def model_list(ctx, param, value):
    """--models: comma-separated shared model folders (click callback)."""
    import click

    names = [x.strip() for x in value.split(",") if x.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise click.BadParameter(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    return names


def train_data(shared: Path, task: str) -> dict:
    """Where a task's train examples are: {data_dir} for GLUE, {data_file} for SQuAD (the 36 train articles)."""
    return {"data_file": shared / SQUAD_TRAIN} if task == "squad" else {"data_dir": shared / "data" / "glue"}


def calibrator(task: str, train: dict):
    """convert's `calibrate` (GPTQ's inputs, static ranges) on the task's `train` data (train_data)."""
    from bert2onnxq.analyse.activations import task_calibrator

    return task_calibrator(task, default_samples=CALIB_SAMPLES, **train)
