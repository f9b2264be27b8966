"""Outlier Channel Splitting (OCS; Zhao et al., ICML 2019) for an ONNX MatMul weight W[K, N].

Rule (cornell-zhang/dnn-quant-ocs `ocs_wts` with split_threshold=0): ceil(ratio * K) times, take the row
of the CURRENT matrix holding the largest |w| (ties: lowest row), halve it in place and append a copy of
the halved row. A row appended by an earlier split may be taken again. The graph layer feeds the MatMul
x' = Gather(x, index, axis=-1), so x' @ W' == x @ W, while max|W'| shrinks and a min-max quantizer gets
a finer step. The grid-aware variant (paper, Sec. 3.2) nudges each pair of halves by -+delta/4 so that
they round to neighbouring grid points instead of both making the same rounding error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .quant import QuantParams, aciq_params, expand_scale, lq_params


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on arrays is ambiguous
class OCSSplit:
    """W' [K + s, N] float32, its input gather `index` [K + s] int64, and the row split at each step.

    Rows 0..K-1 are W's rows (split ones halved), rows K.. the appended halves in split order.
    index[:K] = arange(K); index[K + j] = the ORIGINAL input channel of split j (also for re-splits).
    split_rows[j] = row of W' (0..K+j-1) halved at split j; >= K when an appended row was split again.
    """
    weight: np.ndarray
    index: np.ndarray
    split_rows: list[int]

    @property
    def num_splits(self) -> int:
        return len(self.split_rows)

    @property
    def k(self) -> int:
        return self.weight.shape[0] - self.num_splits

    def fold(self, m=None) -> np.ndarray:
        """Sum rows of `m` (default W'; e.g. a dequantized W') sharing an input channel: the effective
        [K, N] weight, float64. fold() of a plain split is exactly W (halving is exact in binary)."""
        m = self.weight if m is None else np.asarray(m)
        out = np.zeros((self.k,) + m.shape[1:], np.float64)
        np.add.at(out, self.index, m.astype(np.float64))
        return out


def num_splits(k: int, ratio: float) -> int:
    """ceil(ratio * K) (0 for ratio 0), as in `ocs_wts`."""
    if not (math.isfinite(ratio) and ratio >= 0):
        raise ValueError(f"ratio must be finite and >= 0, got {ratio!r}")
    # round() first: 0.1 * 30 is 3.0000000000000004 in binary and must give 3 splits, not 4.
    return math.ceil(round(ratio * k, 9))


def ocs_split(w, ratio: float) -> OCSSplit:
    """Split ceil(ratio * K) times the row holding the largest |w| of the current matrix (ties: lowest row)."""
    w = np.asarray(w, dtype=np.float32)  # fp16 checkpoints -> float32, the graph's MatMul dtype
    if w.ndim != 2 or w.size == 0 or not np.isfinite(w).all():
        raise ValueError(f"weight must be a non-empty finite 2-D [K, N] matrix, got shape {w.shape}")
    k, n = w.shape
    s = num_splits(k, ratio)
    out = np.empty((k + s, n), np.float32)
    out[:k] = w
    index = np.concatenate([np.arange(k, dtype=np.int64), np.zeros(s, np.int64)])
    # Per-row max|w| kept up to date (halving a row halves its max exactly), so each split costs O(N)
    # instead of rescanning the whole matrix.
    row_max = np.abs(out[:k]).max(axis=1)
    row_max = np.concatenate([row_max, np.zeros(s, np.float32)])
    rows = []
    for j in range(s):
        r = int(np.argmax(row_max[:k + j]))  # argmax returns the first maximum: ties go to the lowest row
        out[r] *= 0.5
        out[k + j] = out[r]
        row_max[r] *= 0.5
        row_max[k + j] = row_max[r]
        index[k + j] = index[r]  # a re-split appended row still reads the original input channel
        rows.append(r)
    return OCSSplit(out, index, rows)


def grid_aware(split: OCSSplit, scale_of: Callable[[np.ndarray], np.ndarray]) -> OCSSplit:
    """Quantization-aware halves: each split pair becomes v/2 - delta/4 and v/2 + delta/4 (same sum v).

    scale_of(W') returns the quantization step per element of W' (any granularity), e.g.
    ``lambda m: expand_scale(p.scale, m.shape, p.axis, p.block_size)`` with p computed on the plain split;
    quantize the result with that same p (re-fitting a min-max range on the nudged W' would move the grid).
    With u = v/2 in steps, the halves round to floor(u), ceil(u) when frac(u) is in [1/4, 3/4), so the pair
    errs by <= delta/2 (like quantizing v itself) instead of up to delta for 2 * round(u) (inside the clip
    range; a channel split m times collects m such errors, one per piece that was not split again).

    Ordering for re-split rows: delta is computed ONCE on the plainly split W'; the splits are then replayed
    from W in split order, each halving the CURRENT (already nudged) value v of its row, with the step of
    that row (delta[r], also used for the appended half: with group granularity the two halves may sit in
    blocks of different steps, where the delta/2 bound is not guaranteed). Exact zeros stay 0 and 0 (as in
    `ocs_wts`): both halves already quantize to 0.
    """
    k, n = split.k, split.weight.shape[1]
    delta = np.broadcast_to(np.asarray(scale_of(split.weight), np.float64), split.weight.shape)
    w = split.fold()  # the original W, exactly
    cur = np.zeros((k + split.num_splits, n), np.float64)  # float64 so the pair sums are exact to ~1e-16
    cur[:k] = w
    for j, r in enumerate(split.split_rows):
        v = cur[r].copy()
        nudge = np.where(v != 0, delta[r] / 4, 0.0)
        cur[r], cur[k + j] = v / 2 - nudge, v / 2 + nudge
        # Float64 cancellation: exact up to ~1e-16 of the magnitudes involved (v and the nudge).
        assert np.all(np.abs(cur[r] + cur[k + j] - v) <= 1e-12 * (np.abs(v) + delta[r])), "pair sum != v"
    out = cur.astype(np.float32)
    # The cast rounds each half to float32 separately: the sum keeps W to float32 precision, not bit-exact.
    tol = 4 * np.finfo(np.float32).eps * (np.abs(w).max() + np.abs(delta).max())
    assert np.allclose(split.fold(out), w, rtol=0, atol=tol), "grid-aware halves changed the effective W"
    return OCSSplit(out, split.index.copy(), list(split.split_rows))


def ocs_params(w, ratio: float, bits: int, *, method: str = "lq", grid: bool = False,
               **kwargs) -> tuple[OCSSplit, QuantParams]:
    """ocs_split, then LQ (method="lq") or ACIQ ("aciq") params on W' (kwargs go to lq_params/aciq_params:
    symmetric, granularity, group_size, distribution). grid=True then applies `grid_aware` with the step of
    those same params, which stay the ones to quantize the returned W' with."""
    fit = {"lq": lq_params, "aciq": aciq_params}.get(method)
    if fit is None:
        raise ValueError(f"method must be 'lq' or 'aciq', got {method!r}")
    split = ocs_split(w, ratio)
    p = fit(split.weight, bits, **kwargs)
    if grid:
        split = grid_aware(split, lambda m: expand_scale(p.scale, m.shape, p.axis, p.block_size))
    return split, p
