"""bert2onnxq convert"""

from __future__ import annotations

import json
from pathlib import Path

import click

from .app import TASKS, Command, err, main, out, progress_bars, quiet_transformers

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


def optgroup_qbert(f):
    """The Q-BERT options (used with --method qbert only)."""
    options = [
        click.option("--avg-bits", type=float, default=3.0, show_default=True,
                     help="Q-BERT: average weight bits over the encoder (size-weighted), met exactly when reachable."),
        click.option("--bit-choices", default="2,3,4", show_default=True, callback=_bit_list,
                     help="Q-BERT: the bit widths a layer may get."),
        click.option("--mix", callback=_mix, metavar="LOW/HIGH",
                     help="Q-BERT's fixed mix instead of --avg-bits: the more sensitive half of the layers gets HIGH."),
        click.option("--order", type=click.Choice(["hessian", "reverse"]), default="hessian", show_default=True,
                     help="reverse: the same bits, most to the least sensitive layers (the control experiment)."),
        click.option("--hf-model", type=click.Path(path_type=Path),
                     help="Q-BERT: the Hugging Face folder the .onnx was exported from (default: its metadata)."),
        click.option("--hessian-from", type=click.Path(path_type=Path), metavar="PLAN.json",
                     help="Q-BERT: reuse the Hessian recorded in a qbert plan; only the bits are decided again."),
        click.option("--hessian-batches", type=click.IntRange(1), default=10, show_default=True,
                     help="Q-BERT: train batches; Omega = |mean| + std of their top eigenvalues."),
        click.option("--hessian-batch-size", type=click.IntRange(1), default=8, show_default=True),
        click.option("--hessian-iters", type=click.IntRange(1), default=50, show_default=True,
                     help="Q-BERT: at most this many power iterations per layer and batch."),
        click.option("--hessian-threads", type=click.IntRange(1), default=1, show_default=True,
                     help="Q-BERT: torch threads for the Hessian (small batches gain little from more; a busy "
                          "machine loses a lot).",),
        click.option("--seed", type=int, default=0, show_default=True, help="Q-BERT: batch sample and start vectors."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@main.command(cls=Command)
@click.option("--model", "source", required=True, help="FP32 .onnx from 'export', or an HF model folder / hub id (exported first).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Quantized .onnx to write.")
@click.option("--method", type=click.Choice(["lq", "aciq", "ocs", "qbert"]), default="lq", show_default=True,
              help="lq: min-max linear quantization; aciq: analytical clipping (Banner et al.); "
                   "ocs: outlier channel splitting (Zhao et al.) then LQ, or ACIQ with --clip aciq; "
                   "qbert: Hessian-guided bits per layer on neuron-group ranges (Shen et al.), see the Q-BERT options.")
@click.option("--bits", type=int, default=8, show_default=True, help="Weight bits, 2..8 (3 bits use INT4 containers).")
@click.option("--granularity", type=click.Choice(["tensor", "channel", "group", "neuron-group"]),
              help="One scale per tensor, per output channel, per group of --group-size inputs (blocked), or per "
                   "run of output channels (--groups per matrix, never across heads).  [default: neuron-group for "
                   "qbert, else channel]")
@click.option("--group-size", type=click.IntRange(2), default=128, show_default=True)
@click.option("--groups", type=click.IntRange(1), default=128, show_default=True,
              help="neuron-group: ranges per weight matrix (1 = per tensor; >= outputs = per channel).")
@click.option("--symmetric/--asymmetric", default=None,
              help="Weight grid: narrow signed grid without zero point, or all 2^bits levels with one.  [default: "
                   "asymmetric for qbert; else symmetric at 5-8 bits, asymmetric at 2-4]")
@click.option("--aciq-dist", type=click.Choice(["laplace", "gauss"]), default="laplace", show_default=True)
@click.option("--ocs-ratio", type=float, default=0.02, show_default=True,
              help="OCS expand ratio r: ceil(r*K) input channels split per weight (paper's grid 0, 0.01, 0.02, 0.05).")
@click.option("--ocs-grid-aware", is_flag=True, help="OCS halves w/2 -+ delta/4 so they round to different grid points.")
@click.option("--ocs-activations", is_flag=True,
              help="OCS also splits the outlier channels of each MatMul input (chosen on --task calibration samples).")
@click.option("--clip", type=click.Choice(["none", "aciq"]),
              help="Clipping for --method ocs and qbert.  [default: aciq for qbert, else none]")
@click.option("--act-bits", type=click.Choice(["8", "none"]), default="8", show_default=True,
              help="Activations at each quantized MatMul's input.")
@click.option("--act-calib", type=click.Choice(["dynamic", "static"]), default="dynamic", show_default=True,
              help="dynamic: per-batch ranges at run time; static: ranges calibrated on the task's train split.")
@click.option("--calib-method", type=click.Choice(["minmax", "aciq"]), default="minmax", show_default=True)
@click.option("--calib-samples", type=click.IntRange(1), default=128, show_default=True)
@click.option("--task", type=click.Choice(TASKS),
              help="Task whose train split calibrates static activations and --ocs-activations / feeds Q-BERT's Hessian.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="GLUE folder for calibration (default $GLUE_DIR).")
@click.option("--calib-file", type=click.Path(path_type=Path), help="Calibration file (SQuAD JSON or GLUE TSV).")
@optgroup_qbert
@click.option("--emb-bits", type=click.Choice(["8", "4", "none"]), default="8", show_default=True,
              help="Word/position/token-type tables: int8 per row, int4 per row block (ORT GatherBlockQuantized), or FP32.")
@click.option("--target", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Provider to write for: cpu (int8 GEMM with 8-bit activations, MatMulNBits for group-wise) or cuda "
                   "(weight-only DequantizeLinear -> MatMul that ORT fuses into CUDA MatMulNBits; no DynamicQuantizeLinear, "
                   "no int2 DequantizeLinear on CUDA, so activations stay float and INT2 is widened to INT4 at load).")
@click.option("--group-kernel", type=click.Choice(["matmulnbits", "int8"]), default="matmulnbits", show_default=True,
              help="cpu, group-wise weights: matmulnbits (exact group numerics, ORT MatMulNBits) or int8 (requantized per "
                   "output channel to int8 at session load: int8-GEMM speed, one more rounding of at most half an int8 step).")
@click.option("--skip", multiple=True, metavar="PATTERN", help="Keep matching tensors FP32 (glob or substring), e.g. 'layer.5.output'.")
@click.option("--plan", "plan_in", type=click.Path(path_type=Path), help="Apply a saved plan (ignores method options).")
@click.option("--plan-out", type=click.Path(path_type=Path), help="Also write the plan as JSON.")
@click.option("--data-file", "dev_file", type=click.Path(path_type=Path),
              help="--max-drop: the dev file the report is scored on (SQuAD JSON or GLUE TSV; default: --data-dir).")
@click.option("--max-drop", type=float, metavar="POINTS",
              help="Search for the smallest file whose --task metric is within POINTS of FP32 (ignores --method/--bits).")
@click.option("--search-methods", default="lq,aciq,ocs", show_default=True, help="--max-drop: methods to search.")
@click.option("--search-bits", default="8,6,4,3,2", show_default=True, help="--max-drop: weight bit widths to search.")
@click.option("--search-granularity", default="channel,group", show_default=True,
              help="--max-drop: granularities to search (group uses --group-size).")
@click.option("--search-data", type=click.Choice(["train", "dev-half", "dev"]), default="train", show_default=True,
              help="--max-drop: score candidates on a sample of the train split (after the calibration examples), "
                   "on half of dev (the report then also shows the other half), or on dev itself (stated as optimistic).")
@click.option("--search-samples", type=click.IntRange(1), default=1000, show_default=True,
              help="--max-drop with --search-data train: examples in the seeded sample.")
@click.option("--search-file", type=click.Path(path_type=Path),
              help="--max-drop: a labelled file held out from training to search on (GLUE TSV or SQuAD JSON).")
@click.option("--mixed/--no-mixed", default=True, show_default=True,
              help="--max-drop: after the best uniform plan, lower layers one by one (mixed precision).")
@click.option("--latency/--no-latency", default=True, show_default=True, help="--max-drop: time the result against FP32 for the card.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def convert(source, output, method, bits, granularity, group_size, groups, symmetric, aciq_dist, ocs_ratio,
            ocs_grid_aware, ocs_activations, clip, act_bits, act_calib, calib_method, calib_samples, task, data_dir,
            calib_file, avg_bits, bit_choices, mix, order, hf_model, hessian_from, hessian_batches, hessian_batch_size,
            hessian_iters, hessian_threads, seed, emb_bits, target, group_kernel, skip, plan_in, plan_out, dev_file,
            max_drop, search_methods, search_bits, search_granularity, search_data, search_samples, search_file, mixed,
            latency, as_json):
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
    """
    from ..convert import ConvertOptions, convert as run_convert
    from ..plan import QuantPlan

    quiet_transformers()
    if target == "cuda" and click.get_current_context().get_parameter_source("act_bits").name == "DEFAULT":
        act_bits = "none"  # CUDA graphs are weight-only unless the user insists (and gets a one-line error)
    qbert = method == "qbert"
    defaults = {"granularity": "channel", "symmetric": None, "clip": "none"}  # symmetric None: by bits
    qbert_options = None
    if qbert:
        from ..qbert import DEFAULTS, QBertOptions

        defaults = DEFAULTS  # neuron groups, asymmetric, ACIQ (see README)
    granularity = defaults["granularity"] if granularity is None else granularity
    symmetric = defaults["symmetric"] if symmetric is None else symmetric
    clip = defaults["clip"] if clip is None else clip
    if qbert:
        recorded = QuantPlan.load(hessian_from).analysis.get("hessian", {}) if hessian_from else None
        qbert_options = QBertOptions(hessian=recorded, task=task, data_dir=data_dir, calib_file=calib_file,
                                     hf_model=hf_model, avg_bits=avg_bits, bit_choices=bit_choices, mix=mix, order=order,
                                     batches=hessian_batches, batch_size=hessian_batch_size, max_iter=hessian_iters,
                                     seed=seed, threads=hessian_threads)
    options = ConvertOptions(method=method, bits=bits, granularity=granularity, group_size=group_size, groups=groups,
                             symmetric=symmetric, distribution=aciq_dist, clip=clip, ocs_ratio=ocs_ratio,
                             ocs_grid_aware=ocs_grid_aware, ocs_activations=ocs_activations, act_bits=None if act_bits == "none" else 8,
                             act_calib=act_calib, calib_method=calib_method, calib_samples=calib_samples,
                             emb_bits=None if emb_bits == "none" else int(emb_bits), skip=tuple(skip),
                             target=target, group_kernel=group_kernel, qbert=qbert_options)
    if max_drop is not None:
        return _max_drop(source, output, options, max_drop, task, data_dir, dev_file, plan_in, plan_out,
                         search_methods, search_bits, search_granularity, group_size, search_data, search_samples,
                         search_file, mixed, latency, as_json)
    plan = QuantPlan.load(plan_in) if plan_in else None
    calibrate = None
    if task:
        from ..calibrate import observe_activations

        def calibrate(fp32_path, names):
            with err.status(f"calibrating {len(names)} activations on {calib_samples} {task} train samples ..."):
                return observe_activations(fp32_path, names, task, samples=calib_samples, data_dir=data_dir,
                                           data_file=calib_file)
    if qbert and plan is None:  # the Hessian shows its own progress bar
        with progress_bars(enabled=True) as factory:
            summary = run_convert(source, output, options, plan_out=plan_out, calibrate=calibrate, progress=factory)
    else:
        with err.status("quantizing ..."):
            summary = run_convert(source, output, options, plan=plan, plan_out=plan_out, calibrate=calibrate)
    plan = summary.pop("plan")
    summary["plan_summary"] = plan.summary()
    summary["ocs"] = plan.ocs_overhead()
    if plan.analysis:
        summary["analysis"] = plan.analysis
    summary["card"] = write_card(source, output, plan, summary, plan_out)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    out.print(f"[green]wrote[/] {summary['output']}: {plan.summary()}")
    if "hessian" in plan.analysis:
        _print_qbert(plan.analysis)
    out.print(f"size {summary['bytes'] / 2**20:.2f} MiB = {summary['size_vs_ideal']:.3f}x the ideal "
              f"{summary['ideal_bytes'] / 2**20:.2f} MiB (bits x params / 8 + scales + FP32 rest), "
              f"{summary['size_vs_container_ideal']:.3f}x at container bits")
    out.print(f"model card: {summary['card']}")


def write_card(source, output, plan, summary, plan_out) -> str:
    """The deployment card beside the output: plan, size and the runtime that loads it (not validated here)."""
    import sys

    from ..report import model_card, write_atomic
    from ..runtime import make_runner

    runtime = make_runner(Path(output)).describe()  # also proves ONNX Runtime loads the file
    fp32 = source if str(source).endswith(".onnx") else None
    if fp32:
        from ..sweep import file_bytes

        summary = {**summary, "fp32_bytes": file_bytes(Path(fp32))}
    card = model_card(title=plan.summary().split(":", 1)[0] + " conversion", source=source, fp32=fp32, plan=plan,
                      summary=summary, runtime=runtime, command="bert2onnxq convert " + " ".join(sys.argv[2:]),
                      plan_file=str(plan_out) if plan_out else None)
    path = Path(output).with_suffix(".md")
    write_atomic(path, card)
    return str(path)


def _max_drop(source, output, options, max_drop, task, data_dir, data_file, plan_in, plan_out, methods, bits,
              granularity, group_size, search_data, search_samples, search_file, mixed, latency, as_json):
    import sys

    from ..errors import BadInput
    from ..search import convert_max_drop
    from ..sweep import Grid, canonical
    from .sweep import _csv, _ints

    ctx = click.get_current_context()
    for name in ("method", "bits", "granularity"):
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise BadInput(f"--max-drop searches over methods, bits and granularity itself: use --search-methods, "
                           f"--search-bits, --search-granularity instead of --{name}")
    if plan_in:
        raise BadInput("--max-drop chooses the plan: drop --plan (or drop --max-drop to re-apply a plan)")
    if not task:
        raise BadInput("--max-drop needs --task (and its data: --data-dir, or --data-file with --search-file)")
    if options.act_calib == "static":
        raise BadInput("--max-drop does not support --act-calib static yet: use dynamic activations")
    base = {k: v for k, v in canonical(options.__dict__).items() if k not in ("method", "bits", "granularity", "group_size")}
    grid = Grid(granularities=tuple(_csv(granularity)), group_size=group_size,
                ocs_ratios=(options.ocs_ratio,))
    base.pop("ocs_ratio", None)

    def log(kind, payload):
        if as_json:
            return
        if kind == "fp32":
            err.print(f"FP32 {payload['primary']} {payload['metric']:.2f} on the search data: {payload['data']}")
        else:
            s = payload
            err.print(f"  {s.stage:7s} {s.label:55s} {s.bytes / 2**20:7.2f} MiB  {s.metric:6.2f} (drop {s.drop:+.2f})  "
                      + ("[green]pass[/]" if s.passed else "[red]fail[/]"))

    record = convert_max_drop(source, output, task=task, max_drop=max_drop, base=base, methods=_csv(methods),
                              bits=_ints(bits, "--search-bits"), grid=grid, data_dir=data_dir, data_file=data_file,
                              search_data=search_data, search_file=search_file, search_samples=search_samples,
                              mixed_precision=mixed, plan_out=plan_out, latency=latency,
                              command="bert2onnxq convert " + " ".join(sys.argv[2:]), log=log)
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    rep, ch, uni = record["report"], record["chosen"], record["best_uniform"]
    p = record["primary_metric"]
    out.print(f"[green]wrote[/] {record['output']}: {ch['label']} ({ch['bytes'] / 2**20:.2f} MiB; best uniform "
              f"{uni['label']}, {uni['bytes'] / 2**20:.2f} MiB)")
    out.print(f"report on {rep['data']} ({rep['examples']} examples): {p} {rep['metrics'][p]:.2f} vs FP32 "
              f"{rep['fp32_metrics'][p]:.2f} (drop {rep['drop'][p]:+.2f}, "
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
