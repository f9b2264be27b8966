"""What `--rounding gptq` costs: wall time of convert (calibration + rounding) against nearest, and the
latency of the two files (the same graph, so it should be the same), on MiniLM SST-2 / SQuAD and the
random-weight BERT-base shape (calibrated on SST-2 train sentences).

    python benchmarks/gptq_cost.py --json benchmarks/results/gptq_cost.json --markdown benchmarks/results/gptq_cost.md
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_SHARED, environment, err, out, train_data  # noqa: E402
from speed_table import make_bert_base  # noqa: E402
from tables import console_table, md_table  # noqa: E402

MODELS = {"minilm-l6-sst2": "sst2", "minilm-l6-squad": "squad", "bert-base-random": "sst2"}


def export_fp32(name: str, shared: Path, work: Path) -> Path:
    from bert2onnxq.export import export

    path = work / name / "fp32" / "model.onnx"
    if not path.is_file():
        source = make_bert_base(work / name / "hf", shared) if name == "bert-base-random" else shared / "models" / name
        export(str(source), path)
    return path


def measure(name: str, shared: Path, work: Path, method: str, bits: int, rounds: int) -> dict:
    from bert2onnxq.analyse.activations import observe_activations
    from bert2onnxq.convert import convert
    from bert2onnxq.latency import latency_ratio
    from bert2onnxq.methods import convert_options

    task = MODELS[name]
    fp32 = export_fp32(name, shared, work)
    data = train_data(shared, task)
    timings: dict[str, float] = {}

    def calibrate(path, names, samples=None, moments=False, min_tokens=0, weights=None):
        t0 = time.perf_counter()
        result = observe_activations(path, names, task, samples=samples or 128, moments=moments, min_tokens=min_tokens,
                                     weights=weights, **data)
        timings["calibration"] = timings.get("calibration", 0.0) + time.perf_counter() - t0
        return result

    row = {"model": name, "task": task, "method": method, "bits": bits}
    files = {}
    for rounding in ("nearest", "gptq"):
        path = work / name / "gptq-cost" / f"{rounding}.onnx"
        t0 = time.perf_counter()
        summary = convert(str(fp32), path, convert_options(method=method, bits=bits, rounding=rounding),
                          calibrate=calibrate)
        row[f"{rounding}_seconds"] = round(time.perf_counter() - t0, 1)
        files[rounding] = path
        if rounding == "gptq":
            row["calibration_seconds"] = round(timings["calibration"], 1)
            row["tokens"] = summary["plan"].rounding["tokens"]
    ratio = latency_ratio(files["gptq"], files["nearest"], threads=1, rounds=rounds)
    row["latency_gptq_vs_nearest"] = ratio["ratio"]
    row["latency"] = ratio
    return row


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--models", default=",".join(MODELS), show_default=True)
@click.option("--method", default="aciq", show_default=True)
@click.option("--bits", default=3, show_default=True)
@click.option("--rounds", default=10, show_default=True, help="Latency rounds (interleaved, batch 1, seq 128, 1 thread).")
@click.option("--shared", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_SHARED, show_default=True)
@click.option("--work-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("/tmp/bert2onnxq-bench"),
              show_default=True)
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--markdown", "md_path", type=click.Path(path_type=Path, dir_okay=False))
def main(models, method, bits, rounds, shared, work_dir, json_path, md_path):
    """Convert time of --rounding gptq vs nearest, and the latency of the two files."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    rows = []
    for name in [m.strip() for m in models.split(",") if m.strip()]:
        err.print(f"[bold]{name}[/]")
        rows.append(measure(name, shared, work_dir, method, bits, rounds))
        err.print(f"  {rows[-1]}")
    header = ["model", "calibration task", "plan", "tokens", "nearest convert s", "gptq convert s",
              "of which calibration s", "latency gptq / nearest"]
    cells = [[r["model"], r["task"], f"{r['method'].upper()} W{r['bits']} per-channel", str(r["tokens"]),
              f"{r['nearest_seconds']:.1f}", f"{r['gptq_seconds']:.1f}", f"{r['calibration_seconds']:.1f}",
              f"{r['latency_gptq_vs_nearest']:.3f}"] for r in rows]
    out.print(console_table("GPTQ cost", header, cells, left=3))
    meta = environment()
    report = {"meta": meta, "rows": rows, "command": "python benchmarks/gptq_cost.py " + " ".join(sys.argv[1:])}
    if json_path:
        json_path.write_text(json.dumps(report, indent=1))
    if md_path:
        md_path.write_text("\n".join([
            "# GPTQ cost", "", f"Generated {meta['date']} on {meta['machine']} ({os.cpu_count()} CPUs), onnxruntime "
            f"{meta['onnxruntime']}, bert2onnxq commit {meta.get('git_commit', '?')}.", "",
            "Command: `" + report["command"] + "`", "",
            "Convert wall time from the FP32 export with the default `--rounding gptq` (the range search, two GPTQ "
            "passes per weight; calibration: 128 train examples of a seeded shuffle, extended to 8 tokens "
            "per input channel of the widest weight; SQuAD: dev-v1.1-train36), and the latency ratio of the two "
            "files (interleaved rounds, batch 1, sequence 128, 1 thread).", "", *md_table(header, cells, left=3), ""]))


if __name__ == "__main__":
    main()
