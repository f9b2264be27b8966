"""Post-training vs quantization-aware fine-tuned (`convert --finetune`), side by side on the shared
models' full dev sets: Q-BERT's mixes and uniform low-bit neuron-group grids, each against the same
model's FP32 export (metric, agreement, logit error), with the fine-tuning's steps and wall time.

    python benchmarks/finetune_table.py --models minilm-l6-sst2,minilm-l6-mrpc --rows u2,qb23 \
        --json benchmarks/results/finetune_table.json --markdown benchmarks/results/finetune_table.md

`--reuse` keeps converted files already in --work (their plans say how they were made); FP32 runs are
kept there for later runs too. `--merge` adds this run's rows to the --json file's, replacing rows made
the same way (model, row, recipe). The tables are saved after each file, so a stopped run keeps its rows.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    CALIB_SAMPLES,
    DEFAULT_SHARED,
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
from tables import console_table, earlier_rows, md_checks, md_table, merged, print_checks, save  # noqa: E402

from bert2onnxq.quantize.finetune import FinetuneJob, FinetuneSettings  # noqa: E402

NEURON = {"granularity": "neuron-group", "groups": 128, "symmetric": False}
# row -> (label, convert options); qbert rows run the Hessian on the task's train data
ROWS = {
    "qb23": ("Q-BERT mix 2/3", {"method": "qbert", "mix": (2, 3)}),
    "qb3": ("Q-BERT avg 3", {"method": "qbert", "avg_bits": 3.0}),
    "qb23g": ("Q-BERT mix 2/3, GPTQ", {"method": "qbert", "mix": (2, 3), "rounding": "gptq"}),
    "qb3g": ("Q-BERT avg 3, GPTQ", {"method": "qbert", "avg_bits": 3.0, "rounding": "gptq"}),
    "u2": ("uniform 2-bit neuron groups (ACIQ)", {"method": "aciq", "bits": 2, **NEURON}),
    "u3": ("uniform 3-bit neuron groups (ACIQ)", {"method": "aciq", "bits": 3, **NEURON}),
    "u2g": ("uniform 2-bit neuron groups (ACIQ), GPTQ", {"method": "aciq", "bits": 2, **NEURON, "rounding": "gptq"}),
    "u3g": ("uniform 3-bit neuron groups (ACIQ), GPTQ", {"method": "aciq", "bits": 3, **NEURON, "rounding": "gptq"}),
}
TARGET_DROP = 2.3  # Q-BERT's claim: within 2.3 points of FP32


def row_options(task: str, calib: dict, spec: dict):
    from bert2onnxq.methods import REGISTRY, convert_options

    spec = {**(REGISTRY[spec["method"]].preset or {}), **spec}  # the method's defaults, as the CLI applies them
    if spec["method"] == "qbert":
        spec.update(task=task, data_dir=calib.get("data_dir"), calib_file=calib.get("data_file"))
    return convert_options(**spec)


def recipe_tag(s: FinetuneSettings) -> str:
    """The recipe in file names: the lr, and what differs from 600 steps, no hidden states, grouped, the last step kept."""
    return "".join([f"-s{s.steps}" if s.steps != 600 else "", f"-lr{s.lr:g}", f"-h{s.hidden_weight:g}" if s.hidden_weight else "",
                    "" if s.group_by_length else "-ng", "" if s.keep == "last" else f"-{s.keep}"])


def run_model(name: str, shared: Path, work: Path, rows: list[str], settings: FinetuneSettings, reuse: bool) -> Iterator[dict]:
    """Each row's post-training and fine-tuned results, one at a time (the caller saves after each)."""
    from bert2onnxq.convert import convert
    from bert2onnxq.onnx_io import model_metadata
    from bert2onnxq.plan import QuantPlan
    from bert2onnxq.validate import ReferenceCache, validate

    task = MODELS[name]
    fp32, _ = fp32_export(shared / "models" / name, work / name)
    data = {"data_file": shared / SQUAD_FILE} if task == "squad" else {"data_dir": shared / "data" / "glue"}
    calib = train_data(shared, task)
    calibrate = calibrator(task, calib)  # GPTQ's inputs
    cache = ReferenceCache(work / "fp32-runs")  # on disk: separate runs score against one FP32 run
    for row in rows:
        label, spec = ROWS[row]
        for tuned in (False, True):
            path = work / name / f"{row}{'-ft' + recipe_tag(settings) if tuned else ''}.onnx"
            t0 = time.perf_counter()
            if not (reuse and path.is_file()):
                job = FinetuneJob(settings, task, calib.get("data_dir"), calib.get("data_file")) if tuned else None
                convert(str(fp32), path, row_options(task, calib, spec), finetune=job, calibrate=calibrate,
                        log=lambda line: err.print(line))
            convert_s = time.perf_counter() - t0
            plan = QuantPlan.from_json(model_metadata(path)["plan"])
            r = validate(path, task, reference=fp32, threads=THREADS, reference_cache=cache, **data)
            primary = r["primary_metric"]
            ft = plan.finetune
            x = {"model": name, "task": task, "row": row, "label": label, "finetuned": tuned,
                 "plan": plan.summary(), "primary_metric": primary, "metric": r["model"]["metrics"][primary],
                 "fp32_metric": r["reference"]["metrics"][primary], "drop": r["comparison"]["drop"][primary],
                 "agreement": r["comparison"]["agreement"], "logit_rel_rms": r["comparison"]["logit_rel_rms"],
                 "batch": r["protocol"]["batch_size"], "mib": path.stat().st_size / 2**20,
                 "convert_seconds": round(convert_s, 1) if not (reuse and convert_s < 1) else None,
                 "finetune": {k: ft.get(k) for k in ("steps", "batch_size", "lr", "temperature", "hidden_weight", "group_by_length",
                                                     "keep", "kept_step", "seconds", "examples", "loss_first", "loss_last", "agreement")}
                 if ft else None}
            err.print(f"{name:16s} {label:38s} {'fine-tuned' if tuned else 'post-training':13s} {primary} {x['metric']:.2f} "
                      f"(FP32 {x['fp32_metric']:.2f}, drop {x['drop']:+.2f}) agree {x['agreement']:.2f}%")
            yield x


def _key(row: dict) -> tuple:
    ft = row["finetune"] or {}
    return (row["model"], row["row"], row["finetuned"], ft.get("steps"), ft.get("lr"), ft.get("hidden_weight") or 0.0,
            bool(ft.get("group_by_length")), ft.get("keep") or "last")


def _recipe(ft: dict) -> str:
    return (f"{ft['steps']} steps, lr {ft['lr']:g}"
            + (f", hidden-state MSE x{ft['hidden_weight']:g}" if ft.get("hidden_weight") else "")
            + (", grouped by length" if ft.get("group_by_length") else "")
            + (f", kept the best check (step {ft['kept_step']})" if (ft.get("keep") or "last") != "last" else ""))


def checks(rows: list[dict]) -> list[dict]:
    return [{"target": f"{r['model']} {r['label']} fine-tuned ({_recipe(r['finetune'])}) within {TARGET_DROP} points of FP32",
             "value": f"drop {r['drop']:+.2f} ({r['primary_metric']} {r['metric']:.2f} vs {r['fp32_metric']:.2f})",
             "pass": r["drop"] <= TARGET_DROP} for r in rows if r["finetuned"]]


def _ordered(rows: list[dict]) -> list[dict]:
    """By model (first seen), row, then post-training before its fine-tuned recipes (merged runs interleave)."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    def order(r: dict) -> tuple:
        ft = r["finetune"] or {}
        return (models.index(r["model"]), list(ROWS).index(r["row"]), r["finetuned"], ft.get("hidden_weight") or 0.0,
                ft.get("steps") or 0, ft.get("lr") or 0.0, bool(ft.get("group_by_length")), ft.get("keep") or "last")

    return sorted(rows, key=order)


def _off_default(ft: dict) -> tuple[str, str, str, str]:
    """How a recipe differs from the tool's defaults: (steps or hidden states, lr, grouping, the step kept); "" where
    it does not."""
    d = FinetuneSettings
    return (", ".join(x for x in (f"{ft['steps']} steps" if ft["steps"] != 600 else "",
                                  f"hidden-state MSE x{ft['hidden_weight']:g}" if ft.get("hidden_weight") else "") if x),
            f"lr {ft['lr']:g}" if ft["lr"] != d.lr else "",
            "" if bool(ft.get("group_by_length")) == d.group_by_length else "not grouped",
            "" if (ft.get("keep") or "last") == d.keep else f"kept the {ft.get('keep') or 'last'} step")


def summary(rows: list[dict]) -> list[str]:
    """One line per plan, one column per model: post-training -> fine-tuned, by the default recipe where it ran."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    header, table = ["plan"], []
    for m in models:
        r = next(r for r in rows if r["model"] == m)
        header.append(f"{m}: {r['primary_metric']} (FP32 {r['fp32_metric']:.2f})")
    for row, (label, _) in ROWS.items():
        line = [f"{label} (`{row}`)"]
        for m in models:
            post = [r for r in rows if (r["model"], r["row"], r["finetuned"]) == (m, row, False)]
            tuned = sorted((r for r in rows if (r["model"], r["row"], r["finetuned"]) == (m, row, True)),
                           key=lambda r: [bool(x) for x in _off_default(r["finetune"])])  # the defaults first
            if not post or not tuned:
                line.append("not run")
                continue
            ft, t = tuned[0]["finetune"], tuned[0]
            differs = [x for x in _off_default(ft) if x]
            note = f" [{', '.join(differs)}]" if differs else ""
            line.append(f"{post[0]['metric']:.2f} → {t['metric']:.2f} (drop {t['drop']:+.2f}; {t['agreement']:.2f}%){note}")
        table.append(line)
    return md_table(header, table, left=set(range(len(header))))


def markdown(report: dict) -> str:
    rows = _ordered(report["rows"])
    intro = (f"Generated by `{report['command']}` on {report['environment']['machine']}, ONNX Runtime "
             f"{report['environment']['onnxruntime']}, bert2onnxq commit {report['environment']['git_commit']}. "
             "8-bit dynamic activations, int8 embeddings, nearest rounding unless the row says GPTQ (`--rounding gptq`, "
             f"searched ranges, {CALIB_SAMPLES} calibration samples; fine-tuned, it starts from GPTQ's integers, each "
             "weight where GPTQ's compensated weight sat in its cell, and keeps GPTQ's grid); fine-tuned rows: `convert --finetune` "
             "with the steps shown (batch 16, lr as shown, T 2, logits distilled from FP32 on the task's "
             "train split, plus the hidden states' MSE where shown; batches grouped by length where shown, "
             "cut from the shuffle in order otherwise). "
             "Each file scored at `validate`'s default batch against the FP32 export.")
    lines = ["# Post-training vs quantization-aware fine-tuning", "", intro, "",
             "Summary: post-training → fine-tuned (drop from FP32; agreement), with the default recipe "
             f"(600 steps, lr {FinetuneSettings.lr:g}, grouped by length) unless the cell names another.", ""]
    lines += summary(rows) + ["", "Every run:", ""]
    header = ["model", "row", "", "metric", "FP32", "drop", "agreement %", "logit rel RMS", "MiB", "fine-tuning"]
    table = []
    for r in rows:
        ft = r["finetune"]
        how = f"{_recipe(ft)}, {ft['seconds']:.0f} s" if ft else "-"
        table.append([r["model"], r["label"], "fine-tuned" if r["finetuned"] else "post-training",
                      f"{r['primary_metric']} {r['metric']:.2f}", f"{r['fp32_metric']:.2f}", f"{r['drop']:+.2f}",
                      f"{r['agreement']:.2f}", f"{r['logit_rel_rms']:.4f}", f"{r['mib']:.2f}", how])
    lines += md_table(header, table, left={0, 1, 2, 9}) + [""] + md_checks(checks(rows))
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--models", default=",".join(MODELS), callback=model_list, show_default=True)
@click.option("--rows", default="qb23,u2", show_default=True, help=f"Comma-separated: {', '.join(ROWS)}.")
@click.option("--steps", type=click.IntRange(1), default=600, show_default=True)
@click.option("--shared", type=click.Path(path_type=Path), default=DEFAULT_SHARED, show_default=True)
@click.option("--work", type=click.Path(path_type=Path), default=Path("/tmp/bert2onnxq-finetune"), show_default=True)
@click.option("--lr", type=float, default=FinetuneSettings.lr, show_default=True, help="convert's --finetune-lr.")
@click.option("--hidden-weight", type=float, default=0.0, show_default=True, help="Weight of the hidden states' MSE.")
@click.option("--group-by-length/--no-group-by-length", "grouped", default=True, show_default=True,
              help="Fine-tuning batches of similar lengths (convert's --finetune-group-by-length).")
@click.option("--keep", type=click.Choice(["last", "best"]), default=FinetuneSettings.keep, show_default=True,
              help="convert's --finetune-keep: the last step, or the held-out check with the lowest distillation loss.")
@click.option("--reuse", is_flag=True, help="Keep converted files already in --work.")
@click.option("--merge", is_flag=True, help="Add to the --json file's rows (same model, row and recipe: replaced).")
@click.option("--json", "json_path", type=click.Path(path_type=Path))
@click.option("--markdown", "md_path", type=click.Path(path_type=Path))
def main(models, rows, steps, lr, hidden_weight, grouped, keep, shared, work, reuse, merge, json_path, md_path):
    """Post-training vs fine-tuned quantized files, full dev sets."""
    names = [r.strip() for r in rows.split(",") if r.strip()]
    unknown = [r for r in names if r not in ROWS]
    if unknown:
        raise click.BadParameter(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    command, kept = earlier_rows(json_path, merge, "python benchmarks/finetune_table.py " + " ".join(sys.argv[1:]))
    report = {"command": command, "environment": environment(), "rows": []}
    settings = FinetuneSettings(steps=steps, lr=lr, hidden_weight=hidden_weight, group_by_length=grouped, keep=keep)
    new = []
    for name in models:
        for x in run_model(name, shared, work, names, settings, reuse):
            new.append(x)
            report["rows"] = merged(kept, new, _key)
            save(report, json_path, md_path, markdown)  # after each file: a stopped run keeps what it measured
    out.print(console_table("post-training vs fine-tuned", ["model", "row", "", "metric", "drop", "agreement"],
                            [[r["model"], r["label"], "ft" if r["finetuned"] else "ptq", f"{r['metric']:.2f}",
                              f"{r['drop']:+.2f}", f"{r['agreement']:.2f}"] for r in report["rows"]], left={0, 1, 2}))
    print_checks(out, checks(report["rows"]))


if __name__ == "__main__":
    main()
