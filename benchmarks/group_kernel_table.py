"""Group-wise weights on the int8 GEMM: the two-level form (`--group-kernel int8`: a float scale per
output channel x an integer multiplier per group, multiplied out to int8 at load) beside the free-scale
group-wise file ONNX Runtime runs as MatMulNBits, on the shared models' full dev sets (SQuAD: the 12
held-out articles). Each file is scored with `validate`'s default batch (1 for the two-level form,
whose activation ranges are per batch; 32 for MatMulNBits) against the FP32 export.

    python benchmarks/group_kernel_table.py --json benchmarks/results/group_kernel_table.json \
        --markdown benchmarks/results/group_kernel_table.md

`--roundings nearest,gptq` adds GPTQ rows (convert's defaults: searched ranges, 128 calibration samples; on
the int8 GEMM it rounds for the 8-bit dynamic inputs); each form is compared with the free-scale file of
the same rounding. `--forms matmulnbits,int8-token` compares the two-level form with per-token
activations (`--act-calib per-token`: a symmetric int8 scale per token) instead.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_SHARED,
    GROUP_SIZE,
    MODELS,
    SQUAD_FILE,
    THREADS,
    calibrator,
    environment,
    err,
    fp32_export,
    model_list,
    out,
    train_data,
)
from tables import console_table, md_checks, md_table, print_checks, save  # noqa: E402

# form -> (label, convert options beyond method / bits)
FORMS = {"matmulnbits": ("free scale per group (MatMulNBits)", {"granularity": "group", "group_size": GROUP_SIZE}),
         "int8": ("two-level scales (int8 GEMM)", {"granularity": "group", "group_size": GROUP_SIZE, "group_kernel": "int8"}),
         "channel": ("per channel (int8 GEMM)", {"granularity": "channel"}),
         "int8-token": ("two-level scales, per-token activations (int8 GEMM)",
                        {"granularity": "group", "group_size": GROUP_SIZE, "group_kernel": "int8", "act_calib": "per-token"})}
TWO_LEVEL = ("int8", "int8-token")
MAX_METRIC_LOSS, MAX_AGREEMENT_LOSS = 0.2, 0.5  # issue 14: two-level vs the free-scale file


def _ints(ctx, param, value):
    return [int(x) for x in value.split(",") if x.strip()]


def run_model(name: str, shared: Path, work: Path, bits: list[int], methods: list[str],
              roundings: list[str] = ("nearest",), forms: list[str] = ("matmulnbits", "int8", "channel")) -> list[dict]:
    from bert2onnxq.convert import convert
    from bert2onnxq.methods import convert_options
    from bert2onnxq.validate import ReferenceCache, validate

    task = MODELS[name]
    fp32, _ = fp32_export(shared / "models" / name, work / name)
    data = {"data_file": shared / SQUAD_FILE} if task == "squad" else {"data_dir": shared / "data" / "glue"}
    calibrate, cache, rows = calibrator(task, train_data(shared, task)), ReferenceCache(), []
    for b, method, rounding, (kernel, (label, options)) in itertools.product(bits, methods, roundings,
                                                                                   [(f, FORMS[f]) for f in forms]):
        path = work / name / f"{method}-w{b}-{kernel}-{rounding}.onnx"
        plan = convert(str(fp32), path, convert_options(method=method, bits=b, rounding=rounding, **options),
                       calibrate=calibrate)["plan"]
        r = validate(path, task, reference=fp32, threads=THREADS, reference_cache=cache, **data)
        primary = r["primary_metric"]
        row = {"model": name, "task": task, "method": method.upper(), "bits": b, "kernel": kernel, "form": label,
               "rounding": rounding,
               "primary_metric": primary, "metric": r["model"]["metrics"][primary],
               "fp32_metric": r["reference"]["metrics"][primary], "agreement": r["comparison"]["agreement"],
               "logit_rel_rms": r["comparison"]["logit_rel_rms"], "batch": r["protocol"]["batch_size"],
               "mib": path.stat().st_size / 2**20, "examples": r["examples"],
               "weight_mse": sum(t.stats["mse"] for t in plan.weights) / len(plan.weights)}
        rows.append(row)
        err.print(f"{name:16s} {method.upper():4s} W{b} g{GROUP_SIZE} {kernel:11s} {rounding:7s}: {primary} {row['metric']:.2f} "
                  f"(FP32 {row['fp32_metric']:.2f}) agree {row['agreement']:.2f}%  batch {row['batch']}")
    return rows


def _forms(value: str) -> list[str]:
    forms = [f.strip() for f in value.split(",") if f.strip()]
    unknown = [f for f in forms if f not in FORMS]
    if unknown or "matmulnbits" not in forms:
        raise click.BadParameter(f"--forms takes {', '.join(FORMS)} and needs matmulnbits (the reference): got {value}")
    return forms


def _rounding(row: dict) -> str:
    return row.get("rounding", "nearest")  # rows of runs before --roundings were nearest


def _cell(row: dict) -> tuple:
    return row["model"], row["method"], row["bits"], _rounding(row)


def checks(rows: list[dict]) -> list[dict]:
    """Two-level within MAX_METRIC_LOSS points and MAX_AGREEMENT_LOSS agreement of the free-scale file."""
    found = []
    free = {_cell(r): r for r in rows if r["kernel"] == "matmulnbits"}
    for r in rows:
        f = free.get(_cell(r))
        if r["kernel"] not in TWO_LEVEL or f is None:
            continue
        dm, da = r["metric"] - f["metric"], r["agreement"] - f["agreement"]
        form = "two-level, per-token activations," if r["kernel"] == "int8-token" else "two-level"
        found.append({"target": f"{r['model']} {r['method']} W{r['bits']} g{GROUP_SIZE} {_rounding(r)}: {form} within {MAX_METRIC_LOSS} "
                                f"points and {MAX_AGREEMENT_LOSS}% agreement of the free-scale file",
                      "value": f"{dm:+.2f} points, {da:+.2f}% agreement",
                      "pass": dm >= -MAX_METRIC_LOSS and da >= -MAX_AGREEMENT_LOSS})
    return found


def markdown(report: dict) -> str:
    rows = report["rows"]
    intro = (f"Generated by `{report['command']}` on {report['environment']['machine']}, ONNX Runtime "
             f"{report['environment']['onnxruntime']}, bert2onnxq commit {report['environment']['git_commit']}, "
             f"{THREADS} threads. Group size {GROUP_SIZE}, asymmetric (the default at 2-4 bits), the row's rounding (gptq: convert's defaults, searched "
             "ranges, 128 calibration samples, for the 8-bit dynamic inputs on the int8 GEMM), 8-bit activations (MatMulNBits: "
             "int8 per row block; two-level: DynamicQuantizeLinear, or symmetric int8 per token where the form says so), int8 embeddings. Each file is scored at `validate`'s "
             "default batch against the FP32 export (agreement: same label / same answer span as FP32). Weight MSE / free: "
             "the mean over the encoder weights of each file's weight MSE, over the free-scale file's. The per-channel row "
             "runs the same int8 GEMM and dynamic activations as the two-level one: what group-wise buys on that path.")
    lines = ["# Group-wise weights on the int8 GEMM: two-level scales vs free scales", "", intro, ""]
    free = {_cell(r): r["weight_mse"] for r in rows if r["kernel"] == "matmulnbits"}
    header = ["model", "method", "bits", "form", "rounding", "metric", "FP32", "agreement %", "logit rel RMS",
              "weight MSE / free", "batch", "MiB"]
    table = [[r["model"], r["method"], str(r["bits"]), r["form"], _rounding(r), f"{r['primary_metric']} {r['metric']:.2f}",
              f"{r['fp32_metric']:.2f}", f"{r['agreement']:.2f}", f"{r['logit_rel_rms']:.4f}",
              f"{r['weight_mse'] / free[_cell(r)]:.3f}", str(r["batch"]), f"{r['mib']:.2f}"]
             for r in rows]
    lines += md_table(header, table, left={0, 1, 3, 4}) + [""] + md_checks(checks(rows))
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--models", default=",".join(MODELS), callback=model_list, show_default=True)
@click.option("--bits", default="4,3", callback=_ints, show_default=True)
@click.option("--methods", default="lq,aciq", show_default=True, help="Comma-separated: lq, aciq.")
@click.option("--roundings", default="nearest", show_default=True, help="Comma-separated: nearest, gptq.")
@click.option("--forms", default="matmulnbits,int8,channel", show_default=True, help=f"Comma-separated: {', '.join(FORMS)}.")
@click.option("--shared", type=click.Path(path_type=Path), default=DEFAULT_SHARED, show_default=True)
@click.option("--work", type=click.Path(path_type=Path), default=Path("/tmp/bert2onnxq-group-kernel"), show_default=True)
@click.option("--json", "json_path", type=click.Path(path_type=Path))
@click.option("--markdown", "md_path", type=click.Path(path_type=Path))
def main(models, bits, methods, roundings, forms, shared, work, json_path, md_path):
    """Two-level group scales (int8 GEMM) vs free group scales (MatMulNBits), full dev sets."""
    report = {"command": "python benchmarks/group_kernel_table.py " + " ".join(sys.argv[1:]), "environment": environment(),
              "rows": []}
    for name in models:
        report["rows"] += run_model(name, shared, work, bits, [m.strip() for m in methods.split(",") if m.strip()],
                                    [r.strip() for r in roundings.split(",") if r.strip()], _forms(forms))
        save(report, json_path, md_path, markdown)
    rows = report["rows"]
    out.print(console_table("two-level vs free group scales",
                            ["model", "method", "bits", "kernel", "metric", "agreement"],
                            [[r["model"], r["method"], str(r["bits"]), r["kernel"], f"{r['metric']:.2f}",
                              f"{r['agreement']:.2f}"] for r in rows], left={0, 1, 3}))
    print_checks(out, checks(rows))


if __name__ == "__main__":
    main()
