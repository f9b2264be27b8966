"""What people read: model cards beside converted files, and a sweep's results (CSV, JSON, a Markdown
table laid out like the papers', PNG plots). Pure formatting of rows computed elsewhere."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import time
from pathlib import Path

from . import __version__
from .onnx_io import write_atomic

MIB = 2**20


def layer_bits(plan) -> dict:
    """Parameter-weighted mean weight bits per encoder layer, embedding bits, and whether bits vary."""
    per_layer: dict[int, list[int]] = {}
    for t in plan.weights:
        if t.layer is not None:
            acc = per_layer.setdefault(t.layer, [0, 0])
            acc[0] += t.bits * t.num_params
            acc[1] += t.num_params
    layers = [round(per_layer[i][0] / per_layer[i][1], 3) for i in sorted(per_layer)]
    bits = {t.bits for t in plan.weights}
    return {"layers": layers, "layer_index": sorted(per_layer), "embeddings": sorted({t.bits for t in plan.embeddings}),
            "mixed": len(bits) > 1, "mean": (sum(t.bits * t.num_params for t in plan.weights)
                                              / max(1, sum(t.num_params for t in plan.weights)))}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _fmt(x, spec=".2f", none="n/a") -> str:
    return none if x is None else format(x, spec)


# ---------------------------------------------------------------------------------------------------------------
# model card


def model_card(*, title: str, source: str, fp32: str | None, plan, summary: dict, measured: dict | None = None,
               runtime: dict | None = None, search: dict | None = None, command: str = "",
               plan_file: str | None = None) -> str:
    """A deployment team's one page: what was done, how good, how big, how fast, on what runtime.

    `measured`: {"validation": validate() result with a reference, "latency": latency_ratio() or None}.
    """
    out_path = Path(summary["output"])
    src = plan.source
    lines = [f"# {out_path.name}: {title}", ""]
    lines += ["| | |", "|---|---|",
              f"| Source model | `{source}` ({src.get('head', '?')} head, {src.get('num_layers', '?')} layers, "
              f"hidden {src.get('hidden_size', '?')}) |",
              f"| FP32 reference | `{fp32}` |" if fp32 else "| FP32 reference | (exported on the fly, not kept) |",
              f"| Method | {plan.method} |",
              f"| Plan | {plan.summary()} |"]
    lb = layer_bits(plan)
    if lb["layers"]:
        lines.append(f"| Weight bits per layer | {' '.join(_fmt(b, 'g') for b in lb['layers'])} "
                     f"(layers {lb['layer_index'][0]}..{lb['layer_index'][-1]}; mean {lb['mean']:.2f}) |")
    if plan.finetune:
        f = plan.finetune
        kept = f.get("kept_step", f["steps"])
        reached = next((h["agreement"] for h in f.get("agreement") or [] if h["step"] == kept), None)
        lines.append(f"| Fine-tuned | yes: quantization-aware, distilled from the FP32 model ({f['steps']} steps of {f['batch_size']}, "
                     f"lr {f['lr']:g}, T {f['temperature']:g}, {f['seconds']:.0f} s) on {f['data']}"
                     + (f", starting from {f['start']}" if f.get("start") else "")
                     + (f"; kept step {kept}, the lowest held-out distillation loss" if kept != f["steps"] else "")
                     + (f"; agreement with FP32 {reached:.2f}% on {f['held_out']} held-out train features" if reached is not None else "")
                     + " |")
    lines.append(f"| Plan (JSON) | {f'`{plan_file}`, and ' if plan_file else ''}in the file's metadata, key `bert2onnxq.plan` |")
    size = summary["bytes"]
    fp32_bytes = summary.get("fp32_bytes")
    rel = f" ({100 * size / fp32_bytes:.1f}% of FP32's {fp32_bytes / MIB:.2f} MiB)" if fp32_bytes else ""
    lines.append(f"| File size | {size / MIB:.2f} MiB, {size:,} bytes{rel}; ideal {summary['ideal_bytes'] / MIB:.2f} MiB "
                 f"(bits x params / 8 + scales + FP32 rest) |")
    lines.append("")

    lines += ["## Accuracy vs FP32", ""]
    if measured is None:
        lines += ["Not measured by this command. Before shipping, run:", "",
                  f"    bert2onnxq validate {out_path} --reference FP32.onnx --task TASK", ""]
    else:
        v = measured["validation"]
        metrics, ref, cmp = v["model"]["metrics"], v["reference"]["metrics"], v["comparison"]
        lines += [f"Task `{v['task']}`, {v['examples']} examples ({v['data']['description']}); primary metric "
                  f"`{v['primary_metric']}`. Protocol: max length {v['protocol']['max_length']}, batches of "
                  f"{v['protocol']['batch_size']} padded per batch.", "",
                  "| metric | this model | FP32 | drop (points) | % of FP32 |", "|---|---:|---:|---:|---:|"]
        for k in metrics:
            pct = 100 * metrics[k] / ref[k] if ref.get(k) else None
            lines.append(f"| {k} | {metrics[k]:.2f} | {ref[k]:.2f} | {cmp['drop'][k]:+.2f} | {_fmt(pct)} |")
        agree = "n/a" if cmp["agreement"] is None else f"{cmp['agreement']:.2f}%"
        lines += ["", f"Agreement with FP32 predictions: {agree}; logits: relative RMS error "
                      f"{cmp['logit_rel_rms']:.4f}, max |difference| {cmp['max_logit_diff']:.3g}.", ""]
    if search:
        lines += ["## How this plan was chosen", "", search["text"], ""]

    lines += ["## Latency", ""]
    lat = measured.get("latency") if measured else None
    if lat:
        s = lat["setup"]
        lines += [f"{lat['ratio']:.2f}x the FP32 export's time ({lat['model_ms']:.1f} ms vs {lat['reference_ms']:.1f} ms "
                  f"per run; batch {s['batch']}, sequence {s['seq']}, {s['intra_op_threads']} intra-op thread(s), "
                  f"{s['statistic']} over {s['rounds']} rounds of {s['runs_per_round']} runs each) on "
                  f"{cpu_name()}. A short check, not a benchmark: measure on the deployment hardware.", ""]
    else:
        lines += ["Not measured by this command.", ""]

    rt = runtime or (measured["validation"]["model"]["runtime"] if measured else None)
    lines += ["## Runtime", ""]
    if rt:
        lines += [f"- ONNX Runtime {rt['onnxruntime']}, providers {', '.join(rt['providers'])} (device {rt['device']})",
                  f"- Session options: graph optimization {rt['graph_optimization_level']}, intra-op threads "
                  f"{rt['intra_op_num_threads'] or 'default'}, session config {json.dumps(rt['session_config']) or '{}'}",
                  f"- `session.qdq_matmulnbits_accuracy_level`: {rt['qdq_matmulnbits_accuracy_level']} "
                  "(group-wise weights run as MatMulNBits; 4 = int8 activations)"]
    lines += [f"- Activations: {plan.activations.note}", ""]

    lines += ["## Reproduce", "", "```",
              f"bert2onnxq convert --model {fp32 or source} --plan {plan_file or 'PLAN.json'} -o {out_path}"
              + ("" if plan_file else "   # PLAN.json: the bert2onnxq.plan metadata, or convert --plan-out"),
              f"bert2onnxq validate {out_path} --reference {fp32 or 'FP32.onnx'} --task "
              f"{measured['validation']['task'] if measured else 'TASK'}", "```", "",
              f"Made by bert2onnxq {__version__} on {time.strftime('%Y-%m-%d %H:%M %Z')}"
              + (f": `{command}`" if command else "") + ".", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# sweep results


CSV_FIELDS = ["id", "method", "variant", "bits", "status", "options", "primary_metric", "metric", "fp32_metric",
              "pct_of_fp32", "drop", "agreement", "logit_rel_rms", "bytes", "size_mib", "size_ratio", "ideal_bytes",
              "latency_ratio", "model_ms", "fp32_ms", "mean_bits", "layer_bits", "error"]


def sort_rows(rows: list[dict]) -> list[dict]:
    order = {m: i for i, m in enumerate(("lq", "aciq", "ocs", "qbert"))}
    return sorted(rows, key=lambda r: (order.get(r["method"], 99), r["variant"], -r["bits"]))


def results_csv(rows: list[dict]) -> str:
    metric_names = sorted({k for r in rows for k in r.get("metrics", {})})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS + [f"metric:{k}" for k in metric_names]
                            + [f"pct_of_fp32:{k}" for k in metric_names], lineterminator="\n")
    writer.writeheader()
    for r in sort_rows(rows):
        p = r.get("primary_metric")
        lat = r.get("latency") or {}
        lb = r.get("layer_bits") or {}
        flat = {"id": r["id"], "method": r["method"], "variant": r["variant"], "bits": r["bits"], "status": r["status"],
                "options": json.dumps(r["options"], sort_keys=True), "primary_metric": p, "error": r.get("error", "")}
        if r["status"] == "ok":
            flat.update(metric=r["metrics"][p], fp32_metric=r["fp32_metrics"][p], pct_of_fp32=r["pct_of_fp32"][p],
                        drop=r["drop"][p], agreement=r["agreement"], logit_rel_rms=r["logit_rel_rms"],
                        bytes=r["bytes"], size_mib=round(r["bytes"] / MIB, 3), size_ratio=round(r["size_ratio"], 4),
                        ideal_bytes=round(r["ideal_bytes"]), latency_ratio=r.get("latency_ratio"),
                        model_ms=lat.get("model_ms"), fp32_ms=lat.get("reference_ms"), mean_bits=round(lb.get("mean", 0), 3),
                        layer_bits=" ".join(_fmt(b, "g") for b in lb.get("layers", [])))
            for k, v in r["metrics"].items():
                flat[f"metric:{k}"] = v
                flat[f"pct_of_fp32:{k}"] = r["pct_of_fp32"][k]
        writer.writerow(flat)
    return buf.getvalue()


def results_markdown(rows: list[dict], manifest: dict, plots: list[str]) -> str:
    fp32 = manifest["fp32"]
    ident = manifest["identity"]
    primary = fp32["primary_metric"]
    ok = [r for r in sort_rows(rows) if r["status"] == "ok"]
    bits = sorted({r["bits"] for r in rows}, reverse=True)
    variants = list(dict.fromkeys(r["variant"] for r in sort_rows(rows)))
    by = {(r["variant"], r["bits"]): r for r in rows}
    rt = fp32["runtime"]
    lines = [f"# Sweep: {Path(ident['source']).name} on {ident['task']}", "",
             f"- Model: `{ident['source']}`; FP32 export `{fp32['path']}` ({fp32['bytes'] / MIB:.2f} MiB)",
             f"- Data: {ident['task']} {fp32['data']}, {fp32['examples']} examples"
             + (f" (first {ident['limit']} only)" if ident.get("limit") else ""),
             "- FP32: " + ", ".join(f"{k} {v:.2f}" for k, v in fp32["metrics"].items()),
             f"- ONNX Runtime {rt['onnxruntime']} {rt['providers'][0]}, {rt['graph_optimization_level']}, "
             f"intra-op threads {rt['intra_op_num_threads'] or 'default'}; validation batch {fp32['protocol']['batch_size']}, "
             f"max length {fp32['protocol']['max_length']}",
             "- Every cell: weights quantized as the row says (bits are the column), 8-bit dynamic activations and "
             "int8 embeddings unless the row says otherwise; size is the .onnx file on disk (3-bit weights are stored "
             "in INT4 containers and 5-7-bit ones in INT8, as ONNX has no narrower types).",
             f"- Command: `{manifest.get('command', '')}`", ""]
    metric_names = list(fp32["metrics"])
    metric_names.sort(key=lambda k: k != primary)
    header = "| Method | " + " | ".join(f"W{b}" for b in bits) + " |"
    rule = "|---|" + "---:|" * len(bits)

    def table(title: str, value) -> list[str]:
        out = [f"## {title}", "", header, rule]
        for v in variants:
            cells = []
            for b in bits:
                r = by.get((v, b))
                cells.append("" if r is None else ("error" if r["status"] != "ok" else value(r)))
            out.append(f"| {v} | " + " | ".join(cells) + " |")
        return out + [""]

    for k in metric_names:
        lines += table(f"{k} (FP32 {fp32['metrics'][k]:.2f}); in brackets: % of FP32",
                       lambda r, k=k: f"{r['metrics'][k]:.2f} ({_fmt(r['pct_of_fp32'][k], '.1f')}%)")
    lines += table(f"File size, MiB (FP32 {fp32['bytes'] / MIB:.2f})", lambda r: f"{r['bytes'] / MIB:.2f}")
    if any(r.get("latency_ratio") for r in ok):
        setup = next(r["latency"]["setup"] for r in ok if r.get("latency"))
        lines += table(f"Latency, x FP32 (batch {setup['batch']}, seq {setup['seq']}, {setup['intra_op_threads']} thread, "
                       f"median of {setup['rounds']} interleaved rounds; lower is faster)",
                       lambda r: _fmt(r.get("latency_ratio"), ".2f"))
    lines += ["## All cells", "",
              f"| cell | method | bits | {primary} | drop | agree % | logit rel. RMS | MiB | x FP32 size | latency x | plan |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in sort_rows(rows):
        if r["status"] != "ok":
            lines.append(f"| `{r['id']}` | {r['variant']} | {r['bits']} | error: {r.get('error', '')} | | | | | | | |")
            continue
        lines.append(f"| `{r['id']}` | {r['variant']} | {r['bits']} | {r['metrics'][primary]:.2f} | {r['drop'][primary]:+.2f} | "
                     f"{_fmt(r['agreement'])} | {r['logit_rel_rms']:.4f} | {r['bytes'] / MIB:.2f} | {r['size_ratio']:.3f} | "
                     f"{_fmt(r.get('latency_ratio'))} | {r['plan_summary']} |")
    lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    lines += ["Cell files: `cells/<cell id>.json` (one per cell, everything above and more); models and their "
              "model cards: `models/<cell id>/`.", ""]
    return "\n".join(lines)


def plot_metric_vs_size(rows: list[dict], manifest: dict, path: Path) -> bool:
    """Primary metric against file size, one line per method variant, bits marked; FP32 as a dashed line.
    Left: every cell; right: zoomed to the cells near FP32, where the methods differ."""
    from matplotlib.figure import Figure

    fp32 = manifest["fp32"]
    primary = fp32["primary_metric"]
    ref = fp32["metrics"][primary]
    ok = [r for r in sort_rows(rows) if r["status"] == "ok"]
    if not ok:
        return False
    fig = Figure(figsize=(11, 5.2), dpi=110)
    full, zoom = fig.subplots(1, 2)
    lines = []
    for variant in dict.fromkeys(r["variant"] for r in ok):
        # joined in bit order: 6- and 8-bit (3- and 4-bit) files share a container, hence a size
        pts = sorted(((r["bytes"] / MIB, r["metrics"][primary], r["bits"]) for r in ok if r["variant"] == variant),
                     key=lambda p: -p[2])
        for ax in (full, zoom):
            line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=variant)
            for x, y, b in pts:
                ax.annotate(f"W{b}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                            color=line.get_color(), annotation_clip=True)
        lines.append(line)
    for ax in (full, zoom):
        fp32_line = ax.axhline(ref, color="black", linestyle="--", linewidth=0.8,
                               label=f"FP32: {ref:.2f} at {fp32['bytes'] / MIB:.1f} MiB")
        ax.set_xlabel("file size, MiB")
        ax.grid(True, which="both", alpha=0.3)
    full.set_ylabel(f"{manifest['identity']['task']} {primary}")
    full.set_title("every cell")
    near = [r["metrics"][primary] for r in ok if r["metrics"][primary] >= ref - 3]
    zoom.set_ylim(ref - 3, max([ref, *near]) + 0.5)
    zoom.set_title("within 3 points of FP32")
    fig.suptitle(f"{Path(manifest['identity']['source']).name}: {primary} vs file size")
    fig.legend(handles=[*lines, fp32_line], loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_atomic(path, buf.getvalue())
    return True


def plot_layer_bits(rows: list[dict], path: Path, title: str = "weight bits per encoder layer") -> bool:
    """Per-layer (parameter-weighted mean) weight bits of every mixed-precision row."""
    from matplotlib.figure import Figure

    mixed = [r for r in rows if r.get("status") == "ok" and (r.get("layer_bits") or {}).get("mixed")]
    if not mixed:
        return False
    fig = Figure(figsize=(7.5, 4.2), dpi=120)
    ax = fig.subplots()
    for r in mixed:
        lb = r["layer_bits"]
        ax.step(lb["layer_index"], lb["layers"], where="mid", marker="o",
                label=f"{r['variant']} (mean {lb['mean']:.2f} bits)")
    ax.set_xlabel("encoder layer")
    ax.set_ylabel("weight bits (mean over the layer's matrices)")
    ax.set_title(title)
    ax.set_ylim(0, 9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_atomic(path, buf.getvalue())
    return True


def write_results(out: Path, rows: list[dict], manifest: dict) -> dict:
    """results.json / .csv / .md and the plots, rebuilt from all rows."""
    out = Path(out)
    files = {}
    plots = []
    if plot_metric_vs_size(rows, manifest, out / "metric_vs_size.png"):
        plots.append("metric_vs_size.png")
    if plot_layer_bits(rows, out / "layer_bits.png"):
        plots.append("layer_bits.png")
    files["plots"] = [str(out / p) for p in plots]
    write_atomic(out / "results.json", json.dumps({"sweep": manifest, "rows": sort_rows(rows)}, indent=1))
    write_atomic(out / "results.csv", results_csv(rows))
    write_atomic(out / "results.md", results_markdown(rows, manifest, plots))
    files.update(json=str(out / "results.json"), csv=str(out / "results.csv"), markdown=str(out / "results.md"))
    return files


def conversion_card(source, plan_out, command: str, model_path: Path, summary: dict) -> str:
    """The card `convert` writes beside its output: plan, size and the runtime that loads it (not validated)."""
    from .onnx_io import file_bytes
    from .runtime import make_runner

    plan = summary["plan"]
    runtime = make_runner(Path(model_path)).describe()  # also proves ONNX Runtime loads the file
    fp32 = source if str(source).endswith(".onnx") else None
    summary = {**summary, "ocs": plan.ocs_overhead(), **({"fp32_bytes": file_bytes(Path(fp32))} if fp32 else {})}
    return model_card(title=plan.summary().split(":", 1)[0] + " conversion", source=source, fp32=fp32, plan=plan,
                      summary=summary, runtime=runtime, command=command, plan_file=str(plan_out) if plan_out else None)


# sensitivity


def sensitivity_markdown(report: dict) -> str:
    """The ranked table of `bert2onnxq sensitivity`."""
    p, modes = report["primary_metric"], report["modes"]
    full = report["full"]
    lines = [f"# Sensitivity of `{report['plan_summary']}`", "",
             f"Task `{report['task']}`, {report['data']}; FP32 {p} {report['fp32_metric']:.2f}, the whole plan "
             f"{full['metric']:.2f} (drop {full['drop']:+.2f}, agreement {_fmt(full['agreement'])}%, logit rel. RMS "
             f"{full['logit_rel_rms']:.4f}). Ranked by the output (logit) error of the unit quantized alone, then its drop: the metric on a sample moves by whole examples.", ""]
    if report.get("command"):
        lines += [f"Command: `{report['command']}`", ""]
    header = ["rank", "unit"]
    for m in modes:
        what = "alone (rest FP32)" if m == "only" else "all but it"
        header += [f"{what}: drop", "agree %", "logit err"]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---:", "---"] + ["---:"] * (3 * len(modes))) + "|"]
    rows = {r["unit"]: r for r in report["rows"]}
    for i, unit in enumerate(report["ranking"], 1):
        r = rows[unit]
        cells = [str(i), unit]
        for m in modes:
            cells += [f"{r[m]['drop']:+.2f}", _fmt(r[m]["agreement"]), f"{r[m]['logit_rel_rms']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    kept = report.get("keep_worst")
    if kept:
        how = (f"at {kept['bits']} bits (LQ per channel)" if kept.get("bits") else
               f"FP32 (`--skip {' --skip '.join(kept['skip'])}`)")
        lines += ["", f"Keeping the worst {len(kept['units'])} {how} ({', '.join(kept['units'])}): "
                      f"{p} {kept['metric']:.2f}, drop {kept['drop']:+.2f} "
                      f"(whole plan {full['drop']:+.2f}), {kept['bytes'] / MIB:.2f} MiB vs {full['bytes'] / MIB:.2f} MiB. "
                      f"Plan: `{kept['plan']}`. Chosen on the same sample it is scored on: validate it on other data."]
    return "\n".join(lines) + "\n"


def plot_sensitivity(report: dict, path: Path) -> None:
    """Per unit: the drop quantized alone and with all but it quantized."""
    from matplotlib.figure import Figure

    rows = report["rows"]
    fig = Figure(figsize=(max(6.0, 0.35 * len(rows) + 2), 4.2), dpi=120)
    ax = fig.subplots()
    width = 0.8 / len(report["modes"])
    for i, mode in enumerate(report["modes"]):
        label = "this unit alone quantized" if mode == "only" else "all but this unit quantized"
        ax.bar([j + i * width for j in range(len(rows))], [r[mode]["drop"] for r in rows], width, label=label)
    ax.axhline(report["full"]["drop"], color="gray", linestyle="--", linewidth=1, label="whole plan")
    ax.set_xticks([j + width * (len(report["modes"]) - 1) / 2 for j in range(len(rows))])
    ax.set_xticklabels([r["unit"].removeprefix("layer ") for r in rows], rotation=60 if len(rows) > 12 else 0, fontsize=7)
    ax.set_xlabel("encoder layer" + (" and role" if report["by"] == "role" else ""))
    ax.set_ylabel(f"{report['primary_metric']} drop vs FP32 (points)")
    ax.set_title(f"{report['task']}: {report['plan_summary'].split(':')[0]} sensitivity", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_atomic(path, buf.getvalue())
