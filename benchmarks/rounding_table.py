"""Rounding table: nearest vs GPTQ rounding for LQ, ACIQ, OCS and Q-BERT, beside ONNX Runtime's
MatMulNBitsQuantizer with each algorithm it offers, on the same FP32 export and dev data.

    python benchmarks/rounding_table.py --models minilm-l6-sst2 --bits 2
    python benchmarks/rounding_table.py --json benchmarks/results/rounding_table.json \
        --markdown benchmarks/results/rounding_table.md

Rows (per model, every --bits among 4, 3, 2):
  * ours, per-channel and group-32: LQ, ACIQ (Laplace), OCS (r = 0.02) + ACIQ, each with
    `--rounding nearest` and `--rounding gptq` (the default calibration: 128 train examples of the task in calibration order, a
    seeded shuffle, extended to 8 tokens per input of the widest weight, 12,288 on MiniLM; SQuAD:
    dev-v1.1-train36); OCS+act (r = 0.02 with --ocs-activations) in per-channel cells;
    8-bit dynamic activations, int8 embeddings; the grid default (asymmetric at 2-4 bits).
  * ours, Q-BERT avg 3 (2/3/4 bits by layer, neuron groups, ACIQ), nearest and gptq, from the Hessian
    recorded in benchmarks/results/qbert_table.json (so the bits are the committed table's).
  * ORT MatMulNBitsQuantizer, block 32, weight-only (FP32 activations and embeddings): DEFAULT
    (ORT's own RTN), RTN and GPTQ (ORT's bundled Intel Neural Compressor code; GPTQ on the same
    calibration features, one per batch), HQQ and k-quant, at each bit width the algorithm accepts.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    CALIB_SAMPLES,
    DEFAULT_SHARED,
    METRIC_LABEL,
    MODELS,
    SQUAD_FILE,
    calibrator,
    copy_metadata,
    copy_tokenizer,
    describe_task,
    environment,
    err,
    fp32_export,
    model_list,
    out,
    reference_cache,
    run_validate,
    train_data,
)
from tables import console_table, md_checks, md_table, print_checks, save  # noqa: E402

GROUP = 32
OURS = (("LQ", {"method": "lq"}), ("ACIQ", {"method": "aciq"}), ("OCS+ACIQ", {"method": "ocs", "clip": "aciq"}),
        ("OCS+act", {"method": "ocs", "ocs_activations": True}))
# --methods names of the rows (OCS+act: OCS r = 0.02 that also splits the dynamic activations' outlier channels)
ROW_METHOD = {"LQ": "lq", "ACIQ": "aciq", "OCS+ACIQ": "ocs", "OCS+act": "ocs-act"}
# our rounding rows: gptq-seq is --rounding gptq --gptq-sequential; gptq-512 is --calib-samples 512 (4x the default);
# gptq-search is --gptq-grid search, the default (each weight also tries min-max ranges shrunk on diag(X^T X))
FIXED = {"rounding": "gptq", "gptq_grid": "fixed"}  # the rows measured before the range search was the default
SEARCH = {"rounding": "gptq", "gptq_grid": "search"}
ROUNDING_OPTIONS = {"nearest": {"rounding": "nearest"}, "gptq": FIXED, "gptq-search": SEARCH,
                    "gptq-seq": {**FIXED, "gptq_sequential": True}, "gptq-512": {**FIXED, "calib_samples": 512},
                    "gptq-search-512": {**SEARCH, "calib_samples": 512},
                    "gptq-search-seq": {**SEARCH, "gptq_sequential": True}}
QBERT_LABELS = {"rank": "Q-BERT avg 3", "hawq": "Q-BERT avg 3 hawq"}  # --allocation
ORT_ALGOS = ("DEFAULT", "RTN", "GPTQ", "HQQ", "k_quant")
# the targets: (model, row label, bits, granularity) -> (what, threshold)
TARGETS = {
    ("minilm-l6-squad", "ACIQ", 4, "channel"): ("pct", 98.5), ("minilm-l6-squad", "ACIQ", 3, "group"): ("pct", 97.0),
    ("minilm-l6-squad", "ACIQ", 3, "channel"): ("pct", 92.0), ("minilm-l6-squad", "ACIQ", 2, "group"): ("pct", 80.0),
    ("minilm-l6-squad", "Q-BERT avg 3", 3, "neuron-group"): ("pct", 95.0),
    ("minilm-l6-mrpc", "ACIQ", 3, "channel"): ("drop+agree", (1.0, 93.0)),
    ("minilm-l6-mrpc", "LQ", 2, "group"): ("drop", 2.3),
    ("minilm-l6-sst2", "LQ", 2, "group"): ("drop+agree", (0.5, 94.0)),
    ("minilm-l6-sst2", "ACIQ", 2, "channel"): ("drop", 1.5),
}


def ours_rows(bits: list[int], qbert: bool, methods: tuple[str, ...] = ("lq", "aciq", "ocs", "ocs-act"),
              cells: set | None = None, roundings: tuple[str, ...] = ("nearest", "gptq"),
              granularities: tuple[str, ...] = ("channel", "group"),
              allocations: tuple[str, ...] = ("rank",)) -> list[dict]:
    """Our rows; `cells` {(bits, granularity)} keeps only those cells."""
    rows = []
    for b in bits:
        for gran in granularities:
            if cells is not None and (b, gran) not in cells:
                continue
            for label, kw in OURS:
                if ROW_METHOD[label] not in methods or (label == "OCS+act" and gran != "channel"):
                    continue  # activation splits serve the int8 kernel's per-tensor inputs: per-channel cells
                for rounding in roundings:
                    opts = {**kw, "bits": b, "granularity": gran, **ROUNDING_OPTIONS[rounding]}
                    if gran == "group":
                        opts["group_size"] = GROUP
                    rows.append({"kind": "ours", "label": label, "bits": b, "granularity": gran,
                                 "rounding": rounding, "options": opts})
    if qbert:
        for allocation in allocations:
            for rounding in roundings:
                rows.append({"kind": "qbert", "label": QBERT_LABELS[allocation], "bits": 3,
                             "granularity": "neuron-group", "rounding": rounding, "allocation": allocation})
    return rows


def ort_rows(bits: list[int]) -> list[dict]:
    return [{"kind": "ort", "label": f"ORT {algo}", "bits": b, "granularity": "group", "rounding": algo}
            for b in bits if b in (4, 2) for algo in ORT_ALGOS]


def slug(row: dict) -> str:
    return f"{row['label']}-w{row['bits']}-{row['granularity']}-{row['rounding']}".lower().replace(" ", "-").replace("+", "")


def convert_ours(row: dict, fp32: Path, path: Path, task: str, calib: dict, hessian: dict | None) -> dict:
    from dataclasses import replace

    from bert2onnxq.convert import convert
    from bert2onnxq.methods import convert_options, qbert_convert_options
    from bert2onnxq.methods.qbert import QBertOptions

    if row["kind"] == "qbert":
        options = replace(qbert_convert_options(QBertOptions(hessian=hessian, avg_bits=3.0, bit_choices=(2, 3, 4),
                                                        allocation=row.get("allocation", "rank"))),
                          **ROUNDING_OPTIONS[row["rounding"]])
    else:
        options = convert_options(**row["options"])
    result = convert(str(fp32), path, options, calibrate=calibrator(task, calib))
    plan = result["plan"]
    errs = [(t.stats["out_err_nearest"], t.stats["out_err"]) for t in plan.weights if "out_err" in t.stats]
    info = {"bytes": result["bytes"], "plan_summary": plan.summary()}
    if "allocation" in plan.analysis:
        info["layer_bits"] = [b["bits"] for b in plan.analysis["allocation"]["bits"]]
    if plan.rounding.get("tokens"):
        info["calibration_tokens"] = plan.rounding["tokens"]
    if errs:
        info["out_err_nearest"] = float(np.mean([e[0] for e in errs]))
        info["out_err_gptq"] = float(np.mean([e[1] for e in errs]))
    return info


class _Reader:
    """ORT's CalibrationDataReader over the tokenized calibration samples, one per batch."""

    def __init__(self, feeds: list[dict]):
        self.feeds, self.i = feeds, 0

    def get_next(self):
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def __iter__(self):
        return iter(self.feeds)

    def rewind(self):
        self.i = 0


def calibration_feeds(fp32: Path, task_name: str, calib: dict) -> list[dict]:
    """The features our GPTQ calibrates on (the same rule: 128 samples, extended to 8 tokens per input of
    the widest weight), one per batch, for ORT's GPTQ."""
    from bert2onnxq.analyse.activations import _calibration_features
    from bert2onnxq.graph.locate import check_quantizable
    from bert2onnxq.methods.common import TOKENS_PER_INPUT
    from bert2onnxq.onnx_io import load_ir, load_tokenizer, model_metadata
    from bert2onnxq.tasks import get_task

    task = get_task(task_name)
    tokenizer = load_tokenizer(fp32, model_metadata(fp32))
    widest = max(s.shape[0] for s in check_quantizable(load_ir(fp32)))
    features = _calibration_features(task, tokenizer, CALIB_SAMPLES, TOKENS_PER_INPUT * widest,
                                     calib.get("data_dir"), calib.get("data_file"))
    return [{k: np.asarray(v, dtype=np.int64)[None] for k, v in f.items()
             if k in ("input_ids", "attention_mask", "token_type_ids")} for f in features]


def convert_ort(row: dict, fp32: Path, path: Path, feeds: list[dict]) -> dict:
    import logging

    import onnx
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    logging.getLogger(nbits.__name__).setLevel(logging.ERROR)  # one INFO line per skipped node otherwise
    bits, algo = row["bits"], row["rounding"]
    model = onnx.load(str(fp32))
    # the Intel Neural Compressor path (RTN, GPTQ, k-quant) writes bits=4 unless each node's config says
    # otherwise; only RTN and k-quant take a per-node config, so GPTQ is 4-bit only
    if algo == "GPTQ" and bits != 4:
        raise ValueError(f"ORT's GPTQ (Intel Neural Compressor path) quantizes to 4 bits only, not {bits}")
    per_node = None
    if algo in ("RTN", "k_quant") and bits != 4:
        inits = {i.name for i in model.graph.initializer}
        per_node = {n.name: {"bits": bits} for n in model.graph.node
                    if n.op_type == "MatMul" and any(i in inits for i in n.input)}
    configs = {"DEFAULT": lambda: None,
               "RTN": lambda: nbits.RTNWeightOnlyQuantConfig(customized_weight_config=per_node),
               "GPTQ": lambda: nbits.GPTQWeightOnlyQuantConfig(calibration_data_reader=_Reader(feeds), block_size=128,
                                                               actorder=True),
               "HQQ": lambda: nbits.HQQWeightOnlyQuantConfig(block_size=GROUP, bits=bits),
               "k_quant": lambda: nbits.KQuantWeightOnlyQuantConfig(customized_weight_config=per_node)}
    quantizer = nbits.MatMulNBitsQuantizer(model, bits=bits, block_size=GROUP, is_symmetric=True,
                                           algo_config=configs[algo]())
    quantizer.process()
    quantizer.model.save_model_to_file(str(path), use_external_data_format=False)
    written = _nbits(path)
    if written != {bits}:  # never report a file under bits it does not have
        raise ValueError(f"ORT's {algo} did not write {bits}-bit MatMulNBits (it wrote bits {sorted(written) or 'none'}; "
                         "none: the MatMuls stayed float)")
    copy_tokenizer(fp32, path.parent)
    return {"bytes": path.stat().st_size, "metadata_copied": copy_metadata(fp32, path),
            "algorithm": quantizer.algo_config.algorithm, "nbits_nodes": _count(path, "MatMulNBits")}


def _nbits(path: Path) -> set[int]:
    import onnx

    return {a.i for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type == "MatMulNBits"
            for a in n.attribute if a.name == "bits"}


def _count(path: Path, op: str) -> int:
    import onnx

    return sum(1 for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type == op)


def bench_model(name: str, shared: Path, work_root: Path, bits: list[int], ort: bool, qbert: bool,
                squad_limit: int | None, methods: tuple[str, ...], only_targets: bool = False,
                ort_bits: list[int] | None = None, roundings: tuple[str, ...] = ("nearest", "gptq"),
                granularities: tuple[str, ...] = ("channel", "group"), allocations: tuple[str, ...] = ("rank",)) -> dict:
    task = MODELS[name]
    data = {"data_file": shared / SQUAD_FILE} if task == "squad" else {"data_dir": shared / "data" / "glue"}
    limit = squad_limit if task == "squad" else None
    calib = train_data(shared, task)
    work = work_root / name
    fp32, _ = fp32_export(shared / "models" / name, work)
    hessian = None
    if qbert:
        recorded = json.loads((Path(__file__).parent / "results" / "qbert_table.json").read_text())
        hessian = recorded["models"][name]["hessian"]
    entry = {"model": name, "task": task, "rows": [], "squad_limit": limit, "calibration_samples": CALIB_SAMPLES,
             "calibration_data": str(next(iter(calib.values())))}
    start = time.perf_counter()
    cells = {(b, g) for (m, _, b, g) in TARGETS if m == name} if only_targets else None
    rows = ours_rows(bits, qbert, methods, cells, roundings, granularities, allocations) + (ort_rows(ort_bits or bits) if ort else [])
    feeds = calibration_feeds(fp32, task, calib) if ort else []
    with reference_cache(fp32, True):
        ref, _ = run_validate(fp32, task, None, data, limit)
        primary = describe_task(entry, ref)
        entry["fp32"] = ref["model"]["metrics"]
        for row in rows:
            path = work / "rounding" / slug(row) / "model.onnx"
            path.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            try:
                info = (convert_ort(row, fp32, path, feeds) if row["kind"] == "ort"
                        else convert_ours(row, fp32, path, task, calib, hessian))
            except Exception as exc:  # an algorithm that does not take these bits: the table says so
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                entry["rows"].append(row)
                err.print(f"  {slug(row):40s} [red]failed[/]: {row['error']}")
                continue
            row.update(info, convert_seconds=round(time.perf_counter() - t0, 1))
            result, _ = run_validate(path, task, fp32, data, limit)
            cmp = result["comparison"]
            row.update(metrics=result["model"]["metrics"], drop=cmp["drop"], agreement=cmp["agreement"],
                       logit_rel_rms=cmp["logit_rel_rms"],
                       pct_of_fp32=100 * result["model"]["metrics"][primary] / entry["fp32"][primary])
            entry["rows"].append(row)
            err.print(f"  {slug(row):40s} {primary} {row['metrics'][primary]:6.2f} ({row['pct_of_fp32']:5.1f}%)  "
                      f"agree {row['agreement']:6.2f}%  rms {row['logit_rel_rms']:.4f}  {row['bytes'] / 2**20:6.2f} MiB  "
                      f"convert {row['convert_seconds']:.1f}s")
            path.unlink(missing_ok=True)  # keep the disk small; the row has what it measured
    entry["checks"] = checks(entry)
    entry["wall_seconds"] = round(time.perf_counter() - start, 1)
    return entry


def _key(row: dict) -> tuple:
    return row["kind"], row["label"], row["bits"], row["granularity"], row["rounding"]


def _row(entry, label, bits, gran, rounding):
    return next((r for r in entry["rows"] if (r["label"], r["bits"], r["granularity"], r["rounding"]) ==
                 (label, bits, gran, rounding) and "metrics" in r), None)


def checks(entry: dict) -> list[dict]:
    """The issue's targets, each met by our best row of that cell (any method or rounding; Q-BERT its own row)."""
    primary = entry["primary_metric"]
    out_checks = []
    for (model, label, bits, gran), (kind, threshold) in TARGETS.items():
        if model != entry["model"]:
            continue
        rows = [r for r in entry["rows"] if r["kind"] != "ort" and "metrics" in r and r["bits"] == bits
                and r["granularity"] == gran and (r["label"].startswith(label) or label != "Q-BERT avg 3")]
        if not rows:
            continue

        def passes(r):
            drop, agree, pct = r["drop"][primary], r["agreement"], r["pct_of_fp32"]
            if kind == "pct":
                return pct >= threshold
            if kind == "drop":
                return drop <= threshold
            return drop <= threshold[0] and agree >= threshold[1]

        best = max(rows, key=lambda r: (passes(r), r["agreement"] if kind == "drop+agree" else r["metrics"][primary]))
        if kind == "pct":
            target = f">= {threshold}% of FP32 {primary}"
        elif kind == "drop":
            target = f"within {threshold} {primary}"
        else:
            target = f"within {threshold[0]} and >= {threshold[1]}% agreement"
        what = "Q-BERT avg 3" if label == "Q-BERT avg 3" else f"W{bits} {'per-channel' if gran == 'channel' else 'group-32'}"
        out_checks.append({"target": f"{what}: {target}", "pass": passes(best),
                           "value": f"best {best['label']} {best['rounding']}: {best['metrics'][primary]:.2f} "
                                    f"({best['pct_of_fp32']:.1f}%, drop {best['drop'][primary]:+.2f}), "
                                    f"agreement {best['agreement']:.2f}%"})
    # ours must lead ORT at every bit width on agreement
    for bits in sorted({r["bits"] for r in entry["rows"] if r["kind"] == "ort"}, reverse=True):
        ort = [r for r in entry["rows"] if r["kind"] == "ort" and r["bits"] == bits and "metrics" in r]
        ours = [r for r in entry["rows"] if r["kind"] != "ort" and r["bits"] == bits and r["granularity"] == "group"
                and "metrics" in r]
        if ort and ours:
            a, b = max(ours, key=lambda r: r["agreement"]), max(ort, key=lambda r: r["agreement"])
            out_checks.append({"target": f"W{bits} block {GROUP}: ours lead ORT MatMulNBits on agreement",
                               "pass": a["agreement"] > b["agreement"],
                               "value": f"{a['label']} {a['rounding']} {a['agreement']:.2f}% vs {b['label']} {b['agreement']:.2f}%"})
    return out_checks


def _f(x, fmt):
    return "—" if x is None else format(x, fmt)


def table(entry: dict) -> tuple[list[str], list[list[str]]]:
    primary = entry["primary_metric"]
    p = METRIC_LABEL.get(primary, primary)
    header = ["row", "W bits", "granularity", "rounding", p, "% FP32", "agree %", "logit rel. RMS", "out err (mean)",
              "MiB", "convert s"]
    cells = [["FP32", "32", "-", "-", f"{entry['fp32'][primary]:.2f}", "100.0", "100.00", "0.0000", "—", "—", "—"]]
    for r in entry["rows"]:
        if "error" in r:
            cells.append([r["label"], str(r["bits"]), r["granularity"], r["rounding"], "failed: " + r["error"][:60],
                          *["—"] * 6])
            continue
        err_text = _f(r.get("out_err_gptq" if r["rounding"] != "nearest" else "out_err_nearest"), ".4f")
        cells.append([r["label"], str(r["bits"]), r["granularity"], r["rounding"], f"{r['metrics'][primary]:.2f}",
                      f"{r['pct_of_fp32']:.1f}", f"{r['agreement']:.2f}", f"{r['logit_rel_rms']:.4f}", err_text,
                      f"{r['bytes'] / 2**20:.2f}", f"{r['convert_seconds']:.1f}"])
    return header, cells


def title(entry: dict) -> str:
    tokens = next((r.get("calibration_tokens") for r in entry["rows"] if r.get("calibration_tokens")), None)
    return (f"{entry['model']} ({entry['task']}, {entry['examples']} dev examples; GPTQ calibration: "
            f"{tokens or '?'} tokens from the train data in {Path(entry['calibration_data']).name})")


def markdown(report: dict) -> str:
    meta = report["meta"]
    lines = ["# Rounding table: nearest vs GPTQ, beside ONNX Runtime's MatMulNBitsQuantizer", "",
             f"Last run {meta['date']} on {meta['machine']}; onnxruntime {meta['onnxruntime']}, onnx {meta['onnx']}, "
             f"bert2onnxq commit {meta.get('git_commit', '?')}"
             f"{' (with uncommitted package changes)' if meta.get('package_uncommitted_changes') else ''}: "
             "`" + report.get("command", "") + "`. Each section names the commands (and, where recorded, the "
             "date and commit) that made it.", "",
             "Ours: 8-bit dynamic activations, int8 embeddings, asymmetric weight grid at 2-4 bits; group = group-32 "
             "(ORT MatMulNBits at run time); OCS+ACIQ: OCS r = 0.02 with ACIQ clipping; OCS+act: OCS r = 0.02 that also "
             "splits the dynamic activations' outlier channels (--ocs-activations); `gptq` = `--rounding gptq` with its defaults "
             "(128 train examples in calibration order, a seeded shuffle of the split, extended to 8 tokens per input "
             "channel of the widest weight; damp 0.01, "
             "act order, block 128), on the same grid as `nearest` (`--gptq-grid fixed`); `gptq-search`: the default "
             "`--gptq-grid search` (each weight also rounded on min-max ranges shrunk per block to minimise the "
             "diag(X^T X)-weighted error, the lower calibration output error kept); `gptq-seq`: `gptq` with "
             "`--gptq-sequential`; ORT GPTQ gets the same features. ORT rows: MatMulNBitsQuantizer, "
             "block 32, symmetric, weight-only (FP32 activations and embeddings). `out err`: mean over the weights of "
             "||X(W - Ŵ)||² / ||XW||² on the calibration inputs. Every number is against the same model's FP32 export.", ""]
    for name, entry in report["models"].items():
        header, cells = table(entry)
        lines += [f"## {title(entry)}", ""] + ([f"`{entry['command']}`", ""] if entry.get("command") else [])
        lines += [f"Section generated {entry['generated']}.", ""] if entry.get("generated") else []
        lines += md_table(header, cells, left=4) + [""] + md_checks(entry["checks"])
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--models", default=",".join(MODELS), show_default=True, callback=model_list)
@click.option("--bits", default="4,3,2", show_default=True, help="Weight bit widths (ORT rows at 4 and 2).")
@click.option("--methods", default="lq,aciq,ocs,ocs-act", show_default=True,
              help="Our uniform methods (rows); ocs-act: OCS with --ocs-activations (per-channel cells).")
@click.option("--ort/--no-ort", default=True, show_default=True, help="ORT MatMulNBitsQuantizer rows.")
@click.option("--ort-bits", default=None, help="Bit widths of the ORT rows (default: --bits among 4, 2).")
@click.option("--roundings", default="nearest,gptq", show_default=True,
              help="Our roundings (rows): nearest, gptq (--gptq-grid fixed), gptq-search (the default "
                   "--gptq-grid search), gptq-seq (gptq --gptq-sequential), gptq-512 (gptq --calib-samples 512), "
                   "gptq-search-512, gptq-search-seq.")
@click.option("--granularities", default="channel,group", show_default=True, help="Our granularities (rows).")
@click.option("--only-targets", is_flag=True, help="Only our (bits, granularity) cells that have a target for the model.")
@click.option("--qbert/--no-qbert", default=True, show_default=True, help="Q-BERT avg 3 rows (committed Hessian).")
@click.option("--qbert-allocations", default="rank", show_default=True,
              help="Q-BERT's --allocation per row set: rank, hawq (labelled 'Q-BERT avg 3 hawq').")
@click.option("--squad-limit", type=click.IntRange(1), default=None, help="Only the first N SQuAD questions.")
@click.option("--shared", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_SHARED, show_default=True)
@click.option("--work-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("/tmp/bert2onnxq-bench"),
              show_default=True)
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--markdown", "md_path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--append", is_flag=True,
              help="Merge into an existing --json file: other models and this model's other rows are kept.")
@click.option("--new-section", is_flag=True,
              help="With --append: this run's rows replace all of the model's earlier rows (one run per section).")
def main(models, bits, methods, ort, ort_bits, roundings, granularities, only_targets, qbert, qbert_allocations, squad_limit, shared, work_dir, json_path,
         md_path, append, new_section):
    """Nearest vs GPTQ rounding for every method, beside ORT's MatMulNBitsQuantizer algorithms."""
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger().setLevel(logging.ERROR)
    bit_list = sorted({int(b) for b in bits.split(",") if b.strip()}, reverse=True)
    report = {"meta": environment(), "models": {},
              "command": "python benchmarks/rounding_table.py " + " ".join(sys.argv[1:])}
    if append and json_path and json_path.is_file():
        report["models"] = json.loads(json_path.read_text()).get("models", {})
    start = time.perf_counter()
    for name in models:
        err.print(f"[bold]{name}[/]")
        entry = bench_model(name, shared, work_dir, bit_list, ort, qbert, squad_limit,
                            tuple(m.strip() for m in methods.split(",") if m.strip()), only_targets,
                            [int(b) for b in ort_bits.split(",")] if ort_bits else None,
                            tuple(roundings.split(",")), tuple(granularities.split(",")),
                            tuple(qbert_allocations.split(",")))
        entry["command"] = report["command"]
        meta = report["meta"]
        entry["generated"] = f"{meta['date']}, bert2onnxq commit {meta.get('git_commit', '?')}"
        old = None if new_section else report["models"].get(name)
        if old:  # --append: this run's rows replace the same rows of the earlier run, the others stay
            keys = {_key(r) for r in entry["rows"]}
            entry["rows"] = [r for r in old["rows"] if _key(r) not in keys] + entry["rows"]
            entry["command"] = f"{old.get('command', '')} ; {report['command']}"
            entry["generated"] += " (its rows added to earlier runs')"
            entry["checks"] = checks(entry)
        report["models"][name] = entry
        header, cells = table(entry)
        out.print(console_table(title(entry), header, cells, left=4))
        print_checks(out, entry["checks"])
        save(report, json_path, md_path, markdown)
    err.print(f"total wall time {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
