"""bert2onnxq bench"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from .app import Command, key_value, main, out, status


@main.command(cls=Command)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--vs", "others", multiple=True, type=click.Path(path_type=Path),
              help="Another .onnx to time side by side (repeatable); ratios are to MODEL.")
@click.option("--batch", "batches", multiple=True, type=click.IntRange(1), default=(1,), show_default=True,
              help="Batch size (repeatable: one table per batch and sequence length).")
@click.option("--seq", "seqs", multiple=True, type=click.IntRange(1), default=(128,), show_default=True,
              help="Sequence length in tokens (repeatable).")
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True, help="Intra-op threads (0: ONNX Runtime's choice).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=3, show_default=True, help="Untimed runs per model first.")
@click.option("--rounds", type=click.IntRange(1), default=10, show_default=True,
              help="Interleaved rounds; each runs every model --runs-per-round times.")
@click.option("--runs-per-round", type=click.IntRange(1), default=3, show_default=True)
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="Peak memory of a fresh process per model (CPU only; costs one extra load per model).")
@click.option("--check-numerics/--no-check-numerics", default=True, show_default=True,
              help="Compare each model's outputs under these settings with validate's default session.")
@click.option("--session-config", multiple=True, metavar="KEY=VALUE", help="ONNX Runtime session config entry (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print all results as JSON.")
def bench(model, others, batches, seqs, threads, device, warmup, rounds, runs_per_round, memory, check_numerics,
          session_config, as_json):
    """Latency, throughput, peak memory and file size of MODEL, side by side with --vs models.

    \b
    The models are loaded together and timed in interleaved rounds (the first model rotating), so
    that on a busy machine the ratios hold even when absolute times drift; the table shows the
    median latency, the 10th-90th percentile, and the median of the per-round ratios to MODEL.
    Random token ids, no padding; load average before and after is reported.
    \b
    Examples:
      bert2onnxq bench out/lq8/model.onnx --vs out/fp32/model.onnx --threads 2
      bert2onnxq bench out/fp32/model.onnx --vs out/lq8/model.onnx --vs out/q4/model.onnx --batch 1 --batch 8 --seq 128
      bert2onnxq bench out/lq8/model.onnx --rounds 20 --no-memory --json > bench.json
    """
    from ..bench import BenchSettings
    from ..bench import bench as run_bench

    config = tuple(key_value(item) for item in session_config)
    models = [model, *others]
    reports = []
    for batch in batches:
        for seq in seqs:
            settings = BenchSettings(batch=batch, seq=seq, threads=threads, device=device, warmup=warmup, rounds=rounds,
                                     runs_per_round=runs_per_round, memory=memory, check_numerics=check_numerics,
                                     config=config)
            with status(f"timing {len(models)} model(s), batch {batch}, sequence {seq} ...") as update:
                report = run_bench(models, settings,
                                   progress=lambda i, n: update(f"batch {batch}, sequence {seq}: round {i}/{n}"))
            reports.append(report)
            if not as_json:
                print_report(report)
    if as_json:
        click.echo(json.dumps(reports if len(reports) > 1 else reports[0], indent=2))


def print_report(report: dict) -> None:
    s = report["settings"]
    table = Table(title=f"batch {s['batch']} x sequence {s['seq']}, {s['device']}, threads {s['threads'] or 'default'}: "
                        f"{s['rounds']} rounds x {s['runs_per_round']} runs, interleaved", title_justify="left")
    for col in ("model", "size MiB", "median ms", "p10-p90 ms", "x first", "seq/s", "peak MiB", "numerics"):
        table.add_column(col, justify="left" if col in ("model", "numerics") else "right", no_wrap=True)
    for m in report["models"]:
        peak = m.get("peak_memory_bytes")
        num = m.get("numerics")
        numerics = "-" if num is None else "= default" if num["identical"] else f"max diff {num['max_abs_diff_vs_default_session']:.2g}"
        table.add_row(_short(m["path"]), f"{m['bytes'] / 2**20:.2f}", f"{m['median_ms']:.1f}",
                      f"{m['p10_ms']:.1f}-{m['p90_ms']:.1f}",
                      f"{m['ratio_to_first']:.3f} ({m['ratio_to_first_p10']:.2f}-{m['ratio_to_first_p90']:.2f})",
                      f"{m['throughput_seq_per_s']:.1f}", "-" if peak is None else f"{peak / 2**20:.0f}", numerics)
    out.print(table)
    load = report["load_average_before"][0], report["load_average_after"][0]
    rt = report["models"][0]["runtime"]
    out.print(f"[dim]load average {load[0]:.2f} -> {load[1]:.2f} on {report['cpu_count']} CPUs; onnxruntime "
              f"{rt['onnxruntime']} {rt['providers'][0]}; session config {rt['session_config'] or '{}'}; "
              f"{report['wall_seconds']} s timed. x first: median of per-round ratios (p10-p90); "
              f"numerics: outputs vs validate's default session.[/]")


def _short(path: str) -> str:
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name
