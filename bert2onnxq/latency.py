"""A short, interleaved latency comparison of a model against its FP32 reference.

Deliberately small: `sweep` and `convert --max-drop` only need a ratio to put in a table. The
`bench` command (full latency study) can replace the body of `latency_ratio` when it lands.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from .runtime import make_runner


def latency_ratio(model: Path, reference: Path, *, batch: int = 1, seq: int = 128, rounds: int = 5,
                  runs_per_round: int = 5, warmup: int = 2, threads: int = 1) -> dict:
    """Median over `rounds` of (model time / reference time), the two timed alternately.

    Each round times `runs_per_round` runs of the reference, then of the model, on the same
    batch x seq input (token ids < 50, full attention mask: the content does not change the work).
    Alternating rounds makes slow drifts of a shared machine hit both models alike; one thread
    (default) keeps parallel sweep jobs from competing for the same cores inside one measurement.
    """
    runners = {"model": make_runner(Path(model), threads=threads), "reference": make_runner(Path(reference), threads=threads)}
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 50, size=(batch, seq), dtype=np.int64)
    base = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    feeds = {k: {n: base[n] for n in r.input_names} for k, r in runners.items()}
    for _ in range(warmup):
        for k, r in runners.items():
            r.session.run(None, feeds[k])
    times: dict[str, list[float]] = {"model": [], "reference": []}
    for _ in range(rounds):
        for k in ("reference", "model"):
            start = time.perf_counter()
            for _ in range(runs_per_round):
                runners[k].session.run(None, feeds[k])
            times[k].append((time.perf_counter() - start) / runs_per_round)
    ratios = [m / r for m, r in zip(times["model"], times["reference"])]
    return {
        "ratio": statistics.median(ratios),
        "model_ms": 1000 * statistics.median(times["model"]),
        "reference_ms": 1000 * statistics.median(times["reference"]),
        "setup": {"batch": batch, "seq": seq, "rounds": rounds, "runs_per_round": runs_per_round,
                  "warmup": warmup, "intra_op_threads": threads, "statistic": "median of per-round ratios"},
    }
