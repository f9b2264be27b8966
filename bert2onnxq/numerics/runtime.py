"""Integer forms that let ONNX Runtime run a planned weight on its int8 GEMM, computed on plain arrays.

Both are exact statements about integers and float32 arithmetic, so the graph can rebuild them with
constant-folded ops at session load and tests can compare ORT's result with these functions bit for bit.

* `fold_ocs`: OCS duplicates input channels (x[..., idx] @ W'). With one scale (and zero point) per
  output channel, sum_r x[idx[r]] s_n (q[r, n] - z_n) = sum_k x[k] s_n Q[k, n] with the integer matrix
  Q[k, n] = sum over the rows r that read channel k of (q[r, n] - z_n). When |Q| <= 127 the split weight
  runs as an ordinary int8 per-channel weight: no Gather, no extra multiply-adds, and with 8-bit
  activations the integer dot products are the same as the split form's.
* `requantize_int8`: a group-wise weight (one scale per block of inputs) has no int8 GEMM in ONNX
  Runtime's CPU provider. Its values are requantized per output channel to int8 (step
  max|W[:, n]| / 127): a second rounding, about half an int8 step per weight at most.
"""

from __future__ import annotations

import numpy as np

from .quant import QuantParams, dequantize, expand_scale

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


def requantize_int8(q: np.ndarray, params: QuantParams) -> tuple[np.ndarray, QuantParams]:
    """(int8 values, per-output-channel symmetric int8 params) for group-wise integers q.

    The int8 step of column n is s8 = float32(max|w[:, n]| / 127) with w = dequantize(q, params). The
    values are rint((q - z) / r) with the float32 ratio r = s8 / s (s: the block's scale), the division
    that the graph's blocked QuantizeLinear does (one float32 rounding away from rint(w / s8))."""
    if params.block_size is None or np.asarray(q).ndim != 2:
        raise ValueError("requantize_int8 takes group-wise (blocked) [K, N] weights")
    d = np.asarray(q).astype(np.int32)
    if params.zero_point is not None:
        d = d - expand_scale(params.zero_point, d.shape, params.axis, params.block_size).astype(np.int32)
    d = d.astype(np.float32)
    w = dequantize(q, params)
    peak = np.abs(w).max(axis=0).astype(np.float64)
    scale = np.where(peak > 0, peak / INT8_MAX, 1.0).astype(np.float32)
    ratio = (scale[None, :] / np.asarray(params.scale, np.float32)).astype(np.float32)  # [blocks, N]
    values = np.rint(d / expand_scale(ratio, d.shape, params.axis, params.block_size)).astype(np.float32)
    values = np.clip(values, -INT8_MAX - 1, INT8_MAX).astype(np.int8)
    rq = QuantParams(8, True, "channel", scale, None, 1, None, (scale * INT8_MAX).astype(np.float32))
    return values, rq
