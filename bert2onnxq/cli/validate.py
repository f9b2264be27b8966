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
@click.option("--batch-size", "batch_sizes", metavar="N[,N...]",
              help="Batch(es) to score at; several print the spread. Default: 1 for files whose activation ranges are "
                   "per batch (dynamic int8: what a batch-1 service gets), else 32.")
@click.option("--max-length", type=click.IntRange(8, 512), help="Max tokens (default: 128 GLUE, 384 SQuAD).")
@click.option("--doc-stride", type=click.IntRange(1), default=128, show_default=True, help="SQuAD window overlap.")
@click.option("--limit", type=click.IntRange(1), help="Only the first N examples.")
@click.option("--session-config", multiple=True, metavar="KEY=VALUE",
              help="ONNX Runtime session config entry, e.g. session.qdq_matmulnbits_accuracy_level=4.")
@click.option("--predictions", "predictions_out", type=click.Path(path_type=Path),
              help="Write the model's predictions: SQuAD the official {id: answer} JSON, GLUE the submission TSV.")
@click.option("--force", is_flag=True, help="Score a file whose label names are not the task's, taking class ids by position.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def validate(model, task, reference, data_dir, data_file, tokenizer_dir, device, threads, batch_sizes, max_length,
             doc_stride, limit, session_config, predictions_out, force, as_json):
    """Score an ONNX model on a GLUE task or SQuAD v1.1 with ONNX Runtime and the official metric.

    \b
    Protocol (defaults): GLUE max length 128; SQuAD max length 384, doc stride 128, n-best 20,
    max answer length 30; batches padded to their longest feature, of 1 for files whose activation
    ranges depend on the batch (dynamic int8), else of 32 (the output says which).
    \b
    Examples:
      bert2onnxq validate out/fp32/model.onnx --task sst2 --data-dir ../shared/data/glue
      bert2onnxq validate q.onnx --reference out/fp32/model.onnx --task sst2 --json
      bert2onnxq validate squad.onnx --task squad --data-file ../shared/data/squad/dev-v1.1-heldout12.json
      bert2onnxq validate q.onnx --task sst2 --data-dir models/data/glue --batch-size 1,8,32
      bert2onnxq validate squad.onnx --task squad --data-file dev-v1.1.json --predictions predictions.json
    """
    from ..validate import Protocol
    from ..validate import validate as run_validate

    quiet_transformers()
    config = dict(key_value(item) for item in session_config)
    batches = _batches(batch_sizes)
    if predictions_out is not None and len(batches) > 1:
        from ..errors import BadInput

        raise BadInput("--predictions writes one run's predictions: give one --batch-size with it")
    results = []
    for batch in batches:
        protocol = Protocol(max_length=max_length, doc_stride=doc_stride, batch_size=batch, limit=limit)
        with progress_bars(enabled=True) as factory:
            results.append(run_validate(model, task, reference=reference, data_dir=data_dir, data_file=data_file,
                                        tokenizer_dir=tokenizer_dir, device=device, threads=threads,
                                        session_config=config, protocol=protocol, progress=factory, force=force,
                                        predictions_out=predictions_out))
    if as_json:
        click.echo(json.dumps(results[0] if len(results) == 1 else {"by_batch": results, "spread": _spread(results)},
                              indent=2))
        return
    for result in results:
        _print_validation(result)
    if len(results) > 1:
        spread = _spread(results)
        out.print("spread over batches " + ", ".join(str(r["protocol"]["batch_size"]) for r in results) + ": "
                  + ", ".join(f"{k} {v:.2f} points" for k, v in spread.items()))


def _batches(value: str | None) -> list[int | None]:
    from ..errors import BadInput

    if not value:
        return [None]
    try:
        batches = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise BadInput(f"--batch-size '{value}' must be positive integers, e.g. 1 or 1,8,32")
    return batches


def _spread(results: list[dict]) -> dict:
    """Max - min of each metric of the model over the batches."""
    metrics = results[0]["model"]["metrics"]
    return {k: max(r["model"]["metrics"][k] for r in results) - min(r["model"]["metrics"][k] for r in results)
            for k in metrics}


def _print_validation(result: dict) -> None:
    models = [("model", result["model"])] + ([("reference", result["reference"])] if "reference" in result else [])
    metrics = list(result["model"]["metrics"])
    table = Table(title=f"{result['task']}: {result['examples']} examples, {result['features']} features, "
                        f"batch {result['protocol']['batch_size']}", title_justify="left")
    table.add_column("model")
    for name in metrics:
        table.add_column(name, justify="right")
    for role, info in models:
        name = Path(info["path"])  # with its folder: exports and conversions are often all model.onnx
        table.add_row(f"{role}: {name.parent.name}/{name.name}", *(f"{info['metrics'][m]:.2f}" for m in metrics))
    if "comparison" in result:
        cmp = result["comparison"]
        table.add_row("drop (reference - model)", *(f"{cmp['drop'][m]:+.2f}" for m in metrics))
    out.print(table)
    if "comparison" in result:
        cmp = result["comparison"]
        agree = "n/a" if cmp["agreement"] is None else f"{cmp['agreement']:.2f}%"
        out.print(f"agreement {agree}   max logit diff {cmp['max_logit_diff']:.3g}   "
                  f"logit rel. RMS error {cmp['logit_rel_rms']:.3g}")
    out.print(f"[dim]protocol: {result['protocol']['batch_rule']}"
              + (f"; labels matched {result['labels']}" if result["labels"] != "n/a" else "") + "[/]")
    rt = result["model"]["runtime"]
    out.print(f"[dim]onnxruntime {rt['onnxruntime']} {rt['providers'][0]}, threads {rt['intra_op_num_threads'] or 'default'}, "
              f"session config {rt['session_config'] or '{}'}, MatMulNBits accuracy level "
              f"{rt['qdq_matmulnbits_accuracy_level']} (numerics options: --json runtime.numerics_options); "
              f"{result['model']['seconds']} s[/]")
