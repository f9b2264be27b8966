"""Integer forms that let ONNX Runtime run a planned weight on its int8 GEMM, computed on plain arrays.

Both are exact statements about integers and float32 arithmetic, so the graph can rebuild them with
constant-folded ops at session load and tests can compare ORT's result with these functions bit for bit.

* `fold_ocs`: OCS duplicates input channels (x[..., idx] @ W'). With one scale (and zero point) per
  output channel, sum_r x[idx[r]] s_n (q[r, n] - z_n) = sum_k x[k] s_n Q[k, n] with the integer matrix
  Q[k, n] = sum over the rows r that read channel k of (q[r, n] - z_n). When |Q| <= 127 the split weight
  runs as an ordinary int8 per-channel weight: no Gather, no extra multiply-adds, and with 8-bit
  activations the integer dot products are the same as the split form's.
* `two_level_params`: a group-wise weight (one scale per block of inputs) has no int8 GEMM in ONNX
  Runtime's CPU provider. With two-level scales, a float scale c[n] per output channel times a small
  integer multiplier m[g, n] per block (llama.cpp's k-quants have the same shape), the int8 values
  m[g, n] * (q - z) and the per-channel scale c give exactly the group-wise weight: the int8 GEMM runs
  it with no second rounding. c keeps 16 significant bits, so c * m and c * m * (q - z) are exact in
  float32 (|m (q - z)| <= 127 needs at most 7 bits) and DequantizeLinear(m (q - z), c) equals
  DequantizeLinear(q, c * m, z) bit for bit.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .quant import QuantParams, expand_scale, int_range

INT8_MAX = 127


def fold_ocs(q: np.ndarray, params: QuantParams, index: np.ndarray) -> np.ndarray | None:
    """Q [K, N] int64 (rows of q - zero point summed per input channel), or None when the form does not
    apply: group-wise scales (rows of different blocks cannot share one scale) or a sum that could leave
    int8 (the graph adds in int8, so even the sum of the absolute values must stay within 127)."""
    if params.block_size is not None:
        return None
    q = np.asarray(q).astype(np.int64)
    index = np.asarray(index, dtype=np.int64)
    k = int(index.max()) + 1 if index.size else 0
    if q.shape[0] != index.size or not np.array_equal(index[:k], np.arange(k)):
        raise ValueError("index must start with arange(K) and have one entry per row of q")
    if params.zero_point is not None:
        q = q - expand_scale(params.zero_point, q.shape, params.axis, None).astype(np.int64)
    folded, magnitude = np.zeros((k,) + q.shape[1:], np.int64), np.zeros((k,) + q.shape[1:], np.int64)
    np.add.at(folded, index, q)
    np.add.at(magnitude, index, np.abs(q))
    return folded if magnitude.max(initial=0) <= INT8_MAX else None


def multiplier_limit(bits: int, symmetric: bool) -> int:
    """The largest multiplier m with m * max|q - z| <= 127 on the `bits` grid (int_range)."""
    qmin, qmax = int_range(bits, symmetric)
    return INT8_MAX // max(abs(qmin), qmax)


def _round_up_16_bits(x: np.ndarray) -> np.ndarray:
    """x rounded up to a 16-bit significand, as float32 (x > 0)."""
    mantissa, exponent = np.frexp(np.asarray(x, np.float64))
    return np.ldexp(np.ceil(mantissa * 65536.0) / 65536.0, exponent).astype(np.float32)


def two_level_params(w: np.ndarray, params: QuantParams) -> QuantParams:
    """The group-wise grid of `params` with two-level scales (module docstring), for W [K, N].

    A block may take multipliers up to 127 // max|q - z| on its own grid: the same for every block when
    symmetric; asymmetric, a block whose zero point sits mid-range allows about twice the multiplier of
    one whose range starts at 0 (15 vs 8 at 4 bits). c[n] is the smallest channel scale that leaves
    every block of the column its own scale within its limit; each block then takes the multiplier just
    below or just above its scale / c, the one with the smaller squared error of nearest rounding on
    its weights (below clips a little, above widens the step). Asymmetric blocks keep their lower bound
    and recompute their zero point; a multiplier that the new zero point would push past int8 is
    lowered until it fits."""
    if params.block_size is None or np.asarray(w).ndim != 2:
        raise ValueError("two-level scales need group-wise (blocked) [K, N] weights")
    w = np.asarray(w, np.float64)
    k, n = w.shape
    b = params.block_size
    if multiplier_limit(params.bits, params.symmetric) < 1:
        raise ValueError(f"{params.bits}-bit values do not fit int8 with a multiplier")
    g = -(-k // b)
    blocks = np.concatenate([w, np.full((g * b - k, n), np.nan)]).reshape(g, b, n)
    scale = np.asarray(params.scale, np.float64)
    live = np.asarray(params.clip, np.float64) > 0  # all-zero blocks: any scale is exact
    qmin, qmax = int_range(params.bits, params.symmetric)
    lo = None if params.symmetric else np.asarray(params.lo, np.float64)

    def span(z):  # max |q - z| over the grid
        return np.full(z.shape, max(-qmin, qmax)) if lo is None else np.maximum(z, qmax - z)

    def zero_point(s):
        return np.zeros_like(s) if lo is None else np.clip(np.rint(-lo / s), qmin, qmax)

    limit = INT8_MAX // span(zero_point(scale))
    peak = np.where(live, scale / limit, 0.0).max(axis=0)
    channel = np.where(peak > 0, _round_up_16_bits(np.where(peak > 0, peak, 1.0)), np.float32(1.0))
    ratio = np.where(live, scale / channel.astype(np.float64), 1.0)

    def candidate(m):
        m = m.copy()
        while True:  # the candidate's own zero point decides its span
            s = channel.astype(np.float64) * m  # exact in float32 (module docstring)
            z = zero_point(s)
            over = m * span(z) > INT8_MAX
            if not over.any():
                break
            m[over] -= 1
        q = np.clip(np.rint(blocks / s[:, None, :]) + z[:, None, :], qmin, qmax)
        return m, s, z, np.nansum((blocks - (q - z[:, None, :]) * s[:, None, :]) ** 2, axis=1)

    (m_lo, s_lo, z_lo, e_lo), (m_hi, s_hi, z_hi, e_hi) = (candidate(np.clip(f(ratio), 1, limit).astype(np.int64))
                                                          for f in (np.floor, np.ceil))
    take_below = e_lo <= e_hi
    multiplier = np.where(take_below, m_lo, m_hi).astype(np.int8)
    s = np.where(take_below, s_lo, s_hi).astype(np.float32)
    zero = None if lo is None else np.where(take_below, z_lo, z_hi).astype(np.uint8)
    if lo is None:
        clip, lo_, hi_ = s * qmax, -s * qmax, s * qmax
    else:
        lo_ = (-zero.astype(np.float64) * s).astype(np.float32)
        hi_ = ((qmax - zero.astype(np.float64)) * s).astype(np.float32)
        clip = ((hi_ - lo_) / 2).astype(np.float32)
    return replace(params, scale=s, zero_point=zero, clip=clip.astype(np.float32), lo=lo_.astype(np.float32),
                   hi=hi_.astype(np.float32), channel_scale=channel, multiplier=multiplier)


def two_level_int8(q: np.ndarray, params: QuantParams) -> np.ndarray:
    """The int8 [K, N] values m[g, n] * (q - z) that the graph multiplies out at session load."""
    if params.multiplier is None:
        raise ValueError("two_level_int8 takes two-level params (two_level_params)")
    d = np.asarray(q).astype(np.int32)
    if params.zero_point is not None:
        d = d - expand_scale(params.zero_point, d.shape, params.axis, params.block_size).astype(np.int32)
    m = expand_scale(params.multiplier, d.shape, params.axis, params.block_size).astype(np.int32)
    return (d * m).astype(np.int8)
