"""bert2onnxq validate"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from .app import TASKS, Command, key_value, main, out, progress_bars, quiet_transformers

@main.command(cls=Command)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--task", required=True, type=click.Choice(TASKS), help="GLUE task or squad (v1.1).")
@click.option("--reference", type=click.Path(path_type=Path), help="FP32 .onnx to score side by side (drop, agreement).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="GLUE folder in glue_data layout (default: $GLUE_DIR, else the hub).")
@click.option("--data-file", type=click.Path(path_type=Path), help="A dev file: SQuAD v1.1 JSON, or a GLUE TSV.")
@click.option("--tokenizer", "tokenizer_dir", type=click.Path(path_type=Path), help="Tokenizer folder (default: beside the model).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True, help="Intra-op threads (0: ONNX Runtime's choice).")
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
    from ..validate import Protocol, validate as run_validate

    quiet_transformers()
    config = dict(key_value(item) for item in session_config)
    protocol = Protocol(max_length=max_length, doc_stride=doc_stride, batch_size=batch_size, limit=limit)
    with progress_bars(enabled=True) as factory:
        result = run_validate(model, task, reference=reference, data_dir=data_dir, data_file=data_file,
                              tokenizer_dir=tokenizer_dir, device=device, threads=threads, session_config=config,
                              protocol=protocol, progress=factory)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    _print_validation(result)


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
              f"session config {rt['session_config'] or '{}'}, MatMulNBits accuracy level "
              f"{rt['qdq_matmulnbits_accuracy_level']} (numerics options: --json runtime.numerics_options); "
              f"{result['model']['seconds']} s[/]")
