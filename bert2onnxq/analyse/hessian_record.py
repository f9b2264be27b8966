"""The Q-BERT Hessian record of an FP32 export: the top Hessian eigenvalue of each encoder layer on
train batches of the task, computed on the Hugging Face model the ONNX was exported from.

The record (per layer: eigenvalues, mean, std, Omega; the settings and time) is what a Q-BERT plan
stores in `analysis["hessian"]`, what `--hessian-from` and sweeps reuse, and what decides the bits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from ..errors import BadInput
from ..graph.locate import WeightSite, check_quantizable
from ..onnx_io import load_ir, weight_array


@dataclass(frozen=True)
class HessianSettings:
    task: str | None = None  # whose train split feeds the Hessian
    data_dir: Path | None = None  # GLUE folder
    calib_file: Path | None = None  # SQuAD JSON or GLUE train TSV
    hf_model: str | None = None  # the PyTorch model; default: the ONNX's bert2onnxq.source_model
    batches: int = 10
    batch_size: int = 8
    max_iter: int = 50
    tol: float = 1e-3
    seed: int = 0
    threads: int | None = None  # torch threads (None: torch's default, the machine's cores)


def hessian_record(model: ir.Model, source: str, sites: list[WeightSite], settings: HessianSettings,
                   num_layers: int, progress=None) -> dict:
    """Per layer the top eigenvalue of each batch, mean, std, Omega; the settings and the time."""
    from . import hessian  # torch: only when a Hessian is computed

    hf = hf_source(model, source, settings.hf_model)
    loaded = load_matching_hf_model(hf, model, sites)
    start = time.perf_counter()
    sensitivities, batches = _hessian(loaded, settings, num_layers, progress)
    seconds = time.perf_counter() - start
    return {
        "model": hf, "task": settings.task, "data": str(settings.calib_file or settings.data_dir or "hub"),
        "batches": len(batches), "batch_size": settings.batch_size,
        "tokens": int(sum(int(b["attention_mask"].sum()) for b in batches)),
        "solver": hessian.SOLVER, "unpadded": hessian.unpadded_by_default(batches),
        "max_iter": settings.max_iter, "tol": settings.tol, "seed": settings.seed, "threads": _threads(settings.threads),
        "seconds": round(seconds, 2),
        "weights": "query, key, value, attention output, intermediate, output Linear weights of each layer",
        "layers": [{"layer": s.layer, "omega": s.omega, "mean": s.mean, "std": s.std, "eigenvalues": s.eigenvalues,
                    "iterations": s.iterations, "converged": s.converged, "seconds": round(s.seconds, 2)}
                   for s in (sensitivities[i] for i in range(num_layers))],
    }


def export_hessian_record(fp32_path: Path, settings: HessianSettings, progress=None) -> dict:
    """The Hessian record of the HF model behind an FP32 export (what sweeps compute once)."""
    model = load_ir(fp32_path)
    sites = check_quantizable(model)
    return hessian_record(model, str(fp32_path), sites, settings, max(s.layer for s in sites) + 1, progress)


def recorded(record: dict, layers: list[int]) -> dict:
    """A plan's recorded Hessian, checked to cover `layers`."""
    try:
        have = {entry["layer"] for entry in record["layers"] if isinstance(entry["omega"], (int, float))}
    except (KeyError, TypeError):
        raise BadInput("--hessian-from holds no Q-BERT Hessian record: pass a plan written by "
                       "'convert --method qbert --plan-out'") from None
    missing = sorted(set(layers) - have)
    if missing:
        raise BadInput(f"the recorded Hessian has no layer(s) {missing}: it was made for another model")
    return record


def hf_source(model: ir.Model, source: str, override: str | None) -> str:
    """The PyTorch model behind the ONNX: --hf-model, the HF folder given to convert, or the export's metadata."""
    if override:
        return str(override)
    if Path(source).suffix != ".onnx":
        return source
    recorded_source = model.metadata_props.get("bert2onnxq.source_model")
    if not recorded_source:
        raise BadInput("the ONNX file does not record its source model (bert2onnxq.source_model): "
                       "pass --hf-model DIR, the Hugging Face folder it was exported from")
    return recorded_source


def load_matching_hf_model(source: str, model: ir.Model, sites: list[WeightSite]):
    """export.load_hf_model, with a one-line hint to --hf-model, and a check that its weights are the ONNX's."""
    from ..export import load_hf_model

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


def _hessian(loaded, settings: HessianSettings, num_layers: int, progress):
    import torch

    from . import hessian

    batches = hessian.calibration_batches(loaded.model, settings.task, loaded.tokenizer, num_batches=settings.batches,
                                          batch_size=settings.batch_size, data_dir=settings.data_dir,
                                          data_file=settings.calib_file, seed=settings.seed)
    before = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        sens = hessian.layer_sensitivities(loaded.model, batches, num_layers, max_iter=settings.max_iter,
                                           tol=settings.tol, seed=settings.seed, progress=progress)
    finally:
        torch.set_num_threads(before)
    return {s.layer: s for s in sens}, batches
