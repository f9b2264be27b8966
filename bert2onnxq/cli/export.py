"""bert2onnxq export"""

from __future__ import annotations

import json
from pathlib import Path

import click

from .app import Command, main, out, quiet_transformers, status


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
    from ..export import export as run_export

    quiet_transformers()
    with status("exporting with torch.onnx ..."):
        summary = run_export(source, output, save_dir=save_dir, head=head, opset=opset,
                             external_data_threshold=external_data_threshold)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    out.print(f"[green]wrote[/] {summary['output']}  ({summary['head']}, opset {summary['opset']}"
              f"{', external data' if summary['external_data'] else ''})")
    out.print(f"max |ONNX - PyTorch| on real sentences: {summary['max_abs_diff_vs_torch']:.2e}")
