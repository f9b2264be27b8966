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


def split_order(row_max, s: int) -> list[int]:
    """The greedy OCS order: s times, the row with the largest current max (ties: lowest row) is halved
    and a copy appended (a copy may be chosen again); returns the row split at each step."""
    row_max = np.concatenate([np.asarray(row_max, np.float64), np.zeros(s)])
    k, rows = len(row_max) - s, []
    for j in range(s):
        r = int(np.argmax(row_max[:k + j]))  # argmax returns the first maximum: ties go to the lowest row
        row_max[r] *= 0.5  # halving a row halves its max exactly
        row_max[k + j] = row_max[r]
        rows.append(r)
    return rows


def replay_splits(k: int, split_rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(index, factor) of K channels after `split_rows`: index[i] = the original channel of row i,
    factor[i] = 0.5 ** (times row i was halved), a power of two, so scaling by it is exact."""
    s = len(split_rows)
    index = np.concatenate([np.arange(k, dtype=np.int64), np.zeros(s, np.int64)])
    factor = np.ones(k + s, np.float64)
    for j, r in enumerate(split_rows):
        if not 0 <= r < k + j:
            raise ValueError(f"split {j} takes row {r}, which does not exist yet (0..{k + j - 1})")
        factor[r] *= 0.5
        index[k + j], factor[k + j] = index[r], factor[r]  # a re-split copy still reads the original channel
    return index, factor


def ocs_split(w, ratio: float) -> OCSSplit:
    """Split ceil(ratio * K) times the row holding the largest |w| of the current matrix (ties: lowest row)."""
    w = np.asarray(w, dtype=np.float32)  # fp16 checkpoints -> float32, the graph's MatMul dtype
    if w.ndim != 2 or w.size == 0 or not np.isfinite(w).all():
        raise ValueError(f"weight must be a non-empty finite 2-D [K, N] matrix, got shape {w.shape}")
    rows = split_order(np.abs(w).max(axis=1), num_splits(w.shape[0], ratio))
    index, factor = replay_splits(w.shape[0], rows)
    return OCSSplit((w[index] * factor[:, None]).astype(np.float32), index, rows)


@dataclass(frozen=True, eq=False)
class ActivationSplit:
    """OCS on an activation x [..., K]: x' = x[..., index] * factor, and W's rows duplicated unchanged
    (W[index]), so x' @ W[index] == x @ W while the outlier channels of x' are halved before quantization."""
    index: np.ndarray
    factor: np.ndarray
    split_rows: list[int]

    @classmethod
    def from_rows(cls, k: int, split_rows: list[int]) -> "ActivationSplit":
        index, factor = replay_splits(k, split_rows)
        return cls(index, factor, list(split_rows))


def activation_split(channel_absmax, ratio: float) -> ActivationSplit:
    """Split ceil(ratio * K) times the channel with the largest calibrated max|x| (same rule as weights)."""
    channel_absmax = np.asarray(channel_absmax, np.float64)
    if channel_absmax.ndim != 1 or not np.isfinite(channel_absmax).all():
        raise ValueError("channel_absmax must be a finite 1-D vector (one max|x| per channel)")
    k = len(channel_absmax)
    return ActivationSplit.from_rows(k, split_order(channel_absmax, num_splits(k, ratio)))


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
