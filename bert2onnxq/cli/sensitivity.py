"""bert2onnxq sensitivity"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .app import TASKS, Command, calibrator, err, main, out, progress_bars, quiet_transformers


@main.command(cls=Command)
@click.option("--model", "source", required=True,
              help="FP32 .onnx from 'export' (or its --save-dir folder), or an HF model folder (exported first).")
@click.option("--task", required=True, type=click.Choice(TASKS), help="GLUE task or squad: scored on a sample of its dev data.")
@click.option("-o", "--output-dir", required=True, type=click.Path(path_type=Path),
              help="Folder for sensitivity.json / .md / .png and keep-worst.plan.json.")
@click.option("--plan", "plan_in", type=click.Path(path_type=Path),
              help="The plan to examine: a plan JSON (--plan-out), or a quantized .onnx (its stored plan).")
@click.option("--method", default="lq", show_default=True, help="Without --plan: the method that decides it.")
@click.option("--bits", type=click.IntRange(2, 8), default=3, show_default=True, help="Without --plan: weight bits.")
@click.option("--granularity", type=click.Choice(["tensor", "channel", "group", "neuron-group"]), default="channel",
              show_default=True, help="Without --plan: one scale per tensor, channel or group.")
@click.option("--group-size", type=click.IntRange(2), default=32, show_default=True, help="Without --plan: inputs per group.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Without --plan: any other convert option, e.g. --set clip=aciq --set rounding=gptq.")
@click.option("--by", type=click.Choice(["layer", "role"]), default="layer", show_default=True,
              help="Rank encoder layers, or each layer's query/key/value/attention_output/intermediate/output.")
@click.option("--mode", "modes", default="only,all-but", show_default=True,
              help="only: the unit quantized, the rest FP32; all-but: everything quantized but the unit.")
@click.option("--samples", type=click.IntRange(1), default=500, show_default=True,
              help="Dev examples scored (a seeded sample; the whole split when it is smaller).")
@click.option("--keep-worst", type=click.IntRange(0), default=2, show_default=True,
              help="Write (and score) the plan that keeps the N most harmful units at --keep-bits.")
@click.option("--keep-bits", default="8", show_default=True,
              help="Bits of the kept units (LQ per channel, 2..8), or fp32.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="GLUE folder in glue_data layout.")
@click.option("--data-file", type=click.Path(path_type=Path), help="A dev file: SQuAD v1.1 JSON, or a GLUE TSV.")
@click.option("--calib-file", type=click.Path(path_type=Path),
              help="Train data for plans that calibrate (GPTQ, static activations); default: --data-dir's train split.")
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True, help="Intra-op threads (0: ONNX Runtime's choice).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def sensitivity(source, task, output_dir, plan_in, method, bits, granularity, group_size, settings, by, modes, samples,
                keep_worst, keep_bits, data_dir, data_file, calib_file, threads, as_json):
    """Which layers cost the accuracy: each unit quantized alone, and all but it, scored against FP32.

    \b
    Ranked by the output (logit) error of the unit quantized alone, then its metric drop (a metric on
    a few hundred examples moves by whole examples, an error does not); the plan that keeps the
    --keep-worst most harmful units at --keep-bits (8: LQ per channel; fp32 prints the --skip
    patterns that make the same plan from convert) is written and scored.
    \b
    Examples:
      bert2onnxq sensitivity --model out/fp32/model.onnx --task sst2 --data-dir ../shared/data/glue --bits 3 -o out/sens3
      bert2onnxq sensitivity --model out/fp32/model.onnx --task sst2 --data-dir ../shared/data/glue --plan out/q2.onnx --by role -o out/sens-q2
      bert2onnxq sensitivity --model out/squad/model.onnx --task squad --data-file ../shared/data/squad/dev-v1.1-heldout12.json \
          --bits 2 --granularity group --samples 300 -o out/sens-squad
    """
    from ..convert import decide
    from ..errors import BadInput
    from ..methods import convert_options
    from ..onnx_io import load_ir
    from ..search import run_sensitivity
    from ..sweep import parse_setting, prepare_fp32

    quiet_transformers()
    ctx = click.get_current_context()
    chosen = [n for n in ("method", "bits", "granularity", "group_size", "settings")
              if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]
    if plan_in and chosen:
        raise BadInput(f"--plan gives the plan: drop --{chosen[0].replace('_', '-').replace('settings', 'set')}")
    if "group_size" in chosen and granularity != "group":
        raise BadInput(f"--group-size applies only with --granularity group (here {granularity}): drop it or add "
                       "--granularity group")
    output_dir = Path(output_dir)
    fp32 = Path(source)
    if fp32.is_dir() and (fp32 / "model.onnx").is_file():
        fp32 = fp32 / "model.onnx"
    if fp32.suffix != ".onnx":
        output_dir.mkdir(parents=True, exist_ok=True)
        fp32, _ = prepare_fp32(source, output_dir)
    calibrate = calibrator(task, 128, data_dir, calib_file)
    if plan_in:
        plan = _load_plan(Path(plan_in))
    else:
        extra = dict(parse_setting(s) for s in settings)
        options = convert_options(method=method, bits=bits, granularity=granularity, group_size=group_size,
                                  **{"task": task, "data_dir": data_dir, "calib_file": calib_file} if method == "qbert" else {},
                                  **extra)
        plan = decide(load_ir(fp32), options, source=str(fp32))
    kept_bits = None if keep_bits.lower() == "fp32" else int(keep_bits) if keep_bits.isdigit() else 0
    if kept_bits is not None and not 2 <= kept_bits <= 8:
        raise BadInput(f"--keep-bits {keep_bits}: give 2..8 or fp32")
    with progress_bars(enabled=not as_json) as factory:
        report = run_sensitivity(fp32, task, plan, output_dir, by=by, modes=tuple(m.strip() for m in modes.split(",") if m.strip()),
                                 samples=samples, keep_worst=keep_worst, keep_bits=kept_bits, threads=threads, data_dir=data_dir,
                                 data_file=data_file, calibrate=calibrate, progress=factory,
                                 command="bert2onnxq sensitivity " + " ".join(sys.argv[2:]))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    _print_report(report)


def _load_plan(path: Path):
    from ..inspect import stored_plan
    from ..plan import QuantPlan

    if path.suffix == ".onnx":
        return QuantPlan.from_json(stored_plan(path))
    return QuantPlan.load(path)


def _print_report(report: dict) -> None:
    from rich.table import Table

    p, full = report["primary_metric"], report["full"]
    out.print(f"{report['plan_summary']}")
    out.print(f"{report['task']} {report['data']}: FP32 {p} {report['fp32_metric']:.2f}, whole plan {full['metric']:.2f} "
              f"(drop {full['drop']:+.2f})")
    table = Table(title="units ranked by harm (logit error when quantized alone, then drop)", title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("unit")
    for m in report["modes"]:
        what = "alone" if m == "only" else "all but"
        for col in (f"{what}: drop", "agree %", "logit err"):
            table.add_column(col, justify="right")
    rows = {r["unit"]: r for r in report["rows"]}
    for i, unit in enumerate(report["ranking"], 1):
        r = rows[unit]
        cells = [str(i), unit]
        for m in report["modes"]:
            agree = "n/a" if r[m]["agreement"] is None else f"{r[m]['agreement']:.2f}"
            cells += [f"{r[m]['drop']:+.2f}", agree, f"{r[m]['logit_rel_rms']:.4f}"]
        table.add_row(*cells)
    out.print(table)
    kept = report.get("keep_worst")
    if kept:
        how = f"at {kept['bits']} bits" if kept["bits"] else "FP32"
        out.print(f"keeping {', '.join(kept['units'])} {how}: drop {kept['drop']:+.2f} (whole plan {full['drop']:+.2f}), "
                  f"{kept['bytes'] / 2**20:.2f} MiB vs {full['bytes'] / 2**20:.2f} MiB; plan {kept['plan']}"
                  + ("" if kept["bits"] else f"; from the command line: --skip {' --skip '.join(kept['skip'])}"))
    err.print(f"wrote {', '.join(report['files'].values())} ({report['seconds']:.0f} s)")
