"""bert2onnxq convert"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

import click
import cloup

from ..methods import COMMON, METHODS, OWN, REGISTRY, check_applicable, convert_options, owners
from ..report import conversion_card
from .app import TASKS, Command, calibrator, err, main, out, progress_bars, quiet_transformers, status
from .finetune_options import finetune_job, finetune_options


def _bit_list(ctx, param, value):
    try:
        return tuple(sorted({int(x) for x in value.split(",") if x.strip()}))
    except ValueError:
        raise click.BadParameter("a comma-separated list of bit widths, e.g. 2,3,4") from None


def _mix(ctx, param, value):
    if value is None:
        return None
    try:
        low, high = (int(x) for x in value.split("/"))
    except ValueError:
        raise click.BadParameter("LOW/HIGH bits, e.g. 2/3") from None
    return low, high


# CLI parameter -> flat convert option (methods.convert_options), where the names differ
FLAT_NAMES = {"aciq_dist": "distribution", "hessian_batches": "batches", "hessian_batch_size": "batch_size",
              "hessian_iters": "max_iter", "hessian_threads": "threads"}
# Q-BERT's Hessian data is also the activation calibration and fine-tuning data; --hf-model is --finetune's too
SHARED_DATA = ("task", "data_dir", "calib_file", "hf_model")


@main.command(cls=Command, show_constraints=False)
@cloup.option_group(
    "Input and output",
    cloup.option("--model", "source", required=True,
                 help="FP32 .onnx from 'export' (or export's --save-dir folder), or an HF model folder / hub id (exported first)."),
    cloup.option("-o", "--output", type=click.Path(path_type=Path), help="Quantized .onnx to write."),
    cloup.option("--save-dir", type=click.Path(path_type=Path),
                 help="Instead of -o: a folder Optimum's ORTModelFor* classes load (model.onnx, config.json, tokenizer, "
                      "model card; the plan with --plan-out)."),
    cloup.option("--plan", "plan_in", type=click.Path(path_type=Path), help="Apply a saved plan (no method options)."),
    cloup.option("--plan-out", type=click.Path(path_type=Path), help="Also write the plan as JSON."),
    cloup.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
)
@cloup.option_group(
    "Method and weight grid (every method)",
    cloup.option("--method", type=click.Choice(list(METHODS)), default="lq", show_default=True,
                 help="lq: min-max linear quantization; aciq: analytical clipping (Banner et al.); "
                      "ocs: outlier channel splitting (Zhao et al.) then LQ, or ACIQ with --clip aciq; "
                      "qbert: Hessian-guided bits per layer on neuron-group ranges (Shen et al.)."),
    cloup.option("--bits", type=int, default=8, show_default=True, help="Weight bits, 2..8 (3 bits use INT4 containers)."),
    cloup.option("--granularity", type=click.Choice(["tensor", "channel", "group", "neuron-group"]),
                 help="One scale per tensor, per output channel, per group of --group-size inputs (blocked), or per "
                      "run of output channels (--groups per matrix, never across heads).  [default: neuron-group for "
                      "qbert, else channel]"),
    cloup.option("--group-size", type=click.IntRange(2), default=128, show_default=True),
    cloup.option("--groups", type=click.IntRange(1), default=128, show_default=True,
                 help="neuron-group: ranges per weight matrix (1 = per tensor; >= outputs = per channel)."),
    cloup.option("--symmetric/--asymmetric", default=None,
                 help="Weight grid: narrow signed grid without zero point, or all 2^bits levels with one.  [default: "
                      "asymmetric for qbert; else symmetric at 5-8 bits, asymmetric at 2-4]"),
    cloup.option("--skip", multiple=True, metavar="PATTERN",
                 help="Keep matching tensors FP32 (glob or substring), e.g. 'layer.5.output'."),
)
@cloup.option_group(
    "ACIQ clipping (aciq; ocs and qbert with --clip aciq)",
    cloup.option("--aciq-dist", type=click.Choice(["laplace", "gauss"]), default="laplace", show_default=True,
                 help="The prior the clip is optimal for."),
    cloup.option("--clip", type=click.Choice(["none", "aciq"]),
                 help="Clipping for --method ocs and qbert.  [default: aciq for qbert, else none]"),
)
@cloup.option_group(
    "OCS (--method ocs)",
    cloup.option("--ocs-ratio", type=float, default=0.02, show_default=True,
                 help="Expand ratio r: ceil(r*K) input channels split per weight (paper's grid 0, 0.01, 0.02, 0.05)."),
    cloup.option("--ocs-grid-aware", is_flag=True, help="Halves w/2 -+ delta/4 so they round to different grid points."),
    cloup.option("--ocs-activations", is_flag=True,
                 help="Also split the outlier channels of each MatMul input (chosen on --task calibration samples)."),
)
@cloup.option_group(
    "Q-BERT (--method qbert)",
    cloup.option("--avg-bits", type=float, default=3.0, show_default=True,
                 help="Average weight bits over the encoder (size-weighted), met exactly when reachable."),
    cloup.option("--bit-choices", default="2,3,4", show_default=True, callback=_bit_list,
                 help="The bit widths a layer may get."),
    cloup.option("--mix", callback=_mix, metavar="LOW/HIGH",
                 help="Q-BERT's fixed mix instead of --avg-bits: the more sensitive half of the layers gets HIGH."),
    cloup.option("--allocation", type=click.Choice(["rank", "hawq"]), default="rank", show_default=True,
                 help="--avg-bits: most bits to the most sensitive layers (rank), or least Omega x ||W - Q(W)||^2 (hawq)."),
    cloup.option("--order", type=click.Choice(["hessian", "reverse"]), default="hessian", show_default=True,
                 help="reverse: the same bits, most to the least sensitive layers (the control experiment)."),
    cloup.option("--hf-model", type=click.Path(path_type=Path),
                 help="The Hugging Face folder the .onnx was exported from (default: its metadata); qbert and --finetune."),
    cloup.option("--hessian-from", type=click.Path(path_type=Path), metavar="PLAN.json",
                 help="Reuse the Hessian recorded in a qbert plan; only the bits are decided again."),
    cloup.option("--hessian-batches", type=click.IntRange(1), default=10, show_default=True,
                 help="Train batches; Omega = |mean| + std of their top eigenvalues."),
    cloup.option("--hessian-batch-size", type=click.IntRange(1), default=8, show_default=True),
    cloup.option("--hessian-iters", type=click.IntRange(1), default=50, show_default=True,
                 help="At most this many Hessian-vector products (Lanczos steps) per layer and batch."),
    cloup.option("--hessian-threads", type=click.IntRange(1), default=None,
                 help="Torch threads for the Hessian (default: torch's, the machine's cores; on a busy machine try 1)."),
    cloup.option("--seed", type=int, default=0, show_default=True, help="Batch sample and start vectors."),
)
@cloup.option_group(
    "Calibration data (static activations, --ocs-activations, Q-BERT's Hessian)",
    cloup.option("--task", type=click.Choice(TASKS), help="Task whose train split is used."),
    cloup.option("--data-dir", type=click.Path(path_type=Path), help="GLUE folder (default $GLUE_DIR)."),
    cloup.option("--calib-file", type=click.Path(path_type=Path), help="Calibration file (SQuAD JSON or GLUE TSV)."),
    cloup.option("--calib-samples", type=click.IntRange(1), default=128, show_default=True,
                 help="Train examples that calibrate, drawn as a seeded shuffle of the whole train split."),
)
@cloup.option_group(
    "Activations, embeddings and kernels",
    cloup.option("--act-bits", type=click.Choice(["8", "none"]), default="8", show_default=True,
                 help="Activations at each quantized MatMul's input."),
    cloup.option("--act-calib", type=click.Choice(["dynamic", "static", "per-token"]), default="dynamic", show_default=True,
                 help="dynamic: per-batch ranges at run time; static: ranges calibrated on the task's train split; "
                      "per-token: a symmetric int8 scale per token at run time (int8 GEMM weights)."),
    cloup.option("--calib-method", type=click.Choice(["minmax", "aciq"]), default="minmax", show_default=True),
    cloup.option("--emb-bits", type=click.Choice(["8", "4", "none"]), default="8", show_default=True,
                 help="Word/position/token-type tables: int8 per row, int4 per row block (ORT GatherBlockQuantized), or FP32."),
    cloup.option("--target", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
                 help="Provider to write for: cpu (int8 GEMM with 8-bit activations, MatMulNBits for group-wise) or cuda "
                      "(weight-only DequantizeLinear -> MatMul that ORT fuses into CUDA MatMulNBits; no DynamicQuantizeLinear, "
                      "no int2 DequantizeLinear on CUDA, so activations stay float and INT2 is widened to INT4 at load)."),
    cloup.option("--pack-bits/--no-pack-bits", default=False, show_default=True,
                 help="Store 3/5/6/7-bit weights that many bits each, not in INT4/INT8: a 15-30% smaller file, but "
                      "ONNX Runtime's unpacking at load peaks at several times the memory (docs/commands.md)."),
    cloup.option("--group-kernel", type=click.Choice(["matmulnbits", "int8"]), default="matmulnbits", show_default=True,
                 help="cpu, group-wise weights: matmulnbits (free float scale per group, ORT MatMulNBits) or int8 (two-level "
                      "scales: float per output channel x integer per group, multiplied out exactly to int8 at session load "
                      "and run on the int8 GEMM)."),
)
@cloup.option_group(
    "Rounding (the quantize stage; every method)",
    cloup.option("--rounding", type=click.Choice(["nearest", "gptq"]), default="nearest", show_default=True,
                 help="nearest: each weight to its nearest grid point; gptq: the integers on the same grid that "
                      "minimise each MatMul's output error on --calib-samples train inputs of --task (GPTQ/OBQ)."),
    cloup.option("--gptq-damp", type=float, default=0.01, show_default=True,
                 help="gptq: added to the diagonal of X^T X, as a fraction of its mean."),
    cloup.option("--gptq-block", type=click.IntRange(1), default=128, show_default=True,
                 help="gptq: input rows per lazy batch update (speed only)."),
    cloup.option("--gptq-act-order/--no-gptq-act-order", default=True, show_default=True,
                 help="gptq: round the most active input channels first."),
    cloup.option("--gptq-inputs", type=click.Choice(["quantized", "fp32"]), default="quantized", show_default=True,
                 help="gptq, weights on the int8 kernels: minimise ||XW - X_q Q|| for the 8-bit dynamic inputs X_q "
                      "they multiply (quantized), or ||X(W - Q)|| for FP32 inputs (fp32)."),
    cloup.option("--gptq-sequential/--no-gptq-sequential", default=False, show_default=True,
                 help="gptq: measure each encoder layer's inputs on the model whose earlier layers are already "
                      "rounded (GPTQ's reference order; one calibration pass per layer)."),
    cloup.option("--gptq-grid", type=click.Choice(["fixed", "search"]), default="search", show_default=True,
                 help="gptq, per weight: round on the method's ranges, and (search) also on the min-max ranges shrunk "
                      "per block to minimise their error weighted by diag(X^T X); the lower output error is kept."),
    cloup.option("--gptq-tokens", type=click.IntRange(0), default=0, show_default=True,
                 help="gptq: calibrate on --calib-samples train examples, and more (same draw) until they hold this "
                      "many tokens (0: 8 per input channel of the widest weight, e.g. 12,288 for MiniLM's 1,536)."),
)
@cloup.option_group(
    "Accuracy-targeted search (--max-drop)",
    cloup.option("--max-drop", type=float, metavar="POINTS",
                 help="Search for the smallest file whose --task metric is within POINTS of FP32 (no --method/--bits)."),
    cloup.option("--data-file", "dev_file", type=click.Path(path_type=Path),
                 help="The dev file the report is scored on (SQuAD JSON or GLUE TSV; default: --data-dir)."),
    cloup.option("--search-methods", default="lq,aciq,ocs", show_default=True, help="Methods to search."),
    cloup.option("--search-bits", default="8,6,4,3,2", show_default=True, help="Weight bit widths to search."),
    cloup.option("--search-granularity", default="channel,group", show_default=True,
                 help="Granularities to search (group uses --group-size)."),
    cloup.option("--search-data", type=click.Choice(["train", "dev-half", "dev"]), default="train", show_default=True,
                 help="Score candidates on train examples never calibrated on (the far end of the calibration draw), "
                      "on half of dev (the report then also shows the other half), or on dev itself (stated as optimistic)."),
    cloup.option("--search-samples", type=click.IntRange(1), default=1000, show_default=True,
                 help="With --search-data train: how many train examples to score on."),
    cloup.option("--search-file", type=click.Path(path_type=Path),
                 help="A labelled file held out from training to search on (GLUE TSV or SQuAD JSON)."),
    cloup.option("--search-rounding", default="nearest", show_default=True,
                 help="Roundings to search (nearest, gptq or nearest,gptq; gptq calibrates on --task train samples)."),
    cloup.option("--mixed/--no-mixed", default=True, show_default=True,
                 help="After the best uniform plan, lower layers one by one (mixed precision)."),
    cloup.option("--latency/--no-latency", default=True, show_default=True, help="Time the result against FP32 for the card."),
)
@finetune_options
def convert(**p):
    """Quantize a BERT's weights (and activations, embeddings) into standard QDQ ONNX.

    \b
    Weights become packed INT8/INT4/INT2 initializers + scales + DequantizeLinear; the plan that
    decided every tensor is stored in the output's metadata (and --plan-out).
    \b
    Examples:
      bert2onnxq convert --model out/fp32/model.onnx --method lq --bits 8 -o out/lq8.onnx
      bert2onnxq convert --model out/fp32/model.onnx --method aciq --bits 3 --granularity group --group-size 32 -o out/aciq3.onnx
      bert2onnxq convert --model models/minilm-l6-sst2-demo --bits 4 --act-calib static --task sst2 --data-dir ../shared/data/glue -o out/q4.onnx
      bert2onnxq convert --model out/fp32/model.onnx --method ocs --bits 3 --ocs-ratio 0.02 --clip aciq -o out/ocs3.onnx
      bert2onnxq convert --model out/fp32/model.onnx --method ocs --bits 4 --ocs-activations --task sst2 --data-dir ../shared/data/glue -o out/ocs4a.onnx
      bert2onnxq convert --model out/fp32/model.onnx --plan plan.json -o out/again.onnx
      bert2onnxq convert --model out/squad-ort --bits 4 --granularity group --save-dir out/squad-q4-ort
      bert2onnxq convert --model out/fp32/model.onnx --bits 4 --granularity group --group-kernel int8 -o out/q4-int8.onnx
      bert2onnxq convert --model out/fp32/model.onnx --bits 4 --granularity group --target cuda -o out/q4-cuda.onnx
      bert2onnxq convert --model out/fp32/model.onnx --max-drop 1 --task sst2 --data-dir ../shared/data/glue -o out/best/model.onnx
    \b
    --max-drop D: validates candidates (methods x bits x granularity, then mixed per-layer bits) on
    the search data and keeps the smallest file within D points of FP32; writes <stem>.plan.json,
    <stem>.search.json (the path it took) and the model card <stem>.md, scored on the full dev set.
    \b
    Q-BERT (Hessian of each layer on train batches of --task, more bits to larger Omega):
      bert2onnxq convert --model out/fp32/model.onnx --method qbert --task sst2 --data-dir ../shared/data/glue --avg-bits 3 -o out/qbert3.onnx
      bert2onnxq convert --model out/fp32/model.onnx --method qbert --mix 2/3 --task sst2 --data-dir ../shared/data/glue --plan-out qb.json -o out/qbert23.onnx
      bert2onnxq convert --model out/squad/model.onnx --method qbert --task squad --calib-file ../shared/data/squad/dev-v1.1-train36.json -o out/qbert-squad.onnx
      bert2onnxq convert --model out/squad/model.onnx --method qbert --allocation hawq --rounding gptq --task squad --calib-file ../shared/data/squad/dev-v1.1-train36.json -o out/qbert-hawq.onnx
    \b
    Fine-tuned through the plan's grid (distilled from FP32 on the task's train split):
      bert2onnxq convert --model out/fp32/model.onnx --method qbert --mix 2/3 --finetune --task sst2 --data-dir ../shared/data/glue -o out/qbert23-ft.onnx
    """
    from ..convert import convert as run_convert
    from ..plan import QuantPlan

    quiet_transformers()
    ctx = click.get_current_context()
    config_json = _output_or_save_dir(p)
    if p["target"] == "cuda" and ctx.get_parameter_source("act_bits").name == "DEFAULT":
        p["act_bits"] = "none"  # CUDA graphs are weight-only unless the user insists (and gets a one-line error)
    job = finetune_job(p)
    if p["max_drop"] is not None:
        return _max_drop(p, flat_from_cli(p, method=None))
    options = convert_options(method=p["method"], **flat_from_cli(p, p["method"]))
    plan = QuantPlan.load(p["plan_in"]) if p["plan_in"] else None
    calibrate = calibrator(p["task"], p["calib_samples"], p["data_dir"], p["calib_file"])
    source, output, plan_out = p["source"], p["output"], p["plan_out"]
    gptq = (plan.rounding if plan else {}).get("method") == "gptq" or (plan is None and options.rounding == "gptq")
    card = partial(conversion_card, source, plan_out, "bert2onnxq convert " + " ".join(sys.argv[2:]))
    if (options.method == "qbert" and plan is None) or gptq or job:  # these show their own progress bars
        with progress_bars(enabled=True) as factory:
            summary = run_convert(source, output, options, plan=plan, plan_out=plan_out, calibrate=calibrate,
                                  progress=factory, card=card, save_dir_config=config_json, finetune=job,
                                  log=lambda line: err.print(line, highlight=False))
    else:
        with status("quantizing ..."):
            summary = run_convert(source, output, options, plan=plan, plan_out=plan_out, calibrate=calibrate, card=card,
                                  save_dir_config=config_json)
    plan = summary.pop("plan")
    summary["plan_summary"] = plan.summary()
    summary["ocs"] = plan.ocs_overhead()
    if plan.analysis:
        summary["analysis"] = plan.analysis
    if plan.finetune:
        summary["finetune"] = plan.finetune
    if p["as_json"]:
        click.echo(json.dumps(summary, indent=2))
        return
    out.print(f"[green]wrote[/] {summary['output']}: {plan.summary()}")
    if "hessian" in plan.analysis:
        _print_qbert(plan.analysis)
    out.print(f"size {summary['bytes'] / 2**20:.2f} MiB = {summary['size_vs_ideal']:.3f}x the ideal "
              f"{summary['ideal_bytes'] / 2**20:.2f} MiB (bits x params / 8 + scales + FP32 rest), "
              f"{summary['size_vs_container_ideal']:.3f}x at container bits")
    out.print(f"model card: {summary['card']}")


def _output_or_save_dir(p: dict) -> str | None:
    """Set p["output"] from -o or --save-dir; the config.json text a --save-dir folder gets."""
    from ..convert import save_dir_config
    from ..errors import BadInput

    if (p["output"] is None) == (p["save_dir"] is None):
        raise BadInput("give exactly one of -o/--output FILE.onnx or --save-dir DIR")
    if p["save_dir"] is None:
        return None
    if p["max_drop"] is not None:
        raise BadInput("--max-drop writes -o FILE.onnx with its plan, search path and card: use -o with it")
    p["output"] = Path(p["save_dir"]) / "model.onnx"
    return save_dir_config(p["source"])


def flat_from_cli(p: dict, method: str | None) -> dict:
    """The flat convert options the command line asks for (methods.convert_options).

    Common options are always passed. A method's own option is passed when it is that method's, and
    refused when the user set it for a method that does not have it (method None: --max-drop, where
    explicitly set method options are passed for the candidates that have them).
    """
    from ..errors import BadInput
    from ..plan import QuantPlan

    ctx = click.get_current_context()
    given = {name for name in p if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    preset = REGISTRY[method].preset or {} if method else {}
    flat = {"act_bits": None if p["act_bits"] == "none" else 8, "emb_bits": None if p["emb_bits"] == "none" else int(p["emb_bits"]),
            "skip": tuple(p["skip"])}
    for key in COMMON:
        if key not in flat and key in p:
            flat[key] = p[key] if p[key] is not None else preset.get(key, COMMON[key])
    if p["granularity"] is None:
        flat["granularity"] = preset.get("granularity", "channel")
    if p["symmetric"] is None:
        flat["symmetric"] = preset.get("symmetric")
    values = {FLAT_NAMES.get(name, name): value for name, value in p.items()}
    values["clip"] = p["clip"] if p["clip"] is not None else preset.get("clip", "none")
    if p.get("hessian_from"):
        values["hessian"] = QuantPlan.load(p["hessian_from"]).analysis.get("hessian", {})
    given = {FLAT_NAMES.get(name, name) for name in given} | ({"hessian"} if p.get("hessian_from") else set())
    for name, own in OWN.items():
        for key in own:
            if method == name:
                if key in values:
                    flat[key] = values[key]
            elif key in given and key not in SHARED_DATA:
                if method is None:
                    flat[key] = values[key]
                elif key not in OWN[method]:
                    option = next((o for o, k in FLAT_NAMES.items() if k == key), key).replace("_", "-")
                    option = "hessian-from" if key == "hessian" else option
                    raise BadInput(f"--{option} applies to --method {' or '.join(owners(key))}, not {method}: "
                                   "drop it or choose that method")
    if method is not None:
        check_applicable(flat, given)
    return flat


def _max_drop(p: dict, flat: dict):
    from ..errors import BadInput
    from ..search import convert_max_drop
    from ..sweep import Grid, canonical
    from .sweep import _csv, _ints

    ctx = click.get_current_context()
    for name in ("method", "bits", "granularity", "rounding"):
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise BadInput(f"--max-drop searches over methods, bits, granularity and rounding itself: use "
                           f"--search-methods, --search-bits, --search-granularity, --search-rounding instead of --{name}")
    if p["plan_in"]:
        raise BadInput("--max-drop chooses the plan: drop --plan (or drop --max-drop to re-apply a plan)")
    if not p["task"]:
        raise BadInput("--max-drop needs --task (and its data: --data-dir, or --data-file with --search-file)")
    if flat["act_calib"] != "dynamic":
        raise BadInput(f"--max-drop does not support --act-calib {flat['act_calib']} yet: use dynamic activations")
    base = {k: v for k, v in canonical({"method": "lq", "bits": 8, **flat}).items()
            if k not in ("method", "bits", "granularity", "group_size", "ocs_ratio", "rounding")}
    grid = Grid(granularities=tuple(_csv(p["search_granularity"])), group_size=p["group_size"],
                ocs_ratios=(p["ocs_ratio"],))
    as_json = p["as_json"]

    def log(kind, payload):
        if as_json:
            return
        if kind == "fp32":
            err.print(f"FP32 {payload['primary']} {payload['metric']:.2f} on the search data: {payload['data']}")
        else:
            s = payload
            err.print(f"  {s.stage:7s} {s.label:55s} {s.bytes / 2**20:7.2f} MiB  {s.metric:6.2f} (drop {s.drop:+.2f})  "
                      + ("[green]pass[/]" if s.passed else "[red]fail[/]"))

    calibrate = calibrator(p["task"], p["calib_samples"], p["data_dir"], p["calib_file"])
    record = convert_max_drop(p["source"], p["output"], task=p["task"], max_drop=p["max_drop"], base=base,
                              methods=_csv(p["search_methods"]), bits=_ints(p["search_bits"], "--search-bits"), grid=grid,
                              data_dir=p["data_dir"], data_file=p["dev_file"], search_data=p["search_data"],
                              search_file=p["search_file"], search_samples=p["search_samples"],
                              mixed_precision=p["mixed"], plan_out=p["plan_out"], latency=p["latency"],
                              command="bert2onnxq convert " + " ".join(sys.argv[2:]),
                              roundings=tuple(_csv(p["search_rounding"])), calibrate=calibrate, log=log)
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        _print_max_drop(record)
    if not record["report"]["within_budget"]:  # the search data passed, the report data did not
        err.print(f"[bold red]not within budget:[/] on the report data the drop is "
                  f"{record['report']['drop'][record['primary_metric']]:+.2f} points, more than --max-drop "
                  f"{record['max_drop']:g}; the file was written (see its model card): search on more data "
                  "(--search-samples, --search-file) or allow a larger drop", soft_wrap=True)
        sys.exit(3)


def _print_max_drop(record: dict) -> None:
    rep, ch, uni = record["report"], record["chosen"], record["best_uniform"]
    primary = record["primary_metric"]
    out.print(f"[green]wrote[/] {record['output']}: {ch['label']} ({ch['bytes'] / 2**20:.2f} MiB; best uniform "
              f"{uni['label']}, {uni['bytes'] / 2**20:.2f} MiB)")
    out.print(f"report on {rep['data']} ({rep['examples']} examples): {primary} {rep['metrics'][primary]:.2f} vs FP32 "
              f"{rep['fp32_metrics'][primary]:.2f} (drop {rep['drop'][primary]:+.2f}, "
              f"{'within' if rep['within_budget'] else 'NOT within'} {record['max_drop']:g})")
    out.print(f"plan {record['files']['plan']}, search path {record['files']['search']}, model card {record['files']['card']}")


def _print_qbert(analysis: dict) -> None:
    from rich.table import Table

    hess, alloc = analysis["hessian"], analysis["allocation"]
    bits = {b["layer"]: b["bits"] for b in alloc["bits"]}
    table = Table(title=f"Q-BERT: top Hessian eigenvalue of each layer over {hess['batches']} {hess['task']} batches "
                        f"of {hess['batch_size']} ({hess['seconds']:.0f} s, {hess['threads']} thread(s))",
                  title_justify="left")
    for name in ("layer", "mean lambda", "std lambda", "Omega", "bits"):
        table.add_column(name, justify="right")
    for layer in hess["layers"]:
        table.add_row(str(layer["layer"]), f"{layer['mean']:.3g}", f"{layer['std']:.3g}", f"{layer['omega']:.3g}",
                      str(bits[layer["layer"]]))
    out.print(table)
    out.print(f"[dim]{alloc['rule']}; order {alloc['order']}; average {alloc['avg_bits']:.3g} bits[/]")
