"""Q-BERT table: Hessian-guided mixed bits vs uniform bits vs the same bits in reverse Omega order.

For every shared model: export once to FP32 ONNX, compute Q-BERT's Hessian analysis once (the top
eigenvalue of each encoder layer's weights over train batches), then convert the FP32 export every
way below and validate each file side by side with FP32 (same features, same session settings).

    python benchmarks/qbert_table.py --models minilm-l6-sst2
    python benchmarks/qbert_table.py --json benchmarks/results/qbert_table.json --markdown benchmarks/results/qbert_table.md

Rows (per model), all on neuron-group ranges (128 groups per matrix, never across a head), with
8-bit dynamic activations and int8 embeddings; the grid is the qbert default (asymmetric, ACIQ):
  * FP32: the reference export.
  * uniform 4 / 3 / 2 bits: every layer the same (`convert --method aciq --granularity neuron-group`).
  * Q-BERT avg 3 bits over 2,3,4 (Hessian order), and the same bits in reverse Omega order (control).
  * Q-BERT fixed 2/3 mix (the more sensitive half of the layers 3 bits), and reversed.
  * --grid-ablation: uniform 3 and 2 bits on the four grids (symmetric / asymmetric x LQ / ACIQ) and
    Q-BERT avg 3 / mix 2/3 on the LQ asymmetric grid: what the qbert defaults are chosen from.
The Hessian is computed once per model (its time is reported); the other Q-BERT rows re-decide the
bits from the recorded analysis (`convert --hessian-from`), which is what the same command would get.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_SHARED,
    METRIC_LABEL,
    MODELS,
    SQUAD_FILE,
    THREADS,
    attention_matmuls,
    describe_task,
    environment,
    err,
    fp32_export,
    linear_kernels,
    model_list,
    out,
    reference_cache,
    run_validate,
    train_data,
)
from tables import console_table, md_checks, md_table, print_checks, save  # noqa: E402

GROUPS = 128


@dataclass(frozen=True)
class Row:
    label: str
    kind: str  # fp32 | uniform | qbert
    bits: int | None = None  # uniform
    avg_bits: float | None = None  # qbert budget
    mix: tuple[int, int] | None = None  # qbert fixed mix
    order: str = "hessian"
    symmetric: bool = False
    clip: str = "aciq"  # none | aciq
    activations: bool = True  # False: FP32 activations (weights-only ablation)

    @property
    def session(self) -> dict:
        # weights only: keep ONNX Runtime from fusing DQ -> MatMul into MatMulNBits with int8 activations
        return {} if self.activations else {"session.qdq_matmulnbits_accuracy_level": "0"}

    @property
    def slug(self) -> str:
        if self.kind == "fp32":
            return "fp32"
        grid = f"{'sym' if self.symmetric else 'asym'}-{'aciq' if self.clip == 'aciq' else 'lq'}"
        grid += "" if self.activations else "-a32"
        if self.kind == "uniform":
            return f"uniform-w{self.bits}-{grid}"
        what = f"mix{self.mix[0]}{self.mix[1]}" if self.mix else f"avg{self.avg_bits:g}"
        return f"qbert-{what}-{self.order}-{grid}"


def rows(grid_ablation: bool) -> list[Row]:
    specs = [Row("FP32", "fp32"),
             Row("uniform 4-bit", "uniform", bits=4),
             Row("uniform 3-bit", "uniform", bits=3),
             Row("Q-BERT avg 3 (2,3,4)", "qbert", avg_bits=3.0),
             Row("  same bits, reverse Omega", "qbert", avg_bits=3.0, order="reverse"),
             Row("Q-BERT mix 2/3", "qbert", mix=(2, 3)),
             Row("  same bits, reverse Omega", "qbert", mix=(2, 3), order="reverse"),
             Row("uniform 2-bit", "uniform", bits=2)]
    if grid_ablation:
        for bits in (3, 2):
            for symmetric in (True, False):
                for clip in ("none", "aciq"):
                    if (symmetric, clip) != (False, "aciq"):  # the default grid is in the main rows
                        specs.append(Row(f"uniform {bits}-bit", "uniform", bits=bits, symmetric=symmetric, clip=clip))
        specs.append(Row("Q-BERT avg 3 (2,3,4)", "qbert", avg_bits=3.0, clip="none"))
        specs.append(Row("Q-BERT mix 2/3", "qbert", mix=(2, 3), clip="none"))
        # where the loss comes from: the same weights with FP32 activations
        specs.append(Row("uniform 3-bit, FP32 act.", "uniform", bits=3, activations=False))
        specs.append(Row("Q-BERT avg 3, FP32 act.", "qbert", avg_bits=3.0, activations=False))
    return specs


def produce(row: Row, fp32: Path, work: Path, task: str, data: dict, hessian: dict | None,
            hessian_batch_size: int) -> tuple[Path, dict]:
    from dataclasses import replace

    from bert2onnxq.convert import convert
    from bert2onnxq.methods import ConvertOptions, convert_options
    from bert2onnxq.methods.qbert import QBertOptions

    if row.kind == "fp32":
        return fp32, {"bytes": sum(f.stat().st_size for f in fp32.parent.glob("model.onnx*"))}
    path = work / "qbert" / f"{row.slug}.onnx"
    common = dict(granularity="neuron-group", groups=GROUPS, symmetric=row.symmetric,
                  act_bits=8 if row.activations else None, emb_bits=8)
    if row.kind == "uniform":
        options = convert_options(method="aciq" if row.clip == "aciq" else "lq", bits=row.bits, **common)
    else:
        qb = QBertOptions(task=task, data_dir=data.get("data_dir"), calib_file=data.get("data_file"),
                          avg_bits=row.avg_bits or 3.0, mix=row.mix, order=row.order, batch_size=hessian_batch_size,
                          threads=1, hessian=hessian)
        options = ConvertOptions(method_options=replace(qb, clip=row.clip), **common)
    start = time.perf_counter()
    with _progress() as factory:
        result = convert(str(fp32), path, options, progress=factory)
    plan = result["plan"]
    layers = sorted({t.layer for t in plan.weights})
    bits = [next(t.bits for t in plan.weights if t.layer == layer) for layer in layers]
    sizes = [sum(t.num_params for t in plan.weights if t.layer == layer) for layer in layers]
    return path, {"bytes": result["bytes"], "ideal_bytes": result["ideal_bytes"],
                  "container_ideal_bytes": result["container_ideal_bytes"], "bits_by_layer": bits,
                  "avg_bits": sum(b * s for b, s in zip(bits, sizes)) / sum(sizes), "plan_summary": plan.summary(),
                  "analysis": plan.analysis, "seconds": round(time.perf_counter() - start, 2)}


class _progress:
    """A rich progress bar for the Hessian (stderr)."""

    def __enter__(self):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bars = Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=err, transient=True)
        self.bars.__enter__()

        def factory(label, total):
            task_id = self.bars.add_task(label, total=total)
            return lambda n: self.bars.advance(task_id, n)
        return factory

    def __exit__(self, *exc):
        return self.bars.__exit__(*exc)


def bench_model(name: str, shared: Path, work_root: Path, specs: list[Row], squad_limit: int | None,
                reuse_hessian: bool, hessian_batch_size: int) -> dict:
    task = MODELS[name]
    work = work_root / name
    fp32, export_info = fp32_export(shared / "models" / name, work)
    (work / "qbert").mkdir(parents=True, exist_ok=True)
    eval_data = {"data_file": shared / SQUAD_FILE} if task == "squad" else {"data_dir": shared / "data" / "glue"}
    calib = train_data(shared, task)
    limit = squad_limit if task == "squad" else None
    entry = {"model": name, "task": task, "fp32_path": str(fp32), "export": export_info, "rows": [],
             "squad_limit": limit}
    err.print(f"[bold]{name}[/] ({task}): FP32 export at {fp32}")
    saved = work / "qbert" / "hessian-plan.json"
    hessian = None
    if reuse_hessian and saved.is_file():
        from bert2onnxq.plan import QuantPlan

        hessian = QuantPlan.load(saved).analysis["hessian"]
        entry["hessian_reused"] = str(saved)
    start = time.perf_counter()
    primary = None
    attention = attention_matmuls(fp32)
    with reference_cache(fp32):
        for spec in specs:
            t0 = time.perf_counter()
            path, info = produce(spec, fp32, work, task, calib, hessian, hessian_batch_size)
            if spec.kind == "qbert" and hessian is None:  # the first Q-BERT row computed it: reuse it
                hessian = info["analysis"]["hessian"]
                saved.write_text(json.dumps({"version": 1, "method": "qbert", "weights": [],
                                             "analysis": {"hessian": hessian}}, indent=1))
                entry["hessian"] = hessian
            result, wall = run_validate(path, task, None if spec.kind == "fp32" else fp32, eval_data, limit,
                                        spec.session)
            if primary is None:
                primary = describe_task(entry, result)
            row = {"spec": asdict(spec), "slug": spec.slug, "label": spec.label, "produce": info,
                   "kernels": linear_kernels(path, attention, spec.session),
                   "metrics": result["model"]["metrics"], "infer_seconds": result["model"]["seconds"],
                   "validate_wall_seconds": wall}
            if "comparison" in result:
                cmp = result["comparison"]
                row.update(drop=cmp["drop"], agreement=cmp["agreement"], logit_rel_rms=cmp["logit_rel_rms"],
                           max_logit_diff=cmp["max_logit_diff"])
            else:
                row.update(drop={k: 0.0 for k in row["metrics"]}, agreement=100.0, logit_rel_rms=0.0,
                           max_logit_diff=0.0)
            row["row_wall_seconds"] = round(time.perf_counter() - t0, 1)
            entry["rows"].append(row)
            err.print(f"  {spec.slug:34s} {primary} {row['metrics'][primary]:6.2f} drop {row['drop'][primary]:+6.2f} "
                      f"agree {row['agreement'] or 0:6.2f}%  {info['bytes'] / 2**20:6.2f} MiB  "
                      f"bits {info.get('bits_by_layer', '-')}  ({row['row_wall_seconds']:.0f} s)")
    if "hessian" not in entry and hessian is not None:
        entry["hessian"] = hessian
    ref = entry["rows"][0]["metrics"][primary]
    for r in entry["rows"]:
        r["pct_of_fp32"] = 100.0 * r["metrics"][primary] / ref if ref else None
    entry["checks"] = checks(entry)
    entry["wall_seconds"] = round(time.perf_counter() - start, 1)
    return entry


def _find(entry, slug):
    return next((r for r in entry["rows"] if r["slug"] == slug), None)


def checks(entry: dict) -> list[dict]:
    p = entry["primary_metric"]
    out_ = []

    def m(r):
        return r["metrics"][p]

    grid = "asym-aciq"
    hess, rev = _find(entry, f"qbert-avg3-hessian-{grid}"), _find(entry, f"qbert-avg3-reverse-{grid}")
    uni3 = _find(entry, f"uniform-w3-{grid}")
    mix, mix_rev = _find(entry, f"qbert-mix23-hessian-{grid}"), _find(entry, f"qbert-mix23-reverse-{grid}")
    fp32 = entry["rows"][0]
    if hess and uni3:
        out_.append({"target": "Q-BERT avg 3 beats uniform 3-bit (same nominal bits)", "pass": m(hess) > m(uni3),
                     "value": f"{p} {m(hess):.2f} vs {m(uni3):.2f}; agreement {hess['agreement']:.2f} vs "
                              f"{uni3['agreement']:.2f}%; file {hess['produce']['bytes'] / 2**20:.2f} vs "
                              f"{uni3['produce']['bytes'] / 2**20:.2f} MiB"})
    if hess and rev:
        out_.append({"target": "Q-BERT avg 3 beats the same bits in reverse Omega order", "pass": m(hess) > m(rev),
                     "value": f"{p} {m(hess):.2f} vs {m(rev):.2f}"})
    if mix and mix_rev:
        out_.append({"target": "Q-BERT mix 2/3 beats the same bits in reverse Omega order", "pass": m(mix) > m(mix_rev),
                     "value": f"{p} {m(mix):.2f} vs {m(mix_rev):.2f}"})
    if mix:
        gap = m(fp32) - m(mix)
        out_.append({"target": "moonshot: Q-BERT mix 2/3 within 2.3 points of FP32", "pass": gap <= 2.3,
                     "value": f"{p} {m(mix):.2f} vs FP32 {m(fp32):.2f} (gap {gap:+.2f})"})
    h = entry.get("hessian")
    if h and entry["task"] == "sst2" and not entry.get("hessian_reused"):
        out_.append({"target": "Hessian analysis of the SST-2 model under 5 minutes", "pass": h["seconds"] < 300,
                     "value": f"{h['seconds']:.0f} s ({h['batches']} batches of {h['batch_size']}, {h['tokens']} "
                              f"tokens, {h['threads']} thread)"})
    return out_


# ---------------------------------------------------------------------------------------------------------------
# rendering


def _f(x, fmt, dash="—"):
    return dash if x is None else format(x, fmt)


def table_rows(entry: dict) -> tuple[list[str], list[list[str]]]:
    p, s = entry["primary_metric"], entry.get("second_metric")
    lp = METRIC_LABEL.get(p, p)
    header = ["method", "grid", "bits by layer", "avg W bits", lp] + ([METRIC_LABEL.get(s, s)] if s else [])
    header += ["% FP32", f"drop {lp}", "agree %", "logit rel. RMS", "file MiB", "ideal MiB", "linear kernels"]
    cells = []
    for r in entry["rows"]:
        spec, info = r["spec"], r["produce"]
        grid = "-" if spec["kind"] == "fp32" else \
            f"{'sym' if spec['symmetric'] else 'asym'} {'ACIQ' if spec['clip'] == 'aciq' else 'LQ'}"
        grid += "" if spec.get("activations", True) else ", A32"
        bits = " ".join(map(str, info.get("bits_by_layer", []))) or "32"
        row = [r["label"], grid, bits, _f(info.get("avg_bits"), ".2f", "32"), f"{r['metrics'][p]:.2f}"]
        if s:
            row.append(f"{r['metrics'][s]:.2f}")
        row += [_f(r.get("pct_of_fp32"), ".2f"), f"{r['drop'][p]:+.2f}", _f(r["agreement"], ".2f"),
                f"{r['logit_rel_rms']:.4f}", f"{info['bytes'] / 2**20:.2f}",
                _f(info.get("ideal_bytes") and info["ideal_bytes"] / 2**20, ".2f"), r.get("kernels", {}).get("label", "?")]
        cells.append(row)
    return header, cells


def title(entry: dict) -> str:
    n = f"{entry.get('examples', '?')} examples"
    if entry["task"] == "squad":
        n = f"{entry.get('examples', '?')} questions / {entry.get('features', '?')} features"
    return f"{entry['model']} — {entry['task']} ({n})"


def hessian_lines(entry: dict) -> list[str]:
    h = entry.get("hessian")
    if not h:
        return []
    lines = [f"Hessian: {h['batches']} train batches of {h['batch_size']} ({h['tokens']} tokens, {h['data']}), "
             f"power iteration up to {h['max_iter']} steps (tol {h['tol']}), seed {h['seed']}, {h['threads']} torch "
             f"thread: {h['seconds']:.0f} s" + (" (computed beforehand by the same convert call, same settings, and "
                                                "reused here, --reuse-hessian)" if entry.get("hessian_reused") else "") + ".",
             "", "| layer | mean λ | std λ | Ω | iterations (mean) | not converged |", "|---:|---:|---:|---:|---:|---:|"]
    for layer in h["layers"]:
        its = layer["iterations"]
        lines.append(f"| {layer['layer']} | {layer['mean']:.2f} | {layer['std']:.2f} | {layer['omega']:.2f} | "
                     f"{sum(its) / len(its):.1f} | {sum(not c for c in layer['converged'])}/{len(its)} |")
    return lines + [""]


def print_table(entry: dict) -> None:

    header, cells = table_rows(entry)
    out.print(console_table(title(entry), header, cells, left=3))
    for line in hessian_lines(entry):
        out.print(line)
    print_checks(out, entry["checks"])


def markdown(report: dict) -> str:
    meta = report["meta"]
    lines = ["# Q-BERT table", "",
             f"Generated {meta['date']} on {meta['machine']}; onnxruntime {meta['onnxruntime']}, onnx {meta['onnx']}, "
             f"bert2onnxq commit {meta.get('git_commit', '?')}"
             f"{' (with uncommitted package changes)' if meta.get('package_uncommitted_changes') else ''}; "
             f"ONNX Runtime CPU, {THREADS} intra-op threads.", "",
             "Every quantized row: neuron-group weight ranges (128 groups of output columns per matrix, never across "
             "an attention head), 8-bit dynamic activations, int8 per-row embeddings; 3-bit weights are stored in "
             "INT4 containers (ONNX has no INT3), so 'file MiB' counts them as 4 bits while 'ideal MiB' (bits x "
             "params / 8 + scales + FP32 rest) counts the nominal bits. Reverse rows hand the same bits to the layers "
             "in reverse Omega order. Q-BERT fine-tuned after quantizing; these rows are post-training. 'linear "
             "kernels': what ONNX Runtime runs for the 36 encoder MatMuls after its fusions (int8 = "
             "MatMulIntegerToFloat with dynamically quantized uint8 activations; NBits L0 = MatMulNBits with FP32 "
             "activations, session.qdq_matmulnbits_accuracy_level=0, in the A32 ablation rows).", ""]
    for name in sorted(report["models"], key=lambda n: list(MODELS).index(n) if n in MODELS else 99):
        entry = report["models"][name]
        header, cells = table_rows(entry)
        proto = entry.get("protocol", {})
        limit = f", first {entry['squad_limit']} questions" if entry.get("squad_limit") else ""
        lines += [f"## {title(entry)}", "",
                  f"Command: `{entry.get('command', '')}`; max length {proto.get('max_length')}{limit}; wall time "
                  f"{entry.get('wall_seconds', 0) / 60:.1f} min.", ""]
        lines += md_table(header, cells, left=3) + [""] + hessian_lines(entry) + md_checks(entry.get("checks", []))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# CLI


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--models", default=",".join(MODELS), show_default=True, callback=model_list)
@click.option("--squad-limit", type=click.IntRange(1), default=None,
              help="Only the first N SQuAD questions (default: all 2,447 of the held-out file).")
@click.option("--hessian-batch-size", type=click.IntRange(1), default=8, show_default=True,
              help="Train examples (SQuAD: windows) per Hessian batch; 10 batches.")
@click.option("--grid-ablation", is_flag=True, help="Extra rows: the four grids at uniform 3 and 2 bits; LQ Q-BERT.")
@click.option("--reuse-hessian", is_flag=True, help="Reuse the Hessian recorded by an earlier run in --work-dir.")
@click.option("--shared", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_SHARED, show_default=True)
@click.option("--work-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("/tmp/bert2onnxq-bench"),
              show_default=True)
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--markdown", "md_path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--append", is_flag=True, help="Merge into an existing --json file (other models kept) and render all.")
def main(models, squad_limit, hessian_batch_size, grid_ablation, reuse_hessian, shared, work_dir, json_path, md_path,
         append):
    """Q-BERT mixed bits (Hessian order) vs uniform bits vs reverse order, one table per model."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    command = "python benchmarks/qbert_table.py " + " ".join(sys.argv[1:])
    report = {"meta": environment(), "models": {}}
    if append and json_path and json_path.is_file():
        report["models"] = json.loads(json_path.read_text()).get("models", {})
    start = time.perf_counter()
    for name in models:
        entry = bench_model(name, shared, work_dir, rows(grid_ablation), squad_limit, reuse_hessian,
                            hessian_batch_size)
        entry["command"] = command
        entry["environment"] = report["meta"]
        report["models"][name] = entry
        print_table(entry)
        save(report, json_path, md_path, markdown)
    err.print(f"total wall time {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
