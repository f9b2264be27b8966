"""Latency, throughput, peak memory and size of ONNX models, measured side by side.

The models are loaded together and timed in interleaved rounds (each round runs every model a few
times, the starting model rotating), so that a machine whose load changes during the run slows all
of them alike: the per-round ratios to the first model hold even when absolute times drift. Peak
memory is measured in a fresh process per model (loading and running it), file size on disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import BadInput
from .onnx_io import load_onnx
from .runtime import make_runner


@dataclass(frozen=True)
class BenchSettings:
    batch: int = 1
    seq: int = 128
    threads: int = 0  # 0: ONNX Runtime's choice
    device: str = "cpu"
    warmup: int = 3  # runs per model before timing
    rounds: int = 10
    runs_per_round: int = 3
    memory: bool = True
    check_numerics: bool = True
    seed: int = 0
    config: tuple[tuple[str, str], ...] = ()  # extra session config entries

    def check(self) -> None:
        for name in ("batch", "seq", "rounds", "runs_per_round"):
            if getattr(self, name) < 1:
                raise BadInput(f"--{name.replace('_', '-')} must be at least 1")
        if self.warmup < 0 or self.threads < 0:
            raise BadInput("--warmup and --threads must not be negative")


@dataclass
class ModelInfo:
    path: Path
    bytes: int
    vocab: int
    inputs: list[str] = field(default_factory=list)


def file_bytes(path: Path) -> int:
    """The .onnx file plus its external data file, if any."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def inspect_inputs(path: Path) -> ModelInfo:
    """Size, input names and vocabulary size (rows of the table `input_ids` is looked up in)."""
    model = load_onnx(path, load_external_data=False)
    dims = {i.name: list(i.dims) for i in model.graph.initializer}
    inits = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    if "input_ids" not in inputs:
        raise BadInput(f"'{path}' has no input_ids input: bench times BERT exports (input_ids, attention_mask, token_type_ids)")
    vocab = None
    for node in model.graph.node:
        if "input_ids" in node.input and node.input[0] in dims and dims[node.input[0]]:
            rows = dims[node.input[0]][0]
            vocab = rows if vocab is None else min(vocab, rows)
    return ModelInfo(Path(path), file_bytes(path), vocab or 100, inputs)


def synthetic_feeds(names: list[str], batch: int, seq: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids (no padding, two segments) for every BERT input the model has."""
    rng = np.random.default_rng(seed)
    low = min(1000, vocab // 2)
    feeds = {"input_ids": rng.integers(low, vocab, size=(batch, seq), dtype=np.int64),
             "attention_mask": np.ones((batch, seq), np.int64),
             "token_type_ids": np.zeros((batch, seq), np.int64)}
    feeds["token_type_ids"][:, seq // 2:] = 1
    unknown = [n for n in names if n not in feeds]
    if unknown:
        raise BadInput(f"bench cannot make inputs {unknown}: it feeds input_ids, attention_mask and token_type_ids")
    return {n: feeds[n] for n in names}


def _stats(times: list[float]) -> dict:
    a = np.asarray(times) * 1000.0
    return {"median_ms": float(np.median(a)), "p10_ms": float(np.percentile(a, 10)), "p90_ms": float(np.percentile(a, 90)),
            "iqr_ms": float(np.percentile(a, 75) - np.percentile(a, 25)), "mean_ms": float(a.mean()),
            "std_ms": float(a.std()), "min_ms": float(a.min()), "runs": int(a.size)}


def peak_memory(info: ModelInfo, settings: BenchSettings) -> dict | None:
    """Peak resident memory of a fresh process that loads `path` and runs it (warm-up + one run),
    minus that process's memory before loading the model (Python, numpy, onnxruntime imported)."""
    code = ("import json, sys; from bert2onnxq.bench import _memory_probe; "
            "print(json.dumps(_memory_probe(*json.loads(sys.argv[1]))))")
    args = [str(info.path), info.inputs, info.vocab, asdict(settings)]
    try:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, timeout=900)
        return json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def _rss_bytes(field: str = "VmRSS") -> int:
    """Resident memory (VmRSS) or its high-water mark (VmHWM) of this process. VmHWM restarts at
    exec, unlike getrusage's ru_maxrss, which a child inherits from a large parent."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def _memory_probe(path: str, inputs: list[str], vocab: int, settings: dict) -> dict:
    import onnxruntime  # noqa: F401  (imported before the baseline is taken)

    s = BenchSettings(**{**settings, "config": tuple(map(tuple, settings["config"]))})
    feeds = synthetic_feeds(inputs, s.batch, s.seq, vocab, s.seed)
    high_before, rss_before = _rss_bytes("VmHWM"), _rss_bytes()  # nothing big loaded yet
    runner = make_runner(Path(path), s.device, s.threads, dict(s.config))
    for _ in range(max(1, s.warmup)):
        runner.session.run(None, feeds)
    high = _rss_bytes("VmHWM")
    return {"peak_bytes": max(high - high_before, 0), "resident_bytes": _rss_bytes() - rss_before}


def bench(models: list[Path], settings: BenchSettings, progress=None) -> dict:
    """Time every model in `models` side by side (module docstring); ratios are to models[0]."""
    settings.check()
    if not models:
        raise BadInput("give at least one model")
    infos = [inspect_inputs(Path(p)) for p in models]
    config = dict(settings.config)
    runners = [make_runner(i.path, settings.device, settings.threads, config) for i in infos]
    feeds = [synthetic_feeds(i.inputs, settings.batch, settings.seq, i.vocab, settings.seed) for i in infos]
    load_before = os.getloadavg()
    for r, f in zip(runners, feeds):
        for _ in range(settings.warmup):
            r.session.run(None, f)
    times: list[list[float]] = [[] for _ in infos]
    round_medians: list[list[float]] = [[] for _ in infos]
    start = time.perf_counter()
    for rnd in range(settings.rounds):
        order = [(rnd + j) % len(infos) for j in range(len(infos))]  # rotate who goes first
        for m in order:
            this = []
            for _ in range(settings.runs_per_round):
                t0 = time.perf_counter()
                runners[m].session.run(None, feeds[m])
                this.append(time.perf_counter() - t0)
            times[m] += this
            round_medians[m].append(float(np.median(this)))
        if progress:
            progress(rnd + 1, settings.rounds)
    wall = time.perf_counter() - start
    load_after = os.getloadavg()
    results = []
    ref = np.asarray(round_medians[0])
    for i, (info, runner) in enumerate(zip(infos, runners)):
        st = _stats(times[i])
        paired = np.asarray(round_medians[i]) / ref
        entry = {"path": str(info.path), "bytes": info.bytes, **st,
                 "throughput_seq_per_s": settings.batch / (st["median_ms"] / 1000.0),
                 "throughput_tokens_per_s": settings.batch * settings.seq / (st["median_ms"] / 1000.0),
                 "ratio_to_first": float(np.median(paired)),
                 "ratio_to_first_p10": float(np.percentile(paired, 10)),
                 "ratio_to_first_p90": float(np.percentile(paired, 90)),
                 "round_medians_ms": [round(1000 * t, 3) for t in round_medians[i]],
                 "runtime": runner.describe()}
        if settings.check_numerics:
            entry["numerics"] = numerics_check(runner, info, feeds[i], settings)
        results.append(entry)
    del runners  # free the sessions before the memory probes start their own
    if settings.memory and settings.device == "cpu":
        for entry, info in zip(results, infos):
            mem = peak_memory(info, settings)
            entry["peak_memory_bytes"] = None if mem is None else mem["peak_bytes"]
            entry["resident_memory_bytes"] = None if mem is None else mem["resident_bytes"]
    return {"settings": {k: v for k, v in asdict(settings).items()}, "models": results,
            "wall_seconds": round(wall, 2), "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after], "cpu_count": os.cpu_count()}


def numerics_check(runner, info: ModelInfo, feeds: dict, settings: BenchSettings) -> dict:
    """Outputs of the benchmarked session against a session with validate's defaults (threads chosen
    by ONNX Runtime, no extra config): speed settings must not change the numbers, or we say by how much."""
    default = make_runner(info.path, settings.device, 0, {})
    got = runner.session.run(None, feeds)
    ref = default.session.run(None, feeds)
    diff = max(float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max()) for a, b in zip(got, ref))
    return {"max_abs_diff_vs_default_session": diff, "identical": diff == 0.0,
            "default_session": {"intra_op_num_threads": 0, "session_config": {}}}
