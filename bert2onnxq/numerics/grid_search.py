"""Range search on the layer's input importance: shrink each scale's range to the factor that minimises
the importance-weighted error of nearest rounding.

A min-max range spends most of a 2-3-bit grid on a few outliers; a per-block shrink p in (0, 1] of
[lo, hi] trades clipping those for a finer step everywhere else. The error that matters is the
layer's output error ||X (W - W_hat)||^2; its diagonal part, sum_k H[k, k] (W[k, n] - W_hat[k, n])^2
(H = X^T X), separates into one term per scale (tensor, channel, group or neuron group), so every
block picks its own p exactly (the importance-matrix weighting of llama.cpp's k-quants; GPTQ's
reference code searches the same shrink on the unweighted error). GPTQ then rounds on the chosen grid
and compensates the off-diagonal part. With shrinks = (1,) it returns the grid it was given.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .quant import QuantParams, _blocks, _make, dequantize, quantize

# 1.00, 0.98, ..., 0.50 (GPTQ's reference search goes on to 0.2: on SQuAD that moved the mean output error
# by under 5%, docs/rounding.md)
SHRINKS = tuple(np.round(np.arange(1.0, 0.499, -0.02), 2))


def search_range(w: np.ndarray, params: QuantParams, importance: np.ndarray, shrinks=SHRINKS) -> QuantParams:
    """`params`' grid for W [K, N] with every block's range [lo, hi] scaled by the shrink in `shrinks`
    that minimises sum over the block of importance[k] * (W - dequantize(quantize(W)))^2.

    importance: [K] non-negative weights of the input rows (the diagonal of H). Two-level params are
    not accepted: search first, then derive the two-level form from the result."""
    w = np.asarray(w, np.float64)
    importance = np.asarray(importance, np.float64)
    if params.channel_scale is not None:
        raise ValueError("search the range before deriving two-level scales")
    if w.ndim != 2 or importance.shape != (w.shape[0],) or (importance < 0).any():
        raise ValueError(f"importance must be [{w.shape[0] if w.ndim == 2 else '?'}] and non-negative, "
                         f"got shape {importance.shape}")
    if not shrinks or min(shrinks) <= 0 or max(shrinks) > 1:
        raise ValueError("shrinks must be factors in (0, 1]")
    groups = params.column_groups
    n_groups = None if groups is None else int(groups.max()) + 1
    weights = np.broadcast_to(importance[:, None], w.shape)

    def fit(lo, hi):
        return _make(params.bits, params.symmetric, params.granularity, params.block_size, lo, hi, groups)

    def block_error(p: QuantParams) -> np.ndarray:  # one error per distinct scale, shaped like params.lo
        e = weights * (w - dequantize(quantize(w, p), p)) ** 2
        if groups is not None:  # per neuron group, repeated on its columns like lo/hi
            return np.bincount(groups, weights=e.sum(axis=0), minlength=n_groups)[groups]
        x, shape, _ = _blocks(e, params.granularity, params.block_size)
        return np.nansum(x, axis=1).reshape(shape)

    lo, hi = np.asarray(params.lo, np.float64), np.asarray(params.hi, np.float64)
    best, best_err = np.ones_like(lo), np.full(lo.shape, np.inf)
    for s in shrinks:
        err = block_error(params if s == 1 else fit(s * lo, s * hi))
        better = err < best_err * (1 - 1e-12)  # ties keep the wider range (the first tried)
        best, best_err = np.where(better, s, best), np.where(better, err, best_err)
    shrunk, kept = fit(best * lo, best * hi), best == 1  # a block that keeps its range keeps its exact scale

    def pick(name):
        a, b = getattr(params, name), getattr(shrunk, name)
        return None if a is None else np.where(kept, a, b).astype(np.asarray(a).dtype)
    return replace(shrunk, **{f: pick(f) for f in ("scale", "zero_point", "clip", "lo", "hi")})
