"""Validate an ONNX model on a GLUE task or SQuAD v1.1, optionally side by side with an FP32 reference."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import BadInput
from .onnx_io import check_writable_file, load_onnx, load_tokenizer, model_metadata, write_atomic
from .runtime import make_runner
from .tasks import get_task
from .tasks.base import calibration_order


@dataclass
class Protocol:
    """Evaluation settings that change the numbers; recorded in every result."""

    max_length: int | None = None  # None: the task's default (128 GLUE, 384 SQuAD)
    doc_stride: int = 128
    n_best: int = 20
    max_answer_length: int = 30
    batch_size: int | None = None  # None: batch_rule(file) -- 1 where activation ranges depend on the batch
    limit: int | None = None


@dataclass(frozen=True)
class Subset:
    """Which examples of a split are scored (recorded in every result).

    The default is the whole dev split. Accuracy-targeted search scores candidates on data the
    final report does not use: `holdout`, the last `size` train examples of the calibration order
    (calibration draws from its front), or one half of dev (`half` 0/1: even/odd positions).
    """

    split: str = "dev"
    skip: int = 0
    size: int | None = None  # a seeded random sample of this many (after skip); None: all
    seed: int = 0
    half: int | None = None
    holdout: bool = False

    def select(self, examples: list) -> list:
        if self.holdout:
            chosen = [examples[i] for i in reversed(calibration_order(len(examples)))]
            return chosen[:self.size]
        chosen = list(examples[self.skip:])
        if self.half is not None:
            chosen = chosen[self.half::2]
        if self.size is not None and self.size < len(chosen):
            picks = sorted(random.Random(self.seed).sample(range(len(chosen)), self.size))
            chosen = [chosen[i] for i in picks]
        return chosen

    def describe(self) -> str:
        parts = [f"{self.split} split"]
        if self.holdout:
            return f"{self.split} split, the last {self.size} of the calibration order (never calibrated on)"
        if self.skip:
            parts.append(f"after its first {self.skip} examples")
        if self.half is not None:
            parts.append(f"{'even' if self.half == 0 else 'odd'}-position half")
        if self.size is not None:
            parts.append(f"random sample of {self.size} (seed {self.seed})")
        return ", ".join(parts)


@dataclass
class Scored:
    """One model run over one feature set: what `validate` reports for it, plus the raw outputs."""

    info: dict  # path, metrics, runtime, seconds
    outputs: dict[str, list[np.ndarray]]
    predictions: list
    metrics: dict


class ReferenceCache:
    """Reference (FP32) runs kept across `validate` calls: a sweep scores dozens of files against one
    FP32 export, whose outputs depend only on the file, the features and the runtime settings.

    In memory, and with `directory` also on disk (one .json + .npz per key, written atomically), so
    that worker processes and re-runs share the FP32 run instead of repeating it.
    """

    def __init__(self, directory: Path | None = None):
        self.directory = Path(directory) if directory else None
        self._memory: dict[str, Scored] = {}
        self.hits = 0

    @staticmethod
    def key(path: Path, features: list[dict[str, np.ndarray]], settings: dict) -> str:
        stat = Path(path).stat()
        h = hashlib.sha1(json.dumps([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, settings],
                                    sort_keys=True, default=str).encode())
        for f in features:  # the features themselves, so a changed data file or tokenizer never hits
            for name in sorted(f):
                h.update(name.encode())
                h.update(np.ascontiguousarray(f[name]).tobytes())
        return h.hexdigest()[:20]

    def get(self, key: str) -> Scored | None:
        found = self._memory.get(key)
        if found is None and self.directory is not None and (self.directory / f"{key}.json").is_file():
            meta = json.loads((self.directory / f"{key}.json").read_text())
            with np.load(self.directory / f"{key}.npz") as arrays:
                outputs = {name: _unflatten(arrays[f"{name}.data"], arrays[f"{name}.shapes"]) for name in meta["outputs"]}
            found = self._memory[key] = Scored(meta["info"], outputs, meta["predictions"], meta["metrics"])
        if found is not None:
            self.hits += 1
        return found

    def put(self, key: str, scored: Scored) -> None:
        self._memory[key] = scored
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for name, values in scored.outputs.items():
            arrays[f"{name}.data"] = np.concatenate([np.ravel(v) for v in values]) if values else np.zeros(0)
            arrays[f"{name}.shapes"] = np.array([np.shape(v) for v in values], dtype=np.int64)
        meta = {"info": scored.info, "predictions": scored.predictions, "metrics": scored.metrics,
                "outputs": sorted(scored.outputs)}
        _write_atomic(self.directory / f"{key}.npz", lambda f: np.savez(f, **arrays))
        # the .json last: a reader only trusts a key whose .json exists
        _write_atomic(self.directory / f"{key}.json", lambda f: f.write(json.dumps(meta).encode()))


def _unflatten(data: np.ndarray, shapes: np.ndarray) -> list[np.ndarray]:
    values, start = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        values.append(data[start:start + n].reshape(tuple(shape)))
        start += n
    return values


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def validate(
    model_path: Path,
    task_name: str,
    *,
    reference: Path | None = None,
    data_dir: Path | None = None,
    data_file: Path | None = None,
    tokenizer_dir: Path | None = None,
    device: str = "cpu",
    threads: int = 0,
    session_config: dict[str, str] | None = None,
    protocol: Protocol | None = None,
    subset: Subset | None = None,
    reference_cache: ReferenceCache | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
    force: bool = False,
    predictions_out: Path | None = None,
) -> dict:
    """Score `model_path` on `task_name` with the official metric; with `reference`, both models.

    `subset` picks the examples (default: the whole dev split); `reference_cache` reuses the
    reference's run when the same file was already scored on the same features and settings.
    `progress(label, total)` returns a per-batch callback (the CLI passes a rich progress bar).
    Class ids are mapped to the task's by the file's label names; names that are not the task's are
    refused unless `force` (then ids are taken by position). `predictions_out`: the model's predictions
    in the task's submission format (written atomically).
    """
    protocol = protocol or Protocol()
    subset = subset or Subset()
    if predictions_out is not None:
        check_writable_file(Path(predictions_out), "--predictions")
    task = get_task(task_name)
    meta = model_metadata(Path(model_path))
    mappings = {str(model_path): _check_head(task, meta, model_path, force)}
    if reference is not None:
        mappings[str(reference)] = _check_head(task, model_metadata(Path(reference)), reference, force)
    tokenizer = load_tokenizer(Path(model_path), meta, tokenizer_dir)
    examples = subset.select(task.load_examples(data_dir=data_dir, data_file=data_file, split=subset.split,
                                                limit=protocol.limit))
    if not examples:
        raise BadInput(f"no {task.name} examples were loaded: check --data-dir / --data-file and --limit")
    max_length = protocol.max_length or task.default_max_length
    encoded = task.encode(examples, tokenizer, max_length=max_length, doc_stride=protocol.doc_stride)

    def score(path: Path, label: str, cache: ReferenceCache | None = None) -> tuple[dict, dict, list, dict]:
        key = None
        batch, rule = (protocol.batch_size, f"batch {protocol.batch_size}, as given") if protocol.batch_size else batch_rule(Path(path))
        if cache is not None:
            settings = {"device": device, "threads": threads, "config": session_config or {},
                        "protocol": {**asdict(protocol), "batch_size": batch}, "task": task.name}
            key = cache.key(Path(path), encoded.features, settings)
            hit = cache.get(key)
            if hit is not None:
                return {**hit.info, "cached": True}, hit.outputs, hit.predictions, hit.metrics
        runner = make_runner(Path(path), device, threads, session_config)
        tick = progress(label, len(encoded.features)) if progress else None
        start = time.perf_counter()
        outputs = runner.run_features(encoded.features, batch, tokenizer.pad_token_id or 0, tick)
        seconds = time.perf_counter() - start
        predictions = task.predict(encoded, outputs, n_best=protocol.n_best, max_answer_length=protocol.max_answer_length)
        mapping = mappings[str(path)][0]
        if mapping and any(i != j for i, j in mapping.items()):  # the model's ids, in the task's order
            predictions = [mapping[p] for p in predictions]
        metrics = task.metrics(examples, predictions)
        info = {"path": str(path), "metrics": metrics, "runtime": runner.describe(), "seconds": round(seconds, 2),
                "batch_size": batch, "batch_rule": rule}
        if cache is not None:
            cache.put(key, Scored(info, outputs, predictions, metrics))
        return info, outputs, predictions, metrics

    result = {
        "task": task.name,
        "examples": len(examples),
        "data": {**asdict(subset), "description": subset.describe()},
        "features": len(encoded.features),
        "protocol": {**protocol.__dict__, "max_length": max_length, "padding": "per batch, length-sorted"},
        "primary_metric": task.primary_metric,
        "labels": mappings[str(model_path)][1],
    }
    # the cache holds reference runs: the model's run is one when it is the reference (or none is given,
    # e.g. a sweep scoring its FP32 export first)
    model_is_reference = reference is None or _same_file(model_path, reference)
    info, outputs, predictions, metrics = score(Path(model_path), Path(model_path).name,
                                                reference_cache if model_is_reference else None)
    result["model"] = info
    if predictions_out is not None:
        write_atomic(Path(predictions_out), task.predictions_text(examples, predictions))
        result["predictions_file"] = str(predictions_out)
    result["protocol"].update(batch_size=info["batch_size"], batch_rule=info["batch_rule"])
    if reference is not None:
        ref_info, ref_outputs, ref_predictions, ref_metrics = score(Path(reference), Path(reference).name, reference_cache)
        result["reference"] = ref_info
        result["comparison"] = {
            "drop": {k: ref_metrics[k] - metrics[k] for k in metrics if k in ref_metrics},
            "agreement": agreement(predictions, ref_predictions, task.head),
            **output_differences(outputs, ref_outputs),
        }
    return result


def batch_rule(path: Path) -> tuple[int, str]:
    """The batch whose numbers a deployment gets: 1 where activations are quantized over the whole
    padded batch (DynamicQuantizeLinear: its range depends on what else is in the batch), else 32
    (per-token or static ranges, FP32: the batch changes nothing beyond float rounding)."""
    model = load_onnx(Path(path), load_external_data=False)
    if any(n.op_type == "DynamicQuantizeLinear" for n in model.graph.node):
        return 1, "batch 1: activation ranges are per batch (DynamicQuantizeLinear), so batch 1 is what a one-request service gets"
    return 32, "batch 32: no activation range depends on the batch"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def check_task(model_path: Path, task_name: str, force: bool = False) -> None:
    """BadInput unless the file's head and labels fit the task (what `validate` checks first)."""
    _check_head(get_task(task_name), model_metadata(Path(model_path)), model_path, force)


def _check_head(task, meta: dict, path: Path, force: bool = False) -> tuple[dict | None, str]:
    """BadInput unless the file's head fits the task; (model id -> task id, how it was matched)."""
    head = meta.get("head")
    if head is None:
        return None, "by position (the file has no bert2onnxq metadata)"
    if head != task.head:
        raise BadInput(f"'{path}' has a {head} head but task '{task.name}' needs {task.head}: pick a matching --task")
    labels = json.loads(meta.get("labels") or "null")
    if task.head != "classification" or labels is None:
        return None, "n/a"
    if len(labels) != task.num_labels:
        raise BadInput(f"'{path}' predicts {len(labels)} labels but task '{task.name}' has {task.num_labels}: pick a matching --task")
    from .tasks.glue import label_mapping

    mapping, how = label_mapping(task, labels)
    if mapping is None:
        if not force:
            raise BadInput(f"'{path}': {how}: pick the task it was trained for, or --force to score its ids by position")
        return None, f"by position, forced ({how})"
    return mapping, how


def agreement(predictions: list, reference: list, head: str) -> float | None:
    """Percent of predictions equal to the reference's (labels, or answer texts for QA)."""
    if head == "regression" or not predictions:
        return None
    return 100.0 * sum(a == b for a, b in zip(predictions, reference)) / len(predictions)


def output_differences(outputs: dict[str, list[np.ndarray]], reference: dict[str, list[np.ndarray]]) -> dict:
    """Max |difference| and relative RMS error of all raw outputs (logits) against the reference."""
    got = np.concatenate([np.ravel(a) for name in sorted(outputs) for a in outputs[name]])
    ref = np.concatenate([np.ravel(a) for name in sorted(reference) for a in reference[name]])
    diff = got.astype(np.float64) - ref
    rms_ref = float(np.sqrt(np.mean(ref.astype(np.float64) ** 2))) or 1.0
    return {"max_logit_diff": float(np.abs(diff).max()), "logit_rel_rms": float(np.sqrt(np.mean(diff**2)) / rms_ref)}
