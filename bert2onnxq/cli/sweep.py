"""bert2onnxq sweep"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .app import TASKS, Command, err, main, out, progress_bars, quiet_transformers


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str, option: str) -> list[int]:
    from ..errors import BadInput

    try:
        return [int(v) for v in _csv(value)]
    except ValueError:
        raise BadInput(f"{option} '{value}' must be comma-separated integers, e.g. 8,6,4,3,2") from None


@main.command(cls=Command)
@click.option("--model", "source", required=True, help="HF model folder / hub id (exported once), or an FP32 .onnx from 'export'.")
@click.option("--task", required=True, type=click.Choice(TASKS), help="GLUE task or squad: every cell is validated on its dev data.")
@click.option("-o", "--output-dir", required=True, type=click.Path(path_type=Path), help="Results folder (re-use it to resume).")
@click.option("--methods", default="lq,aciq,ocs", show_default=True,
              help="Comma-separated methods (the table's rows): lq, aciq, ocs, qbert (one Hessian per sweep; "
                   "each layer at bits-1, bits or bits+1 for an average of bits).")
@click.option("--bits", default="8,6,4,3,2", show_default=True, help="Comma-separated weight bit widths, 2..8 (the columns).")
@click.option("--granularity", default="channel", show_default=True,
              help="Comma-separated: channel, group, tensor; each one is a row variant of every method.")
@click.option("--group-size", type=click.IntRange(2), default=128, show_default=True, help="Inputs per scale for group rows.")
@click.option("--ocs-ratio", default="0.02", show_default=True, help="Comma-separated OCS expand ratios (one OCS row each).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="A convert option for every cell that has it, e.g. --set emb_bits=4 --set rounding=gptq.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="GLUE folder (default $GLUE_DIR).")
@click.option("--data-file", type=click.Path(path_type=Path), help="Dev file: SQuAD v1.1 JSON, or a GLUE TSV.")
@click.option("--calib-file", type=click.Path(path_type=Path),
              help="Train data for Q-BERT's Hessian and for cells that calibrate activations (--set ocs_activations=true, "
                   "act_calib=static); SQuAD JSON or GLUE TSV; default: --data-dir's train split.")
@click.option("--limit", type=click.IntRange(1), help="Only the first N dev examples (quick looks; stated in the results).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--max-length", type=click.IntRange(8, 512), help="Max tokens (default: 128 GLUE, 384 SQuAD).")
@click.option("--jobs", type=click.IntRange(1), default=1, show_default=True, help="Cells run at once (local processes).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local processes, or Ray tasks (pip install 'bert2onnxq[ray]'; paths must be shared with the workers).")
@click.option("--ray-address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray).")
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True,
              help="Intra-op threads per cell for validation (0: cores / jobs; 2 per Ray task).")
@click.option("--latency/--no-latency", default=True, show_default=True,
              help="Time each cell against FP32 (batch 1, seq 128, interleaved, 1 thread).")
@click.option("--keep-models/--no-keep-models", default=True, show_default=True,
              help="Keep each cell's .onnx (the cell file and model card are always kept).")
@click.option("--json", "as_json", is_flag=True, help="Print the run's summary as JSON.")
def sweep(source, task, output_dir, methods, bits, granularity, group_size, ocs_ratio, settings, data_dir, data_file,
          calib_file, limit, batch_size, max_length, jobs, executor, ray_address, threads, latency, keep_models, as_json):
    """Convert, validate and time every method x bit width over one FP32 export; write the table.

    \b
    Resumable: each finished cell is saved as OUTPUT/cells/<cell id>.json; a re-run with the same
    folder skips them and rebuilds results.csv, results.json, results.md (methods as rows, bit
    widths as columns) and the plots (metric_vs_size.png; layer_bits.png for mixed plans).
    \b
    Examples:
      bert2onnxq sweep --model ../shared/models/minilm-l6-sst2 --task sst2 --data-dir ../shared/data/glue -o results/sst2
      bert2onnxq sweep --model out/fp32/model.onnx --task mrpc --methods lq,aciq --bits 4,3,2 --granularity channel,group --group-size 32 -o results/mrpc
      bert2onnxq sweep --model out/fp32/model.onnx --task sst2 --jobs 2 --no-latency -o results/sst2
      bert2onnxq sweep --model ../shared/models/minilm-l6-squad --task squad --methods aciq,qbert --bits 4,3,2 \
          --data-file ../shared/data/squad/dev-v1.1-heldout12.json --calib-file ../shared/data/squad/dev-v1.1-train36.json -o results/squad
      bert2onnxq sweep --model bert-large-uncased-sst2 --task sst2 --executor ray --ray-address auto -o /shared/results/large
    """
    from ..sweep import Grid, parse_setting, run_sweep

    quiet_transformers()
    grid = Grid(granularities=tuple(_csv(granularity)), group_size=group_size,
                ocs_ratios=tuple(float(r) for r in _csv(ocs_ratio)) if _ratios_ok(ocs_ratio) else (),
                extra=tuple(parse_setting(s) for s in settings))
    command = "bert2onnxq sweep " + " ".join(sys.argv[2:])
    with progress_bars(enabled=not as_json) as bars:
        state = {}

        def on_event(kind, payload):
            if kind == "fp32":
                err.print(f"FP32 {Path(payload['path']).name}: " + ", ".join(f"{k} {v:.2f}" for k, v in payload["metrics"].items())
                          + f" ({payload['examples']} examples, {payload['bytes'] / 2**20:.2f} MiB)")
            elif kind == "plan":
                if payload["skipped"]:
                    err.print(f"resuming: {len(payload['skipped'])} of {len(payload['cells'])} cells already done")
                state["bar"] = bars("cells", len(payload["todo"])) if bars else (lambda n: None)
            elif kind == "hessian":
                err.print("Q-BERT: computing the Hessian of every encoder layer on train batches (once per sweep) ...")
            elif kind == "cell":
                state["bar"](1)
                if payload["status"] != "ok":
                    err.print(f"  [red]{payload['id']}: {payload['error']}[/]")
                    return
                p = payload["primary_metric"]
                lat = f"  latency {payload['latency_ratio']:.2f}x" if payload.get("latency_ratio") else ""
                err.print(f"  {payload['id']:22s} {payload['variant']:22s} W{payload['bits']}  {p} {payload['metrics'][p]:6.2f} "
                          f"({payload['pct_of_fp32'][p] or 0:5.1f}% of FP32)  {payload['bytes'] / 2**20:6.2f} MiB{lat}")

        try:
            result = run_sweep(source, output_dir, task, _csv(methods), _ints(bits, "--bits"), grid,
                               data_dir=data_dir, data_file=data_file, calib_file=calib_file, limit=limit,
                               batch_size=batch_size,
                               max_length=max_length, jobs=jobs, executor=executor, ray_address=ray_address,
                               threads=threads, latency=latency, keep_models=keep_models, command=command,
                               on_event=on_event, progress=bars)
        except KeyboardInterrupt:
            # unlike other commands, a sweep keeps what it finished: say so, and how to go on
            done = len(list((Path(output_dir) / "cells").glob("*.json")))
            err.print(f"[bold red]interrupted[/]: {done} finished cell(s) are saved in {output_dir}/cells; "
                      "run the same command again to resume")
            sys.exit(130)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    out.print(f"[green]done[/]: ran {len(result['ran'])}, skipped {len(result['skipped'])} (already done), "
              f"failed {len(result['failed'])}")
    files = result["files"]
    out.print(f"wrote {files['markdown']}, {files['csv']}, {files['json']}" + "".join(f", {p}" for p in files["plots"]))
    if not files["plots"]:
        out.print("[yellow]no plots[/]: no cell finished")


def _ratios_ok(value: str) -> bool:
    from ..errors import BadInput

    try:
        [float(r) for r in _csv(value)]
    except ValueError:
        raise BadInput(f"--ocs-ratio '{value}' must be comma-separated numbers, e.g. 0.01,0.02") from None
    return True
