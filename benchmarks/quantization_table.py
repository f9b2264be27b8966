"""Quantization table: FP32 vs our LQ / ACIQ conversions vs ONNX Runtime's own quantizers.

For every shared model: export once to FP32 ONNX, then convert / quantize it every way listed below,
validate each file on the model's dev set side by side with the FP32 export (same features, same
ONNX Runtime session settings) and print one table per model.

    python benchmarks/quantization_table.py --models minilm-l6-sst2 --bits 8,4
    python benchmarks/quantization_table.py --models minilm-l6-sst2,minilm-l6-mrpc \
        --json benchmarks/results/quantization_table.json --markdown benchmarks/results/quantization_table.md
    python benchmarks/quantization_table.py --models minilm-l6-squad --append \
        --json benchmarks/results/quantization_table.json --markdown benchmarks/results/quantization_table.md

Rows (per model):
  * FP32: the reference export.
  * ours, per-channel: LQ and ACIQ (Laplace) at every --bits; 8-bit dynamic activations, int8 embeddings.
  * ours, group-wise (group 32): LQ and ACIQ at the --bits among 4, 3, 2.
  * ORT quantize_dynamic (int8 weights per channel, dynamic uint8 activations), when 8 is in --bits.
  * ORT MatMulNBitsQuantizer (RTN, block 32, symmetric; weight-only) at 4 and 2 bits, when in --bits.

The FP32 reference outputs are computed once per model and replayed for every row's comparison
(`validate(..., reference=fp32)` would otherwise re-run the FP32 model for each row); the numbers are
identical, only the time is saved. `--no-reference-cache` turns this off.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_SHARED,
    GROUP_BITS,
    GROUP_SIZE,
    METRIC_LABEL,
    MODELS,
    NBITS_BITS,
    SQUAD_FILE,
    THREADS,
    attention_matmuls,
    copy_metadata,
    copy_tokenizer,
    describe_task,
    environment,
    err,
    fp32_export,
    linear_kernels,
    model_list,
    out,
    reference_cache,
    run_validate,
)
from tables import console_table, md_checks, md_table, print_checks, save  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")



# ---------------------------------------------------------------------------------------------------------------
# rows


@dataclass(frozen=True)
class RowSpec:
    kind: str  # fp32 | ours | ort-dynamic | ort-nbits
    method: str  # label shown in the table
    bits: int | None = None
    granularity: str = "-"
    group_size: int | None = None
    activations: str = "fp32"
    embeddings: str = "fp32"
    session: tuple = ()  # extra ONNX Runtime session config entries (key, value)
    group_kernel: str = "matmulnbits"  # ours, group-wise: matmulnbits | int8 (convert --group-kernel)

    @property
    def slug(self) -> str:
        if self.kind == "fp32":
            return "fp32"
        if self.kind == "ours":
            gran = f"group{self.group_size}" if self.granularity == "group" else self.granularity
            extra = ("-a32" if self.activations == "fp32" else "") + ("-e32" if self.embeddings == "fp32" else "")
            extra += "-i8req" if self.group_kernel == "int8" else ""
            return f"{self.method.split()[0].lower()}-w{self.bits}-{gran}{extra}"
        if self.kind == "ort-dynamic":
            return "ort-dynamic-int8"
        return f"ort-matmulnbits-w{self.bits}-b{self.group_size}"


def row_specs(bits: list[int], baselines: bool = True, ablation: bool = False, int8_group: bool = False) -> list[RowSpec]:
    rows = [RowSpec("fp32", "FP32", 32)]
    for b in sorted(set(bits), reverse=True):
        for method in ("LQ", "ACIQ"):
            rows.append(RowSpec("ours", method, b, "channel", None, "u8 dyn", "i8"))
        if ablation and b == 8:  # where does the 8-bit error come from: weights, activations or embeddings?
            weight_only = (("session.qdq_matmulnbits_accuracy_level", "0"),)  # else ORT fuses DQ->MatMul into
            for method in ("LQ", "ACIQ"):                                   # MatMulNBits with int8 activations
                rows.append(RowSpec("ours", f"{method} (ablation)", b, "channel", None, "fp32", "fp32", weight_only))
            rows.append(RowSpec("ours", "LQ (ablation)", b, "channel", None, "u8 dyn", "fp32"))
        if b in GROUP_BITS:
            for method in ("LQ", "ACIQ"):
                rows.append(RowSpec("ours", method, b, "group", GROUP_SIZE, "i8 blk*", "i8"))
            if int8_group:  # two-level scales multiplied out to int8 at load: ORT's int8 GEMM (convert --group-kernel int8)
                for method in ("LQ", "ACIQ"):
                    rows.append(RowSpec("ours", f"{method} int8 two-level", b, "group", GROUP_SIZE, "u8 dyn", "i8",
                                        group_kernel="int8"))
        if baselines and b == 8:
            rows.append(RowSpec("ort-dynamic", "ORT dynamic", 8, "channel", None, "u8 dyn", "u8"))
        if baselines and b in NBITS_BITS:
            rows.append(RowSpec("ort-nbits", "ORT MatMulNBits", b, "group", GROUP_SIZE, "fp32", "fp32"))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# producing the files


def produce(spec: RowSpec, fp32: Path, work: Path, reuse: bool) -> tuple[Path, dict]:
    """Make the model file of one row; returns (path, info) with bytes and, for ours, ideal bytes."""
    if spec.kind == "fp32":
        size = sum(f.stat().st_size for f in fp32.parent.glob("model.onnx*"))
        return fp32, {"bytes": size}
    folder = work / ("ours" if spec.kind == "ours" else "ort")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.slug}.onnx"
    sidecar = path.with_suffix(".produce.json")
    if reuse and path.is_file() and sidecar.is_file() and sidecar.stat().st_mtime >= fp32.stat().st_mtime:
        info = json.loads(sidecar.read_text())
        info["reused"] = True
        return path, info
    start = time.perf_counter()
    if spec.kind == "ours":
        from bert2onnxq.convert import convert
        from bert2onnxq.methods import convert_options

        options = convert_options(method=spec.method.split()[0].lower(), bits=spec.bits, granularity=spec.granularity,
                                  group_size=spec.group_size or 128,
                                  act_bits=None if spec.activations == "fp32" else 8,
                                  emb_bits=None if spec.embeddings == "fp32" else 8, group_kernel=spec.group_kernel)
        result = convert(str(fp32), path, options)
        info = {"bytes": result["bytes"], "ideal_bytes": result["ideal_bytes"],
                "size_vs_ideal": result["size_vs_ideal"], "plan_summary": result["plan"].summary()}
    elif spec.kind == "ort-dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True)
        copy_tokenizer(fp32, folder)
        info = {"bytes": path.stat().st_size, "metadata_copied": copy_metadata(fp32, path)}
        info["bytes"] = path.stat().st_size
    elif spec.kind == "ort-nbits":
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=spec.bits, block_size=spec.group_size,
                                         is_symmetric=True)
        quantizer.process()
        quantizer.model.save_model_to_file(str(path), use_external_data_format=False)
        copy_tokenizer(fp32, folder)
        info = {"bytes": path.stat().st_size, "metadata_copied": copy_metadata(fp32, path),
                "algorithm": quantizer.algo_config.algorithm}
        info["bytes"] = path.stat().st_size
    else:
        raise ValueError(spec.kind)
    info["seconds"] = round(time.perf_counter() - start, 2)
    sidecar.write_text(json.dumps(info, indent=1))
    info["reused"] = False
    return path, info


# ---------------------------------------------------------------------------------------------------------------
# one model


def bench_model(name: str, shared: Path, work_root: Path, specs: list[RowSpec], squad_limit: int | None,
                reuse: bool, cache_reference: bool) -> dict:
    task = MODELS[name]
    source = shared / "models" / name
    data = {"data_file": shared / SQUAD_FILE} if task == "squad" else {"data_dir": shared / "data" / "glue"}
    limit = squad_limit if task == "squad" else None
    work = work_root / name
    model_start = time.perf_counter()
    fp32, export_info = fp32_export(source, work)
    err.print(f"[bold]{name}[/] ({task}): FP32 export {'reused' if export_info['reused'] else 'made'} at {fp32}")
    entry = {"model": name, "task": task, "source": str(source), "fp32_path": str(fp32), "export": export_info,
             "rows": [], "notes": []}
    attention = attention_matmuls(fp32)
    primary = None
    with reference_cache(fp32, cache_reference):
        for spec in specs:
            row = {"spec": asdict(spec), "slug": spec.slug, "method": spec.method, "kind": spec.kind}
            t0 = time.perf_counter()
            try:
                path, produced = produce(spec, fp32, work, reuse)
                row["path"] = str(path)
                row["produce"] = produced
                row["kernels"] = linear_kernels(path, attention, dict(spec.session))
                result, validate_wall = run_validate(path, task, None if spec.kind == "fp32" else fp32, data, limit,
                                                     dict(spec.session))
            except Exception as exc:  # one failing baseline must not lose the table
                msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
                row["error"] = f"{type(exc).__name__}: {msg}"
                err.print(f"  [red]{spec.slug}: {row['error']}[/]")
                entry["rows"].append(row)
                continue
            if primary is None:
                primary = describe_task(entry, result)
            row["metrics"] = result["model"]["metrics"]
            row["infer_seconds"] = result["model"]["seconds"]
            row["validate_wall_seconds"] = validate_wall
            row["bytes"] = produced["bytes"]
            if spec.kind == "ours":
                row["ideal_bytes"] = produced["ideal_bytes"]
                row["size_vs_ideal"] = produced["size_vs_ideal"]
            if "comparison" in result:
                cmp = result["comparison"]
                row["drop"] = cmp["drop"]
                row["agreement"] = cmp["agreement"]
                row["max_logit_diff"] = cmp["max_logit_diff"]
                row["logit_rel_rms"] = cmp["logit_rel_rms"]
            else:  # the FP32 row is its own reference
                row["drop"] = {k: 0.0 for k in row["metrics"]}
                row["agreement"] = 100.0
                row["max_logit_diff"] = 0.0
                row["logit_rel_rms"] = 0.0
            row["row_wall_seconds"] = round(time.perf_counter() - t0, 2)
            entry["rows"].append(row)
            err.print(f"  {spec.slug:28s} {primary} {row['metrics'][primary]:6.2f}  drop {row['drop'][primary]:+6.2f}"
                      f"  agree {row['agreement'] if row['agreement'] is not None else float('nan'):6.2f}%"
                      f"  {row['bytes'] / 2**20:6.2f} MiB  infer {row['infer_seconds']:.1f}s"
                      f"  (row {row['row_wall_seconds']:.1f}s)")
    fp32_row = next((r for r in entry["rows"] if r["kind"] == "fp32" and "metrics" in r), None)
    if fp32_row:
        ref = fp32_row["metrics"][primary]
        for r in entry["rows"]:
            if "metrics" in r:
                r["pct_of_fp32"] = 100.0 * r["metrics"][primary] / ref if ref else None
    entry["notes"] += model_notes(entry, specs)
    entry["checks"] = target_checks(entry)
    entry["wall_seconds"] = round(time.perf_counter() - model_start, 1)
    return entry


def model_notes(entry: dict, specs: list[RowSpec]) -> list[str]:
    notes = []
    for r in entry["rows"]:
        if "error" in r:
            notes.append(f"`{r['slug']}` failed: {r['error']}")
        if r.get("produce", {}).get("metadata_copied"):
            notes.append(f"`{r['slug']}`: ORT dropped the bert2onnxq.* metadata; it was copied over from the FP32 export.")
    if any(s.kind == "ours" and (s.granularity == "group" or s.activations == "fp32") for s in specs):
        notes.append("i8 blk*: rows whose graph has no activation quantizer before DequantizeLinear(weights) -> MatMul "
                     "(our group-wise rows; the ablation rows without the † config); ONNX Runtime fuses "
                     "that pair into MatMulNBits with accuracy_level 4 (the default "
                     "of session.qdq_matmulnbits_accuracy_level), which quantizes activations to int8 per block at run time.")
    if any(s.session for s in specs):
        notes.append("†: session config " + "; ".join(sorted({f"{k}={v}" for s in specs for k, v in s.session}))
                     + " (everything else runs ONNX Runtime's default session config).")
    notes.append("linear kernels: the 36 encoder MatMuls (and, for ORT dynamic, also pooler/classifier) after "
                 "ORT_ENABLE_ALL fusions: int8 = MatMulIntegerToFloat / DynamicQuantizeMatMul; NBits Ln = MatMulNBits "
                 "at accuracy_level n; fp32 (DQ) = float MatMul on weights dequantized at run time (activation Q/DQ "
                 "simulated in float).")
    if any(s.kind == "ort-dynamic" for s in specs):
        notes.append("ORT dynamic: quantize_dynamic(weight_type=QInt8, per_channel=True) also quantizes the pooler and "
                     "classifier MatMuls and the embedding Gathers (uint8); ours keep pooler/classifier FP32.")
    if any(s.kind == "ort-nbits" for s in specs):
        notes.append("ORT MatMulNBits rows: MatMulNBitsQuantizer(bits, block_size=32, is_symmetric=True), default "
                     "algorithm (RTN), QOperator format; weight-only (accuracy_level unset = 0: FP32 activations; "
                     "embeddings FP32, which dominate the file size); "
                     "MatMulNBitsQuantizer supports bits 2, 4 and 8 (QOperator format), so 3-bit has no ORT row.")
    return notes


def target_checks(entry: dict) -> list[dict]:
    """The project's targets, checked on this model's rows."""
    primary = entry.get("primary_metric")
    if primary is None:
        return []
    ours = {(r["method"], r["spec"]["bits"], r["spec"]["granularity"]): r
            for r in entry["rows"] if r["kind"] == "ours" and "metrics" in r}
    checks = []
    for method in ("LQ", "ACIQ"):  # "within X points": a loss of at most X; a gain passes (agreement shows deviation)
        r = ours.get((method, 8, "channel"))
        if r:
            d = r["drop"][primary]
            ok = d <= 0.3 and (r["agreement"] or 0) >= 99.0
            checks.append({"target": f"{method} W8/A8 per-channel: drop <= 0.3 points and >= 99% agreement",
                           "pass": ok, "value": f"drop {d:+.2f}, agreement {r['agreement']:.2f}%"})
    for method in ("LQ", "ACIQ"):
        r = ours.get((method, 4, "group"))
        if r:
            d = r["drop"][primary]
            checks.append({"target": f"{method} W4 group-{GROUP_SIZE}: drop <= 1 point", "pass": d <= 1.0,
                           "value": f"drop {d:+.2f}, agreement {_f(r['agreement'], '.2f')}%"})
    for bits in (3, 2):
        for gran in ("channel", "group"):
            lq, aciq = ours.get(("LQ", bits, gran)), ours.get(("ACIQ", bits, gran))
            if lq and aciq:
                ok = aciq["metrics"][primary] > lq["metrics"][primary]
                value = f"{primary} ACIQ {aciq['metrics'][primary]:.2f} vs LQ {lq['metrics'][primary]:.2f}"
                for k in aciq["metrics"]:
                    if k != primary:
                        value += f"; {k} ACIQ {aciq['metrics'][k]:.2f} vs LQ {lq['metrics'][k]:.2f}"
                checks.append({"target": f"W{bits} {gran}: ACIQ better than LQ", "pass": ok, "value": value})
    for label, widths in (("8/4/2-bit rows (native INT8/INT4/INT2 containers)", (8, 4, 2)),
                          ("6/3-bit rows (stored in INT8/INT4 containers)", (6, 3))):
        ratios = [(r["slug"], r["size_vs_ideal"]) for (_, b, _), r in ours.items() if b in widths]
        if ratios:
            worst = max(ratios, key=lambda x: x[1])
            checks.append({"target": f"size/ideal <= 1.03, {label}", "pass": worst[1] <= 1.03,
                           "value": f"max {worst[1]:.3f} ({worst[0]})"})
    return checks


# ---------------------------------------------------------------------------------------------------------------
# rendering


def _f(x, fmt: str, dash: str = "—") -> str:
    return dash if x is None else format(x, fmt)


def table_rows(entry: dict) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, cells, and the indices after which a section (bit width) ends."""
    primary, second = entry.get("primary_metric"), entry.get("second_metric")
    header = ["method", "W bits", "granularity", "act / emb",
              METRIC_LABEL.get(primary, primary or "metric")]
    if second:
        header.append(METRIC_LABEL.get(second, second))
    header += ["% FP32", f"drop {METRIC_LABEL.get(primary, primary)}"]
    if second:
        header.append(f"drop {METRIC_LABEL.get(second, second)}")
    header += ["agree %", "logit rel. RMS", "size MiB", "size/ideal", "infer s", "linear kernels"]
    cells, sections, last_bits = [], [], None
    for i, r in enumerate(entry["rows"]):
        s = r["spec"]
        if last_bits is not None and s["bits"] != last_bits:
            sections.append(len(cells) - 1)
        last_bits = s["bits"]
        gran = s["granularity"] + (f" {s['group_size']}" if s["granularity"] == "group" else "")
        if r["kind"] == "fp32":
            gran = "-"
        levels = r.get("kernels", {}).get("nbits_accuracy_levels") or []
        acts = "i8 blk*" if 4 in levels else s["activations"]  # what ORT actually runs, not what the graph says
        if s.get("session"):
            acts += "†"
        act = f"{acts} / {s['embeddings']}"
        if "error" in r:
            cells.append([r["method"], str(s["bits"]), gran, act, "failed"] + [""] * (len(header) - 5))
            continue
        m = r["metrics"]
        row = [r["method"], str(s["bits"]), gran, act, f"{m[primary]:.2f}"]
        if second:
            row.append(f"{m[second]:.2f}")
        row += [_f(r.get("pct_of_fp32"), ".2f"), f"{r['drop'][primary]:+.2f}"]
        if second:
            row.append(f"{r['drop'][second]:+.2f}")
        row += [_f(r["agreement"], ".2f"),
                f"{r['logit_rel_rms']:.4f}", f"{r['bytes'] / 2**20:.2f}", _f(r.get("size_vs_ideal"), ".3f"),
                f"{r['infer_seconds']:.1f}", r.get("kernels", {}).get("label", "?")]
        cells.append(row)
    return header, cells, sections


def title(entry: dict) -> str:
    n = f"{entry.get('examples', '?')} examples"
    if entry["task"] == "squad":
        n = f"{entry.get('examples', '?')} questions / {entry.get('features', '?')} features"
    return f"{entry['model']} — {entry['task']} ({n})"


def print_table(entry: dict) -> None:
    header, cells, sections = table_rows(entry)
    out.print(console_table(title(entry), header, cells, left=4, sections=set(sections)))
    print_checks(out, entry.get("checks", []))
    for note in entry.get("notes", []):
        out.print(f"  [dim]note: {note}[/]")


def markdown(report: dict) -> str:
    meta = report["meta"]
    lines = ["# Quantization table", "",
             f"Generated {meta['date']} on {meta['machine']}; onnxruntime {meta['onnxruntime']}, "
             f"onnx {meta['onnx']}, bert2onnxq {meta['bert2onnxq']} (commit {meta.get('git_commit', '?')}"
             f"{', with uncommitted package changes' if meta.get('package_uncommitted_changes') else ''}), "
             f"CPU, {THREADS} intra-op threads.", ""]
    for name in sorted(report["models"], key=lambda n: list(MODELS).index(n) if n in MODELS else 99):
        entry = report["models"][name]
        header, cells, _ = table_rows(entry)
        lines += [f"## {title(entry)}", ""]
        proto = entry.get("protocol", {})
        if proto:
            extra = (f", doc stride {proto['doc_stride']}, n-best {proto['n_best']}, max answer {proto['max_answer_length']}"
                     if entry["task"] == "squad" else "")
            limit = f", first {proto['limit']} questions" if proto.get("limit") else ""
            lines += [f"Protocol: max length {proto['max_length']}{extra}, batch {proto['batch_size']} "
                      f"({proto['padding']}){limit}. Command: `{entry.get('command', '')}`; "
                      f"wall time for this model {entry.get('wall_seconds', 0) / 60:.1f} min; measured "
                      f"{entry.get('environment', {}).get('date', '?')} at commit "
                      f"{entry.get('environment', {}).get('git_commit', '?')}.", ""]
        lines += md_table(header, cells, left=4) + [""] + md_checks(entry.get("checks", []))
        if entry.get("notes"):
            lines.append("Notes:")
            lines += [f"- {n}" for n in entry["notes"]]
            lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# CLI


def _int_list(ctx, param, value):
    try:
        bits = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter("a comma-separated list of integers, e.g. 8,6,4,3,2") from None
    if not bits or any(not 2 <= b <= 8 for b in bits):
        raise click.BadParameter("bits must be in 2..8")
    return bits


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--models", default=",".join(MODELS), show_default=True, callback=model_list,
              help="Comma-separated shared model folders.")
@click.option("--bits", default="8,6,4,3,2", show_default=True, callback=_int_list,
              help="Weight bit widths (group-wise rows only for 4, 3, 2; ORT rows for 8 / 4 / 2).")
@click.option("--squad-limit", type=click.IntRange(1), default=None,
              help="Only the first N SQuAD questions (default: all 2,447 of the held-out file).")
@click.option("--shared", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_SHARED,
              show_default=True, help="The shared folder (models/, data/).")
@click.option("--work-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("/tmp/bert2onnxq-bench"),
              show_default=True, help="Cache of exported and converted models.")
@click.option("--reuse-converted", is_flag=True,
              help="Reuse converted files in --work-dir (the FP32 export is always reused when present).")
@click.option("--baselines/--no-baselines", default=True, show_default=True, help="ORT quantizer rows.")
@click.option("--ablation", is_flag=True,
              help="Extra 8-bit rows: weights only (FP32 activations and embeddings), and weights + activations.")
@click.option("--int8-group", is_flag=True,
              help="Extra group-wise rows with two-level scales on the int8 GEMM (convert --group-kernel int8).")
@click.option("--no-reference-cache", is_flag=True, help="Re-run the FP32 model for every row's comparison.")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), help="Write all results as JSON.")
@click.option("--markdown", "md_path", type=click.Path(path_type=Path, dir_okay=False), help="Write the tables as Markdown.")
@click.option("--append", is_flag=True, help="Merge into an existing --json file (other models kept) and render all.")
def main(models, bits, squad_limit, shared, work_dir, reuse_converted, baselines, ablation, int8_group, no_reference_cache,
         json_path, md_path, append):
    """FP32 vs LQ / ACIQ (per-channel and group-wise) vs ORT quantizers, one table per model."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic's "consider pre-processing" warning
    if not (shared / "models").is_dir():
        raise click.BadParameter(f"'{shared}' has no models/ folder", param_hint="--shared")
    command = "python benchmarks/quantization_table.py " + " ".join(sys.argv[1:])
    report = {"meta": environment(), "models": {}}
    if append and json_path and json_path.is_file():
        report["models"] = json.loads(json_path.read_text()).get("models", {})
    specs = row_specs(bits, baselines, ablation, int8_group)
    start = time.perf_counter()
    for name in models:
        entry = bench_model(name, shared, work_dir, specs, squad_limit, reuse_converted, not no_reference_cache)
        entry["command"] = command
        entry["environment"] = report["meta"]
        report["models"][name] = entry
        print_table(entry)
        report["meta"]["wall_seconds_this_run"] = round(time.perf_counter() - start, 1)
        save(report, json_path, md_path, markdown)
    err.print(f"total wall time {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
