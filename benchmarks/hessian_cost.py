"""Where Q-BERT's Hessian time goes, and what the faster path changes: the same train batches run
padded (as before) or each example at its own length, power iteration or Lanczos, on 1 or 2 torch threads, on the three shared
models; per layer the seconds and power iterations; the Omega order and the bits it allocates
(avg 3 over 2/3/4, mix 2/3), which must not change.

    python benchmarks/hessian_cost.py --json benchmarks/results/hessian_cost.json \
        --markdown benchmarks/results/hessian_cost.md

Run it alone on the machine: it is a timing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_SHARED, MODELS, environment, err, model_list, out, train_data  # noqa: E402
from tables import console_table, earlier_rows, md_checks, merged, print_checks, save  # noqa: E402

BATCH_SIZE = {"squad": 4}  # the qbert table's SQuAD setting (10 batches of 4 windows); GLUE: convert's default 8
VARIANTS = {  # name -> (unpadded, torch threads, eigen solver)
    "padded-1": (False, 1, "power"),
    "padded-2": (False, 2, "power"),
    "unpadded-1": (True, 1, "power"),
    "unpadded-2": (True, 2, "power"),
    "lanczos-1": (False, 1, "lanczos"),
    "lanczos-2": (False, 2, "lanczos"),
    "unpadded-lanczos-2": (True, 2, "lanczos"),
}
BEFORE = "padded-1"  # the earlier path
DEFAULT = {"squad": "unpadded-lanczos-2"}  # what convert now runs on 2 cores (GLUE: lanczos-2)
TARGET_SECONDS = 300  # the issue: SQuAD under 5 minutes on 2 cores


def _bits(omegas: list[float]) -> dict:
    from bert2onnxq.numerics import bits as allocation

    return {"avg3": allocation.allocate_bits(omegas, 3.0, (2, 3, 4)), "mix23": allocation.fixed_mix(omegas, 2, 3)}


def run_model(name: str, shared: Path, variants: list[str]) -> list[dict]:
    import torch

    from bert2onnxq.analyse import hessian
    from bert2onnxq.export import load_hf_model

    task = MODELS[name]
    loaded = load_hf_model(str(shared / "models" / name))
    data = train_data(shared, task)
    batches = hessian.calibration_batches(loaded.model, task, loaded.tokenizer, num_batches=10,
                                          batch_size=BATCH_SIZE.get(task, 8), seed=0, **data)
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(int(b["attention_mask"].numel()) for b in batches)
    rows = []
    before = torch.get_num_threads()
    for variant in variants:
        unpadded, threads, solver = VARIANTS[variant]
        torch.set_num_threads(threads)
        try:
            start = time.perf_counter()
            sens = hessian.layer_sensitivities(loaded.model, batches, unpadded=unpadded, solver=solver)
            seconds = time.perf_counter() - start
        finally:
            torch.set_num_threads(before)
        omegas = [s.omega for s in sens]
        rows.append({"model": name, "task": task, "variant": variant, "unpadded": unpadded, "threads": threads,
                     "solver": solver,
                     "batches": len(batches), "batch_size": BATCH_SIZE.get(task, 8),
                     "tokens_computed": real if unpadded else padded, "tokens_real": real, "seconds": round(seconds, 1),
                     "layers": [{"layer": s.layer, "seconds": round(s.seconds, 1), "iterations": s.iterations,
                                 "omega": s.omega, "eigenvalues": s.eigenvalues} for s in sens],
                     "order": sorted(range(len(omegas)), key=lambda i: -omegas[i]), "bits": _bits(omegas)})
        r = rows[-1]
        err.print(f"{name:16s} {variant:11s} {r['seconds']:7.1f} s  tokens {r['tokens_computed']:6d}  "
                  f"order {r['order']}  avg3 {r['bits']['avg3']}  mix23 {r['bits']['mix23']}")
    return rows


def checks(rows: list[dict]) -> list[dict]:
    out_ = []
    for name in dict.fromkeys(r["model"] for r in rows):
        by = {r["variant"]: r for r in rows if r["model"] == name}
        if BEFORE not in by:
            continue
        for variant, r in by.items():
            if variant != BEFORE:
                out_.append({"target": f"{name} {variant}: the same bits as {BEFORE} (avg 3 and mix 2/3)",
                             "value": f"avg3 {r['bits']['avg3']} mix23 {r['bits']['mix23']}",
                             "pass": r["bits"] == by[BEFORE]["bits"]})
        after = DEFAULT.get(by[BEFORE]["task"], "lanczos-2")
        if after in by:
            out_.append({"target": f"{name} default ({after}) faster than {BEFORE}"
                         + (f", under {TARGET_SECONDS} s" if by[BEFORE]["task"] == "squad" else ""),
                         "value": f"{by[after]['seconds']:.0f} s ({by[BEFORE]['seconds'] / by[after]['seconds']:.2f}x faster)",
                         "pass": by[after]["seconds"] < min(by[BEFORE]["seconds"],
                                                            TARGET_SECONDS if by[BEFORE]["task"] == "squad" else 1e9)})
    return out_


def markdown(report: dict) -> str:
    rows = report["rows"]
    lines = ["# Q-BERT Hessian cost", "",
             (f"Generated by `{report['command']}` on {report['environment']['machine']}, torch "
             f"{report['environment'].get('torch', '?')}, bert2onnxq commit {report['environment']['git_commit']}. "
             "10 train batches (seed 0; SQuAD 4 windows each, GLUE 8 examples), power iteration to the "
             "stop rule (tol 1e-3, at most 50), eager attention. `padded`: the batch as one padded tensor "
             "(the earlier path); `unpadded`: each example at its own length, the batch loss their mean; `lanczos`: "
             "padded, Lanczos instead of power iteration (same start vector and stop rule). "
             "The number after the dash is torch threads."), "",
             ("| model | variant | seconds | tokens computed | seconds per layer (0..5) | iterations per layer (mean) "
              "| Omega order | bits avg 3 | bits mix 2/3 |"), "|---|---|---:|---:|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['variant']} | {r['seconds']:.1f} | {r['tokens_computed']:,} | "
                     + " ".join(f"{x['seconds']:.0f}" for x in r["layers"]) + " | "
                     + " ".join(f"{sum(x['iterations']) / len(x['iterations']):.1f}" for x in r["layers"]) + " | "
                     + " ".join(map(str, r["order"])) + f" | {' '.join(map(str, r['bits']['avg3']))} | "
                     f"{' '.join(map(str, r['bits']['mix23']))} |")
    return "\n".join(lines + ["", *md_checks(checks(rows))]) + "\n"


@click.command()
@click.option("--models", default=",".join(MODELS), callback=model_list, show_default=True)
@click.option("--variants", default=",".join(VARIANTS), show_default=True, help=f"Comma-separated: {', '.join(VARIANTS)}.")
@click.option("--shared", type=click.Path(path_type=Path), default=DEFAULT_SHARED, show_default=True)
@click.option("--merge", is_flag=True, help="Add to the --json file's rows (same model and variant: replaced).")
@click.option("--json", "json_path", type=click.Path(path_type=Path))
@click.option("--markdown", "md_path", type=click.Path(path_type=Path))
def main(models, variants, shared, merge, json_path, md_path):
    """Q-BERT Hessian time: padded vs unpadded batches, 1 vs 2 threads; the bits must not change."""
    names = [v.strip() for v in variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise click.BadParameter(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    import torch

    command, kept = earlier_rows(json_path, merge, "python benchmarks/hessian_cost.py " + " ".join(sys.argv[1:]))
    report = {"command": command, "environment": {**environment(), "torch": torch.__version__}, "rows": []}
    new = []
    for name in models:
        new += run_model(name, shared, names)
        rows = merged(kept, new, lambda r: (r["model"], r["variant"]))
        order = list(dict.fromkeys(r["model"] for r in rows))
        report["rows"] = sorted(rows, key=lambda r: (order.index(r["model"]), list(VARIANTS).index(r["variant"])))
        save(report, json_path, md_path, markdown)
    out.print(console_table("Hessian cost", ["model", "variant", "seconds", "tokens", "avg3", "mix23"],
                            [[r["model"], r["variant"], f"{r['seconds']:.1f}", str(r["tokens_computed"]),
                              " ".join(map(str, r["bits"]["avg3"])), " ".join(map(str, r["bits"]["mix23"]))]
                             for r in report["rows"]], left={0, 1}))
    print_checks(out, checks(report["rows"]))


if __name__ == "__main__":
    main()
