"""bert2onnxq convert"""

from __future__ import annotations

import json
from pathlib import Path

import click

from .app import TASKS, Command, err, main, out, quiet_transformers

@main.command(cls=Command)
@click.option("--model", "source", required=True, help="FP32 .onnx from 'export', or an HF model folder / hub id (exported first).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Quantized .onnx to write.")
@click.option("--method", type=click.Choice(["lq", "aciq", "ocs"]), default="lq", show_default=True,
              help="lq: min-max linear quantization; aciq: analytical clipping (Banner et al.); "
                   "ocs: outlier channel splitting (Zhao et al.) then LQ, or ACIQ with --clip aciq.")
@click.option("--bits", type=int, default=8, show_default=True, help="Weight bits, 2..8 (3 bits use INT4 containers).")
@click.option("--granularity", type=click.Choice(["tensor", "channel", "group"]), default="channel", show_default=True,
              help="One scale per tensor, per output channel, or per group of --group-size inputs (blocked).")
@click.option("--group-size", type=click.IntRange(2), default=128, show_default=True)
@click.option("--symmetric/--asymmetric", default=True, show_default=True)
@click.option("--aciq-dist", type=click.Choice(["laplace", "gauss"]), default="laplace", show_default=True)
@click.option("--ocs-ratio", type=float, default=0.02, show_default=True,
              help="OCS expand ratio r: ceil(r*K) input channels split per weight (paper's grid 0, 0.01, 0.02, 0.05).")
@click.option("--ocs-grid-aware", is_flag=True, help="OCS halves w/2 -+ delta/4 so they round to different grid points.")
@click.option("--clip", type=click.Choice(["none", "aciq"]), default="none", show_default=True,
              help="Clipping for --method ocs.")
@click.option("--act-bits", type=click.Choice(["8", "none"]), default="8", show_default=True,
              help="Activations at each quantized MatMul's input.")
@click.option("--act-calib", type=click.Choice(["dynamic", "static"]), default="dynamic", show_default=True,
              help="dynamic: per-batch ranges at run time; static: ranges calibrated on the task's train split.")
@click.option("--calib-method", type=click.Choice(["minmax", "aciq"]), default="minmax", show_default=True)
@click.option("--calib-samples", type=click.IntRange(1), default=128, show_default=True)
@click.option("--task", type=click.Choice(TASKS), help="Task whose train split calibrates static activations.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="GLUE folder for calibration (default $GLUE_DIR).")
@click.option("--calib-file", type=click.Path(path_type=Path), help="Calibration file (SQuAD JSON or GLUE TSV).")
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
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def convert(source, output, method, bits, granularity, group_size, symmetric, aciq_dist, ocs_ratio, ocs_grid_aware, clip,
            act_bits, act_calib,
            calib_method, calib_samples, task, data_dir, calib_file, emb_bits, target, group_kernel, skip, plan_in, plan_out,
            as_json):
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
      bert2onnxq convert --model out/fp32/model.onnx --plan plan.json -o out/again.onnx
      bert2onnxq convert --model out/fp32/model.onnx --bits 4 --granularity group --group-kernel int8 -o out/q4-int8.onnx
      bert2onnxq convert --model out/fp32/model.onnx --bits 4 --granularity group --target cuda -o out/q4-cuda.onnx
    """
    from ..convert import ConvertOptions, convert as run_convert
    from ..plan import QuantPlan

    quiet_transformers()
    if target == "cuda" and click.get_current_context().get_parameter_source("act_bits").name == "DEFAULT":
        act_bits = "none"  # CUDA graphs are weight-only unless the user insists (and gets a one-line error)
    options = ConvertOptions(method=method, bits=bits, granularity=granularity, group_size=group_size,
                             symmetric=symmetric, distribution=aciq_dist, clip=clip, ocs_ratio=ocs_ratio,
                             ocs_grid_aware=ocs_grid_aware, act_bits=None if act_bits == "none" else 8,
                             act_calib=act_calib, calib_method=calib_method, calib_samples=calib_samples,
                             emb_bits=None if emb_bits == "none" else int(emb_bits), skip=tuple(skip),
                             target=target, group_kernel=group_kernel)
    plan = QuantPlan.load(plan_in) if plan_in else None
    calibrate = None
    if task:
        from ..calibrate import activation_ranges

        def calibrate(fp32_path, names):
            with err.status(f"calibrating {len(names)} activations on {calib_samples} {task} train samples ..."):
                return activation_ranges(fp32_path, names, task, samples=calib_samples, method=calib_method,
                                         data_dir=data_dir, data_file=calib_file)
    with err.status("quantizing ..."):
        summary = run_convert(source, output, options, plan=plan, plan_out=plan_out, calibrate=calibrate)
    plan = summary.pop("plan")
    summary["plan_summary"] = plan.summary()
    summary["ocs"] = plan.ocs_overhead()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    out.print(f"[green]wrote[/] {summary['output']}: {plan.summary()}")
    out.print(f"size {summary['bytes'] / 2**20:.2f} MiB = {summary['size_vs_ideal']:.3f}x the ideal "
              f"{summary['ideal_bytes'] / 2**20:.2f} MiB (bits x params / 8 + scales + FP32 rest), "
              f"{summary['size_vs_container_ideal']:.3f}x at container bits")
