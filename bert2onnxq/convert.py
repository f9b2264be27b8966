"""convert = (export) + analyse + decide + quantize + apply + save: the stages, in the order the data flows.

    analyse   methods.REGISTRY[m].analyse (Q-BERT: the Hessian)        bert2onnxq/analyse/
    decide    methods.REGISTRY[m].decide  -> QuantPlan (or --plan)     bert2onnxq/methods/
    analyse   activation statistics the plan asks for (static ranges, OCS activation splits, GPTQ's X^T X)
    quantize  integers on the plan's grid                              bert2onnxq/quantize/
    apply     graph passes                                             bert2onnxq/graph/
    save      atomically, with the plan in the metadata
"""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx_ir as ir

from .analyse.activations import fill_activation_plan, input_moments
from .errors import BadInput
from .graph.apply import apply_plan, apply_splits_fp32
from .graph.locate import check_quantizable
from .methods import ConvertOptions, get_method
from .numerics import BIT_PACKED
from .onnx_io import (
    atomic_output,
    check_writable_file,
    load_ir,
    save_onnx,
    write_atomic,
)
from .plan import QuantPlan, check_kernels, check_plan_fits
from .quantize import (
    quantize_plan,
    quantize_tables,
    quantize_weights,
    runtime_weight,
    split_weights_fp32,
)


def decide(model: ir.Model, options: ConvertOptions, *, source: str = "", progress=None) -> QuantPlan:
    """Analyse (if the method needs it) and decide the plan for `model`, exported from `source`."""
    options.check()
    method = get_method(options.method)
    sites = check_quantizable(model)
    analysis = method.analyse(model, source, sites, options, progress) if method.analyse else None
    plan = method.decide(model, sites, options, analysis)
    for t in plan.weights:  # after the method: Q-BERT and mixed plans decide each tensor's bits
        t.storage = "bits" if options.pack_bits and t.bits in BIT_PACKED else ""
    return plan


def quantize_and_apply(model: ir.Model, plan: QuantPlan, moments: dict | None = None, progress=None,
                       kept: dict | None = None) -> ir.Model:
    """The integers of `plan` (GPTQ rounding: on the input `moments`; `kept` {weight: grid}: nearest on
    those grids), written into `model` in place."""
    check_kernels(plan)
    weights, tables = quantize_plan(model, plan, moments, progress, kept)
    return apply_plan(model, plan, weights, tables)


def quantize_sequential(model: ir.Model, plan: QuantPlan, fp32_path: Path, calibrate, progress=None) -> ir.Model:
    """Sequential GPTQ (gptq_sequential), written into `model` in place."""
    check_kernels(plan)
    return apply_plan(model, plan, gptq_sequential(model, plan, fp32_path, calibrate, progress), quantize_tables(model, plan))


def gptq_integers(model: ir.Model, plan: QuantPlan, fp32_path: Path, calibrate, progress=None) -> dict:
    """{weight: QuantizedTensor} GPTQ gives the plan's weights (sequentially when the plan says so):
    where `--finetune` starts from on a GPTQ plan (each with its latent: QuantizedTensor.latent)."""
    if plan.rounding.get("sequential"):
        weights = gptq_sequential(model, plan, fp32_path, calibrate, progress, keep_latent=True)
    else:
        weights = quantize_weights(model, plan, plan.weights, input_moments(model, plan, fp32_path, calibrate, progress),
                                   keep_latent=True)
    return {qt.name: qt for qt in weights}


def gptq_sequential(model: ir.Model, plan: QuantPlan, fp32_path: Path, calibrate, progress=None,
                    keep_latent: bool = False) -> list:
    """GPTQ layer by layer, in encoder order: each layer's inputs are measured on the FP32 model whose
    earlier layers already hold their rounded weights, so a layer absorbs the error of those before it."""
    rounded, done = {}, {}
    layers = sorted({t.layer for t in plan.weights}, key=lambda layer: (layer is None, layer or 0))
    tick = progress("GPTQ rounding, layer by layer", len(layers)) if progress else None
    for layer in layers:
        group = [t for t in plan.weights if t.layer == layer]
        moments = input_moments(model, plan, fp32_path, calibrate, only=group, weights=dict(done))
        for t, qt in zip(group, quantize_weights(model, plan, group, moments, keep_latent=keep_latent)):
            rounded[t.name] = qt
            done[t.name] = runtime_weight(plan, t, qt)
        if tick:
            tick(1)
    return [rounded[t.name] for t in plan.weights]


def split_fp32(model: ir.Model, plan: QuantPlan) -> ir.Model:
    """Only OCS channel splitting (weights and activations), in FP32: must equal the FP32 model."""
    splits, expanded = split_weights_fp32(model, plan)
    return apply_splits_fp32(model, plan, splits, expanded)


def convert(
    source: str,
    output: Path,
    options: ConvertOptions | None = None,
    *,
    plan: QuantPlan | None = None,
    plan_out: Path | None = None,
    calibrate=None,
    progress=None,
    card=None,
    save_dir_config: str | None = None,
    finetune=None,
    log=None,
) -> dict:
    """Convert an FP32 ONNX (or an HF model, exported first) into a quantized ONNX at `output`.

    `calibrate(fp32_path, activation_names, samples=None, moments=False) -> {name: ChannelObserver}`
    (analyse.activations) observes activations on calibration data, for static ranges, activation
    OCS and GPTQ's input moments;
    `progress(label, total) -> advance(n)` shows long analyses (Q-BERT's Hessian);
    `card(model_path, summary) -> str` writes the model card `<stem>.md` (moved into place with the model);
    `save_dir_config`: the config.json text of an Optimum folder;
    `finetune`: a quantize.finetune.FinetuneJob: train the source model through the plan's grid first
    (`log(line)` reports its progress).
    """
    output = Path(output)
    if output.suffix != ".onnx":
        raise BadInput(f"output '{output}' must end in .onnx")
    if output.is_dir():
        raise BadInput(f"output '{output}' is a folder: name the .onnx file to write inside it, e.g. {output / 'model.onnx'}")
    if plan_out is not None:
        check_writable_file(Path(plan_out), "--plan-out")
    with atomic_output(output) as tmp:
        fp32_path = _fp32_source(source, tmp)
        model = load_ir(fp32_path)
        if plan is None:
            plan = decide(model, options or ConvertOptions(), source=source, progress=progress)
        else:
            check_quantizable(model)
        check_plan_fits(plan, {name: tuple(v.shape.numpy()) for name, v in model.graph.initializers.items()})
        check_kernels(plan)
        kept = {}
        if finetune is not None:
            from .quantize.finetune import run_finetune

            def gptq_start() -> dict:  # a GPTQ plan trains from GPTQ's integers, on its grid, kept
                start = gptq_integers(model, plan, fp32_path, calibrate, progress)
                kept.update({name: qt.params for name, qt in start.items()})
                return start

            gptq = plan.rounding.get("method") == "gptq"
            plan.finetune = run_finetune(model, plan, fp32_path, source, finetune, log, progress, gptq_start if gptq else None)
        elif plan.finetune:
            raise BadInput("the plan was fine-tuned (its weights were trained through its grid): add --finetune (and "
                           "--task) to fine-tune again, or decide a new plan")
        fill_activation_plan(model, plan, fp32_path, calibrate)
        planned = {t.name for t in plan.weights + plan.embeddings}
        fp32_rest = sum(v.const_value.nbytes for n, v in model.graph.initializers.items() if n not in planned)
        if kept:
            quantize_and_apply(model, plan, progress=progress, kept=kept)
        elif plan.rounding.get("sequential"):
            quantize_sequential(model, plan, fp32_path, calibrate, progress)
        else:
            quantize_and_apply(model, plan, input_moments(model, plan, fp32_path, calibrate, progress), progress)
        save_onnx(ir.to_proto(model), tmp / output.name)
        shutil.rmtree(tmp / "fp32", ignore_errors=True)  # the intermediate export, if we made one
        if plan_out is not None:  # beside the model: moved into place with it by atomic_output
            beside = Path(plan_out).parent.resolve() == output.parent.resolve()
            write_atomic(tmp / Path(plan_out).name if beside else Path(plan_out), plan.to_json())
        size = (tmp / output.name).stat().st_size
        ideal = plan.ideal_bytes() + fp32_rest
        container_ideal = plan.ideal_bytes(container=True) + fp32_rest
        summary = {"output": str(output), "plan": plan, "bytes": size, "ideal_bytes": ideal, "size_vs_ideal": size / ideal,
                   "container_ideal_bytes": container_ideal, "size_vs_container_ideal": size / container_ideal}
        if save_dir_config is not None:  # an Optimum folder: the model's config.json beside it
            (tmp / "config.json").write_text(save_dir_config)
        if card is not None:  # written with the model, so a failing card never costs the old output
            (tmp / output.with_suffix(".md").name).write_text(card(tmp / output.name, summary))
            summary["card"] = str(output.with_suffix(".md"))
    return summary


def save_dir_config(source: str) -> str:
    """The config.json an Optimum folder needs: the source folder's, the one beside an .onnx, or the
    one of the Hugging Face model it was exported from."""
    from .onnx_io import model_metadata

    path = Path(source)
    candidates = [path / "config.json"] if path.is_dir() else []
    if path.suffix == ".onnx" and path.is_file():
        candidates.append(path.parent / "config.json")
        origin = model_metadata(path).get("source_model")
        if origin:
            candidates.append(Path(origin) / "config.json")
    for c in candidates:
        if c.is_file():
            return c.read_text()
    if not path.exists() and not source.endswith(".onnx"):  # a hub id: exported on the fly, its config too
        from transformers import AutoConfig

        from .hub import hub_reachable

        try:
            return AutoConfig.from_pretrained(source, local_files_only=not hub_reachable()).to_json_string()
        except (OSError, ValueError):
            pass  # the one-line error below
    raise BadInput(f"--save-dir needs the model's config.json, which is not beside '{source}' nor in the model it was "
                   "exported from: convert from the Hugging Face folder or from an 'export --save-dir' folder")


def _fp32_source(source: str, tmp: Path) -> Path:
    """An FP32 .onnx path: the given file, or a fresh export of an HF model into `tmp`."""
    path = Path(source)
    if path.is_dir() and (path / "model.onnx").is_file():  # export --save-dir's folder (or one of ours)
        path = path / "model.onnx"
    if path.suffix == ".onnx":
        if not path.is_file():
            raise BadInput(f"'{source}' does not exist: pass an FP32 .onnx or a Hugging Face model folder")
        tokenizer = path.parent / "tokenizer.json"
        if tokenizer.is_file():  # keep the tokenizer beside the output so validate finds it
            for f in path.parent.iterdir():
                if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "vocab.txt"):
                    (tmp / f.name).write_bytes(f.read_bytes())
        return path
    from .export import export

    export(source, tmp / "fp32" / "model.onnx")
    for f in (tmp / "fp32").iterdir():
        if f.suffix not in (".onnx", ".data"):
            f.rename(tmp / f.name)
    return tmp / "fp32" / "model.onnx"
