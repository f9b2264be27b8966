"""Validate an ONNX model on a GLUE task or SQuAD v1.1, optionally side by side with an FP32 reference."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import BadInput
from .onnx_io import load_onnx
from .runtime import make_runner
from .tasks import get_task

@dataclass
class Protocol:
    """Evaluation settings that change the numbers; recorded in every result."""

    max_length: int | None = None  # None: the task's default (128 GLUE, 384 SQuAD)
    doc_stride: int = 128
    n_best: int = 20
    max_answer_length: int = 30
    batch_size: int = 32
    limit: int | None = None


def model_metadata(path: Path) -> dict:
    """The bert2onnxq metadata of an ONNX file (without loading its weights)."""
    model = load_onnx(path, load_external_data=False)
    return {p.key.removeprefix("bert2onnxq."): p.value for p in model.metadata_props if p.key.startswith("bert2onnxq.")}


def load_tokenizer(model_path: Path, meta: dict, tokenizer_dir: Path | None = None):
    from transformers import AutoTokenizer

    folder = Path(tokenizer_dir) if tokenizer_dir else Path(model_path).parent / meta.get("tokenizer", ".")
    if not (folder / "tokenizer.json").is_file() and not (folder / "vocab.txt").is_file():
        raise BadInput(f"no tokenizer files in '{folder}': pass --tokenizer DIR (the model folder it was exported from)")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot load the tokenizer in '{folder}': {str(exc).splitlines()[0]}") from None


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
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> dict:
    """Score `model_path` on `task_name` with the official metric; with `reference`, both models.

    `progress(label, total)` returns a per-batch callback (the CLI passes a rich progress bar).
    """
    protocol = protocol or Protocol()
    task = get_task(task_name)
    meta = model_metadata(Path(model_path))
    _check_head(task, meta, model_path)
    if reference is not None:
        _check_head(task, model_metadata(Path(reference)), reference)
    tokenizer = load_tokenizer(Path(model_path), meta, tokenizer_dir)
    examples = task.load_examples(data_dir=data_dir, data_file=data_file, split="dev", limit=protocol.limit)
    if not examples:
        raise BadInput(f"no {task.name} examples were loaded: check --data-dir / --data-file and --limit")
    max_length = protocol.max_length or task.default_max_length
    encoded = task.encode(examples, tokenizer, max_length=max_length, doc_stride=protocol.doc_stride)

    def score(path: Path, label: str) -> tuple[dict, dict, list, dict]:
        runner = make_runner(Path(path), device, threads, session_config)
        tick = progress(label, len(encoded.features)) if progress else None
        start = time.perf_counter()
        outputs = runner.run_features(encoded.features, protocol.batch_size, tokenizer.pad_token_id or 0, tick)
        seconds = time.perf_counter() - start
        predictions = task.predict(encoded, outputs, n_best=protocol.n_best, max_answer_length=protocol.max_answer_length)
        metrics = task.metrics(examples, predictions)
        info = {"path": str(path), "metrics": metrics, "runtime": runner.describe(), "seconds": round(seconds, 2)}
        return info, outputs, predictions, metrics

    result = {
        "task": task.name,
        "examples": len(examples),
        "features": len(encoded.features),
        "protocol": {**protocol.__dict__, "max_length": max_length, "padding": "per batch, length-sorted"},
        "primary_metric": task.primary_metric,
    }
    info, outputs, predictions, metrics = score(Path(model_path), Path(model_path).name)
    result["model"] = info
    if reference is not None:
        ref_info, ref_outputs, ref_predictions, ref_metrics = score(Path(reference), Path(reference).name)
        result["reference"] = ref_info
        result["comparison"] = {
            "drop": {k: ref_metrics[k] - metrics[k] for k in metrics if k in ref_metrics},
            "agreement": agreement(predictions, ref_predictions, task.head),
            **output_differences(outputs, ref_outputs),
        }
    return result


def _check_head(task, meta: dict, path: Path) -> None:
    head = meta.get("head")
    if head is None:
        return  # not exported by us: let the run tell
    if head != task.head:
        raise BadInput(f"'{path}' has a {head} head but task '{task.name}' needs {task.head}: pick a matching --task")
    labels = json.loads(meta.get("labels") or "null")
    if task.head == "classification" and labels is not None and len(labels) != task.num_labels:
        raise BadInput(f"'{path}' predicts {len(labels)} labels but task '{task.name}' has {task.num_labels}: pick a matching --task")


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
