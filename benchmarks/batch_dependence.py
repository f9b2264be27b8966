"""Does the validated number depend on the batch? Every file form scored at batch 1, 8 and 32 on the
shared models (SST-2 and MRPC dev, SQuAD held-out 12 articles), each against the FP32 export at the
same batch: metric, agreement with FP32, time. `validate` defaults to batch 1 for the forms whose
activation ranges are taken over the whole padded batch (DynamicQuantizeLinear) and 32 otherwise.

    python benchmarks/batch_dependence.py --json benchmarks/results/batch_dependence.json \
        --markdown benchmarks/results/batch_dependence.md
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_SHARED, MODELS, SQUAD_FILE, THREADS, environment, err, fp32_export, model_list, out  # noqa: E402
from tables import console_table, md_table, save  # noqa: E402

BATCHES = (1, 8, 32)
SQUAD_TRAIN = "data/squad/dev-v1.1-train36.json"
# form -> (convert options, what ONNX Runtime does with the activations)
FORMS = {
    "fp32": (None, "FP32"),
    "W8 channel, dynamic int8 activations": ({"bits": 8}, "DynamicQuantizeLinear: one range per batch"),
    "W4 channel, dynamic int8 activations": ({"bits": 4}, "DynamicQuantizeLinear: one range per batch"),
    "OCS W4 channel, dynamic int8 activations": ({"method": "ocs", "bits": 4}, "DynamicQuantizeLinear: one range per batch"),
    "W4 group-32, int8 kernel (two-level scales)": ({"bits": 4, "granularity": "group", "group_size": 32, "group_kernel": "int8"},
                                         "DynamicQuantizeLinear: one range per batch"),
    "W8 channel, static int8 activations": ({"bits": 8, "act_calib": "static"}, "QuantizeLinear: calibrated ranges"),
    "W4 group-32, MatMulNBits (int8 activations)": ({"bits": 4, "granularity": "group", "group_size": 32},
                                                    "MatMulNBits level 4: a range per row block"),
    "W4 group-32, weight-only": ({"bits": 4, "granularity": "group", "group_size": 32, "act_bits": None},
                                 "MatMulNBits level 4: a range per row block"),
}


def run_model(name: str, shared: Path, work: Path) -> list[dict]:
    from bert2onnxq.analyse.activations import observe_activations
    from bert2onnxq.convert import convert
    from bert2onnxq.methods import convert_options
    from bert2onnxq.validate import Protocol, ReferenceCache, batch_rule, validate

    task = MODELS[name]
    fp32, _ = fp32_export(shared / "models" / name, work / name)
    data = {"data_file": shared / SQUAD_FILE} if task == "squad" else {"data_dir": shared / "data" / "glue"}
    calib = {"data_file": shared / SQUAD_TRAIN} if task == "squad" else {"data_dir": shared / "data" / "glue"}

    def calibrate(path, names, samples=None, moments=False, min_tokens=0, weights=None):
        return observe_activations(path, names, task, samples=samples or 128, moments=moments, min_tokens=min_tokens,
                                   weights=weights, **calib)

    cache, rows = ReferenceCache(), []
    for form, (options, activations) in FORMS.items():
        path = fp32
        if options is not None:
            path = work / name / "forms" / f"{len(rows)}.onnx"
            convert(str(fp32), path, convert_options(**options), calibrate=calibrate)
        default_batch = batch_rule(path)[0]
        for batch in BATCHES:
            t0 = time.perf_counter()
            r = validate(path, task, reference=fp32, threads=THREADS, protocol=Protocol(batch_size=batch),
                         reference_cache=cache, **data)
            primary = r["primary_metric"]
            row = {"model": name, "task": task, "form": form, "activations": activations, "batch": batch,
                   "default_batch": default_batch, "primary_metric": primary, "metric": r["model"]["metrics"][primary],
                   "fp32_metric": r["reference"]["metrics"][primary], "agreement": r["comparison"]["agreement"],
                   "logit_rel_rms": r["comparison"]["logit_rel_rms"], "seconds": r["model"]["seconds"],
                   "wall_seconds": round(time.perf_counter() - t0, 2), "examples": r["examples"]}
            rows.append(row)
            err.print(f"{name:16s} {form:45s} batch {batch:2d}: {primary} {row['metric']:.2f} (FP32 {row['fp32_metric']:.2f}) "
                      f"agree {row['agreement']:.2f}%  {row['seconds']:.1f} s")
    return rows


def spread(rows: list[dict]) -> dict:
    """Per (model, form): max - min of the metric and of the agreement over the batches."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["model"], r["form"]), []).append(r)
    return {k: {"metric": max(r["metric"] for r in g) - min(r["metric"] for r in g),
                "agreement": max(r["agreement"] for r in g) - min(r["agreement"] for r in g)} for k, g in groups.items()}


def markdown(report: dict) -> str:
    rows = report["rows"]
    lines = ["# Batch dependence of validated numbers", "",
             f"Generated by `{report['command']}` on {report['environment']['machine']}, ONNX Runtime "
             f"{report['environment']['onnxruntime']}, {THREADS} threads. Each file is scored at batch 1, 8 and 32 "
             "(length-sorted, padded per batch) against the FP32 export at the same batch. **Default** marks the batch "
             "`validate` uses for that file when `--batch-size` is not given.", ""]
    spreads = spread(rows)
    by_model: dict = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    for model, mrows in by_model.items():
        primary = mrows[0]["primary_metric"]
        lines += [f"## {model} ({mrows[0]['task']}, {mrows[0]['examples']} examples; {primary})", ""]
        header = ["form", "activations at run time", *(f"{primary} @{b}" for b in BATCHES),
                  *(f"agree @{b}" for b in BATCHES), "spread (points)", "s @1", "s @32"]
        table = []
        forms = list(dict.fromkeys(r["form"] for r in mrows))
        for form in forms:
            f = {r["batch"]: r for r in mrows if r["form"] == form}
            mark = lambda b, text: f"**{text}**" if f[b]["default_batch"] == b else text  # noqa: E731
            table.append([form, f[BATCHES[0]]["activations"],
                          *(mark(b, f"{f[b]['metric']:.2f}") for b in BATCHES),
                          *(mark(b, f"{f[b]['agreement']:.2f}") for b in BATCHES),
                          f"{spreads[(model, form)]['metric']:.2f}", f"{f[1]['seconds']:.1f}", f"{f[32]['seconds']:.1f}"])
        lines += md_table(header, table, left=2) + [""]
    return "\n".join(lines)


@click.command()
@click.option("--models", default=",".join(MODELS), callback=model_list, show_default=True)
@click.option("--shared", type=click.Path(path_type=Path), default=DEFAULT_SHARED, show_default=True)
@click.option("--work", type=click.Path(path_type=Path), default=Path("/tmp/bert2onnxq-batch"), show_default=True)
@click.option("--json", "json_path", type=click.Path(path_type=Path))
@click.option("--markdown", "md_path", type=click.Path(path_type=Path))
def main(models, shared, work, json_path, md_path):
    report = {"command": "python benchmarks/batch_dependence.py " + " ".join(sys.argv[1:]), "environment": environment(),
              "batches": BATCHES, "rows": []}
    for name in models:
        report["rows"] += run_model(name, shared, work)
        save(report, json_path, md_path, markdown)
    header = ["model", "form", *(f"@{b}" for b in BATCHES), "spread"]
    spreads = spread(report["rows"])
    table = []
    for (model, form), s in spreads.items():
        f = {r["batch"]: r for r in report["rows"] if r["model"] == model and r["form"] == form}
        table.append([model, form, *(f"{f[b]['metric']:.2f}" for b in BATCHES), f"{s['metric']:.2f}"])
    out.print(console_table("metric by validation batch", header, table, left=2))


if __name__ == "__main__":
    main()
