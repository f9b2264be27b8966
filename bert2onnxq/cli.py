"""Command line: parse, call, print. No logic worth testing lives here."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from .errors import BadInput

err = Console(stderr=True)
out = Console()
TASKS = ("sst2", "mrpc", "cola", "stsb", "qnli", "rte", "wnli", "mnli", "mnli-mm", "qqp", "squad")


class Command(click.Command):
    """Turns BadInput (and a few OS errors) into a one-line message and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BadInput as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            err.print("[bold red]interrupted[/]: no output was written")
            sys.exit(130)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bert2onnxq")
def main():
    """Export a fine-tuned BERT to ONNX, quantize it, and validate it on GLUE / SQuAD.

    \b
    Pipeline:  export -> (convert) -> validate
      bert2onnxq export --model models/minilm-l6-sst2-demo -o out/fp32/model.onnx
      bert2onnxq validate out/fp32/model.onnx --task sst2 --data-dir ../shared/data/glue
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@contextmanager
def progress_bars(enabled: bool):
    """A factory of per-batch callbacks backed by one rich progress display (on stderr)."""
    if not enabled:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as bars:
        def factory(label: str, total: int):
            task_id = bars.add_task(label, total=total)
            return lambda n: bars.advance(task_id, n)
        yield factory


def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@main.command(cls=Command)
@click.option("--model", "source", required=True, help="Hugging Face model folder or hub id (hub needs network).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output .onnx file; tokenizer files are written beside it.")
@click.option("--save-dir", type=click.Path(path_type=Path), help="Instead of -o: a folder Optimum's ORTModelFor* classes load.")
@click.option("--head", type=click.Choice(["classification", "regression", "question-answering"]),
              help="Override the task head read from the model's config.")
@click.option("--opset", type=click.IntRange(17, 21), default=21, show_default=True,
              help="ONNX opset (21 for INT4/blocked scales; passes raise it to 25 for INT2).")
@click.option("--external-data-threshold", type=int, default=1 << 30, show_default=True,
              help="Bytes above which weights go to a .onnx.data file beside the model.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def export(source, output, save_dir, head, opset, external_data_threshold, as_json):
    """Export a BERT (sequence classification, STS-B regression or extractive QA) to FP32 ONNX.

    \b
    Dynamic batch and sequence axes; eager attention so ONNX Runtime's transformer optimizer
    fuses Attention; ONNX logits are checked against PyTorch on real sentences.
    \b
    Examples:
      bert2onnxq export --model models/minilm-l6-sst2-demo -o out/fp32/model.onnx
      bert2onnxq export --model ../shared/models/minilm-l6-squad --save-dir out/squad-ort
      bert2onnxq export --model bert-base-uncased --head classification -o out/bert.onnx
    """
    from .export import export as run_export

    _quiet_transformers()
    with err.status("exporting with torch.onnx ..."):
        summary = run_export(source, output, save_dir=save_dir, head=head, opset=opset,
                             external_data_threshold=external_data_threshold)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    out.print(f"[green]wrote[/] {summary['output']}  ({summary['head']}, opset {summary['opset']}"
              f"{', external data' if summary['external_data'] else ''})")
    out.print(f"max |ONNX - PyTorch| on real sentences: {summary['max_abs_diff_vs_torch']:.2e}")


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
@click.option("--skip", multiple=True, metavar="PATTERN", help="Keep matching tensors FP32 (glob or substring), e.g. 'layer.5.output'.")
@click.option("--plan", "plan_in", type=click.Path(path_type=Path), help="Apply a saved plan (ignores method options).")
@click.option("--plan-out", type=click.Path(path_type=Path), help="Also write the plan as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def convert(source, output, method, bits, granularity, group_size, symmetric, aciq_dist, ocs_ratio, ocs_grid_aware, clip,
            act_bits, act_calib,
            calib_method, calib_samples, task, data_dir, calib_file, emb_bits, skip, plan_in, plan_out, as_json):
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
    """
    from .convert import ConvertOptions, convert as run_convert
    from .plan import QuantPlan

    _quiet_transformers()
    options = ConvertOptions(method=method, bits=bits, granularity=granularity, group_size=group_size,
                             symmetric=symmetric, distribution=aciq_dist, clip=clip, ocs_ratio=ocs_ratio,
                             ocs_grid_aware=ocs_grid_aware, act_bits=None if act_bits == "none" else 8,
                             act_calib=act_calib, calib_method=calib_method, calib_samples=calib_samples,
                             emb_bits=None if emb_bits == "none" else int(emb_bits), skip=tuple(skip))
    plan = QuantPlan.load(plan_in) if plan_in else None
    calibrate = None
    if task:
        from .calibrate import activation_ranges

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


@main.command(cls=Command)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--task", required=True, type=click.Choice(TASKS), help="GLUE task or squad (v1.1).")
@click.option("--reference", type=click.Path(path_type=Path), help="FP32 .onnx to score side by side (drop, agreement).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="GLUE folder in glue_data layout (default: $GLUE_DIR, else the hub).")
@click.option("--data-file", type=click.Path(path_type=Path), help="A dev file: SQuAD v1.1 JSON, or a GLUE TSV.")
@click.option("--tokenizer", "tokenizer_dir", type=click.Path(path_type=Path), help="Tokenizer folder (default: beside the model).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=int, default=0, show_default=True, help="Intra-op threads (0: ONNX Runtime's choice).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--max-length", type=click.IntRange(8, 512), help="Max tokens (default: 128 GLUE, 384 SQuAD).")
@click.option("--doc-stride", type=click.IntRange(1), default=128, show_default=True, help="SQuAD window overlap.")
@click.option("--limit", type=click.IntRange(1), help="Only the first N examples.")
@click.option("--session-config", multiple=True, metavar="KEY=VALUE",
              help="ONNX Runtime session config entry, e.g. session.qdq_matmulnbits_accuracy_level=4.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def validate(model, task, reference, data_dir, data_file, tokenizer_dir, device, threads, batch_size, max_length,
             doc_stride, limit, session_config, as_json):
    """Score an ONNX model on a GLUE task or SQuAD v1.1 with ONNX Runtime and the official metric.

    \b
    Protocol (defaults): GLUE max length 128; SQuAD max length 384, doc stride 128, n-best 20,
    max answer length 30; batches padded to their longest feature.
    \b
    Examples:
      bert2onnxq validate out/fp32/model.onnx --task sst2 --data-dir ../shared/data/glue
      bert2onnxq validate q.onnx --reference out/fp32/model.onnx --task sst2 --json
      bert2onnxq validate squad.onnx --task squad --data-file ../shared/data/squad/dev-v1.1-heldout12.json
    """
    from .validate import Protocol, validate as run_validate

    _quiet_transformers()
    config = dict(_key_value(item) for item in session_config)
    protocol = Protocol(max_length=max_length, doc_stride=doc_stride, batch_size=batch_size, limit=limit)
    with progress_bars(enabled=True) as factory:
        result = run_validate(model, task, reference=reference, data_dir=data_dir, data_file=data_file,
                              tokenizer_dir=tokenizer_dir, device=device, threads=threads, session_config=config,
                              protocol=protocol, progress=factory)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    _print_validation(result)


def _key_value(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise BadInput(f"--session-config '{item}' must be KEY=VALUE")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


def _print_validation(result: dict) -> None:
    models = [("model", result["model"])] + ([("reference", result["reference"])] if "reference" in result else [])
    metrics = list(result["model"]["metrics"])
    table = Table(title=f"{result['task']}: {result['examples']} examples, {result['features']} features")
    table.add_column("model")
    for name in metrics:
        table.add_column(name, justify="right")
    for role, info in models:
        table.add_row(f"{role}: {Path(info['path']).name}", *(f"{info['metrics'][m]:.2f}" for m in metrics))
    if "comparison" in result:
        cmp = result["comparison"]
        table.add_row("drop (reference - model)", *(f"{cmp['drop'][m]:+.2f}" for m in metrics))
    out.print(table)
    if "comparison" in result:
        cmp = result["comparison"]
        agree = "n/a" if cmp["agreement"] is None else f"{cmp['agreement']:.2f}%"
        out.print(f"agreement {agree}   max logit diff {cmp['max_logit_diff']:.3g}   "
                  f"logit rel. RMS error {cmp['logit_rel_rms']:.3g}")
    rt = result["model"]["runtime"]
    out.print(f"[dim]onnxruntime {rt['onnxruntime']} {rt['providers'][0]}, threads {rt['intra_op_num_threads'] or 'default'}, "
              f"session config {rt['session_config'] or '{}'}; {result['model']['seconds']} s[/]")
