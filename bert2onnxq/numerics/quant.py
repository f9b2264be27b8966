"""Weight quantization parameters (LQ min-max, ACIQ) and reference quantize/dequantize.

Weights are ONNX MatMul weights W[K, N]: "channel" means one scale per output feature (axis 1),
"group" means blocks of `group_size` consecutive input features per output feature (axis 0),
exactly the per-axis / blocked layouts of ONNX DequantizeLinear. "neuron-group" (Q-BERT) means
`groups` runs of consecutive output features sharing one range; it is written as a per-axis
(axis 1) scale whose values are equal within a run (see `neuron_groups` for the partition rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .aciq import DISTRIBUTIONS, optimal_alpha
from .packing import container_bits

GRANULARITIES = ("tensor", "channel", "group", "neuron-group")


def container(bits: int, signed: bool) -> str:
    """ONNX element type name holding `bits`-bit values: int8/uint8/int4/uint4/int2/uint2."""
    return f"{'' if signed else 'u'}int{container_bits(bits)}"


def int_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """Symmetric: narrow signed [-(2^(b-1)-1), 2^(b-1)-1], so +-alpha map to +-qmax; else unsigned [0, 2^b-1]."""
    container_bits(bits)  # validates bits
    if symmetric:
        m = (1 << (bits - 1)) - 1
        return -m, m
    return 0, (1 << bits) - 1


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on arrays is ambiguous
class QuantParams:
    """Everything the graph layer writes: scale (+ zero point) laid out for DequantizeLinear.

    clip is alpha (symmetric) or the half-width (hi - lo) / 2 (asymmetric); lo/hi are the real range used.
    """
    bits: int
    symmetric: bool
    granularity: str
    scale: np.ndarray
    zero_point: np.ndarray | None
    axis: int | None
    block_size: int | None
    clip: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    column_groups: np.ndarray | None = None  # neuron-group: the group of every output column
    # two-level group scales (numerics.runtime.two_level_params): scale == channel_scale * multiplier exactly
    channel_scale: np.ndarray | None = None  # [N] float32
    multiplier: np.ndarray | None = None  # [blocks, N] integers 1..127 // max|q - z|

    @property
    def num_scales(self) -> int:
        """Distinct ranges: a neuron-group scale repeats one value per group along its N columns."""
        if self.column_groups is not None:
            return int(self.column_groups.max()) + 1
        return int(np.asarray(self.scale).size)

    @property
    def signed(self) -> bool:
        return self.symmetric

    @property
    def container(self) -> str:
        return container(self.bits, self.symmetric)


def neuron_groups(n: int, groups: int, heads: int | None = None) -> np.ndarray:
    """Group index (0..groups-1, non-decreasing) of each of `n` output columns: Q-BERT's group-wise ranges.

    Runs of consecutive columns whose sizes differ by at most one, larger runs first (np.array_split).
    With `heads` (query/key/value: n = heads x head_dim, head-major), no run straddles two heads:
      * groups >= heads: head h is split into groups // heads runs, plus one more for the first
        groups % heads heads (128 groups over 12 heads: 8 heads of 11 runs, 4 heads of 10);
      * groups < heads: the heads are split into `groups` runs of whole consecutive heads.
    groups = 1 is per-tensor, groups = n is per-channel.
    """
    n, groups = int(n), int(groups)
    if not 1 <= groups <= n:
        raise ValueError(f"groups must be in 1..{n} (the number of output columns), got {groups}")
    heads = int(heads or 1)
    if heads < 1 or n % heads:
        raise ValueError(f"{n} columns do not split into {heads} heads")
    ids = np.empty(n, dtype=np.int64)
    if heads == 1 or groups < heads:
        # whole heads per run when groups < heads: runs of heads, then of their columns
        units = heads if heads > 1 else n
        width = n // units
        start = 0
        for g, run in enumerate(np.array_split(np.arange(units), groups)):
            ids[start: start + len(run) * width] = g
            start += len(run) * width
        return ids
    head_dim = n // heads
    base, extra = divmod(groups, heads)
    g = 0
    for h in range(heads):
        for run in np.array_split(np.arange(head_dim), base + (h < extra)):
            ids[h * head_dim + run] = g
            g += 1
    return ids


def _neuron_blocks(w: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """w [K, N] as (1, K * widest run, G) with NaN padding: column g holds every element of group g."""
    k, _ = w.shape
    g = int(ids.max()) + 1
    sizes = np.bincount(ids, minlength=g)
    cols = np.full((g, sizes.max()), -1)  # -1 reads the NaN column appended below
    for group in range(g):
        members = np.flatnonzero(ids == group)
        cols[group, : len(members)] = members
    padded = np.concatenate([w, np.full((k, 1), np.nan)], axis=1)[:, cols]  # (K, G, widest)
    return padded.transpose(0, 2, 1).reshape(1, -1, g)


def _blocks(w, granularity, group_size, groups=None, heads=None):
    """w as (G, B, N) float64 with NaN padding, statistics over axis 1, and the scale shape.

    neuron-group: statistics per group, shape (G,), and the column -> group index as third value.
    """
    w = np.asarray(w, dtype=np.float64)
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if w.size == 0 or not np.isfinite(w).all():
        raise ValueError("weight must be non-empty and finite")
    if granularity == "tensor":
        return w.reshape(1, -1, 1), (), None
    if w.ndim != 2:
        raise ValueError(f"{granularity} granularity needs a 2-D [K, N] weight, got shape {w.shape}")
    k, n = w.shape
    if granularity == "channel":
        return w[None], (n,), None
    if granularity == "neuron-group":
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)):
            raise ValueError(f"neuron-group granularity needs an integer number of groups, got {groups!r}")
        ids = neuron_groups(n, groups, heads)
        return _neuron_blocks(w, ids), (int(ids.max()) + 1,), ids
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
        raise ValueError(f"group granularity needs a positive integer group_size, got {group_size!r}")
    g = -(-k // group_size)
    pad = g * group_size - k
    if pad:  # NaN so the short last block's statistics only see its real elements
        w = np.concatenate([w, np.full((pad, n), np.nan)])
    return w.reshape(g, group_size, n), (g, n), None


def weight_ranges(w, granularity, group_size=None, groups=None, heads=None):
    """(min, max) per tensor / channel / group / neuron group, float32, shaped like the scale
    (neuron-group: one value per column, repeated within its group)."""
    x, shape, ids = _blocks(w, granularity, group_size, groups, heads)
    lo, hi = np.nanmin(x, axis=1).reshape(shape), np.nanmax(x, axis=1).reshape(shape)
    if ids is not None:
        lo, hi = lo[ids], hi[ids]
    return lo.astype(np.float32), hi.astype(np.float32)


def _f32(x) -> np.ndarray:
    # np ufuncs turn 0-d arrays into scalars; keep real ndarrays for per-tensor params too.
    return np.asarray(x, dtype=np.float32)


def _make(bits, symmetric, granularity, group_size, lo, hi, column_groups=None) -> QuantParams:
    """Scales from real ranges; neuron-group ranges arrive one per column (equal within a group)."""
    qmin, qmax = int_range(bits, symmetric)
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if symmetric:
        clip = np.maximum(-lo, hi)
        lo, hi, raw = -clip, clip, clip / qmax
    else:
        # Keep 0 inside the range: zero is exact and the zero point fits in [0, qmax].
        lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
        clip, raw = (hi - lo) / 2, (hi - lo) / qmax
    scale = _f32(np.where(_f32(raw) > 0, _f32(raw), 1.0))  # all-zero block: any scale is exact
    zp = None
    if not symmetric:
        zp = np.asarray(np.clip(np.rint(-lo / scale.astype(np.float64)), qmin, qmax), dtype=np.uint8)
    axis = {"tensor": None, "channel": 1, "group": 0, "neuron-group": 1}[granularity]
    return QuantParams(bits, bool(symmetric), granularity, scale, zp, axis,
                       int(group_size) if granularity == "group" else None, _f32(clip), _f32(lo), _f32(hi),
                       column_groups)


def lq_params(w, bits, *, symmetric=True, granularity="channel", group_size=None, groups=None,
              heads=None) -> QuantParams:
    """Min-max (LQ): symmetric clips at max|w|, asymmetric at [min, max] (widened to include 0)."""
    lo, hi = weight_ranges(w, granularity, group_size, groups, heads)
    ids = neuron_groups(np.shape(w)[1], groups, heads) if granularity == "neuron-group" else None
    return _make(bits, symmetric, granularity, group_size, lo, hi, ids)


def aciq_params(w, bits, *, distribution="laplace", symmetric=True, granularity="channel",
                group_size=None, groups=None, heads=None) -> QuantParams:
    """ACIQ: alpha = optimal_alpha(bits) * b (b = mean|w - mu|) or * sigma, per tensor/channel/group.

    Symmetric clips at min(alpha, max|w|); asymmetric at [mu - alpha, mu + alpha] intersected with
    [min, max] (then widened to include 0 like LQ).
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    x, shape, ids = _blocks(w, granularity, group_size, groups, heads)
    mu = np.nanmean(x, axis=1, keepdims=True)
    spread = np.nanmean(np.abs(x - mu), axis=1) if distribution == "laplace" else np.nanstd(x, axis=1)
    alpha = (optimal_alpha(bits, distribution) * spread).reshape(shape)
    mu = mu.reshape(shape)
    lo, hi = np.nanmin(x, axis=1).reshape(shape), np.nanmax(x, axis=1).reshape(shape)
    if ids is not None:  # per group -> per column
        alpha, mu, lo, hi = alpha[ids], mu[ids], lo[ids], hi[ids]
    if symmetric:
        a = np.minimum(alpha, np.maximum(-lo, hi))
        return _make(bits, True, granularity, group_size, -a, a, ids)
    return _make(bits, False, granularity, group_size, np.maximum(lo, mu - alpha), np.minimum(hi, mu + alpha), ids)


def expand_scale(scale, shape, axis, block_size) -> np.ndarray:
    """Broadcast a scale (or zero point) to `shape` with DequantizeLinear's per-tensor/per-axis/blocked rules."""
    scale = np.asarray(scale)
    shape = tuple(shape)
    if scale.ndim == 0 or axis is None:
        if scale.size != 1:
            raise ValueError(f"per-tensor scale must have one element, got shape {scale.shape}")
        return np.broadcast_to(scale.reshape(()), shape)
    axis = axis % len(shape)
    d = shape[axis]
    if block_size is None:
        if scale.shape != (d,):
            raise ValueError(f"per-axis scale must have shape ({d},), got {scale.shape}")
        view = [1] * len(shape)
        view[axis] = d
        return np.broadcast_to(scale.reshape(view), shape)
    want = shape[:axis] + (-(-d // block_size),) + shape[axis + 1:]
    if scale.shape != want:
        raise ValueError(f"blocked scale must have shape {want}, got {scale.shape}")
    full = np.repeat(scale, block_size, axis=axis)
    return full[(slice(None),) * axis + (slice(0, d),)]


def expanded_grid(params: QuantParams, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero point) of every element of a [K, N] weight on `params`' grid, float64 (zero: 0 if symmetric)."""
    scale = expand_scale(params.scale, shape, params.axis, params.block_size).astype(np.float64)
    zero = (expand_scale(params.zero_point, shape, params.axis, params.block_size).astype(np.float64)
            if params.zero_point is not None else np.zeros_like(scale))
    return scale, zero


def quantize(w, p: QuantParams) -> np.ndarray:
    """rint(w / scale) (+ zero point), half to even, clipped to int_range; int8 if signed else uint8."""
    w = np.asarray(w, dtype=np.float64)
    qmin, qmax = int_range(p.bits, p.symmetric)
    # Divide by the stored float32 scale so dequantize(quantize(w)) uses the same grid.
    q = np.rint(w / expand_scale(p.scale, w.shape, p.axis, p.block_size).astype(np.float64))
    if p.zero_point is not None:
        q += expand_scale(p.zero_point, w.shape, p.axis, p.block_size)
    return np.clip(q, qmin, qmax).astype(np.int8 if p.signed else np.uint8)


def dequantize(q, p: QuantParams) -> np.ndarray:
    """DequantizeLinear: (q - zero_point) in int32, converted to float32, times the float32 scale."""
    q = np.asarray(q)
    d = q.astype(np.int32)
    if p.zero_point is not None:
        d = d - expand_scale(p.zero_point, q.shape, p.axis, p.block_size).astype(np.int32)
    s = expand_scale(p.scale, q.shape, p.axis, p.block_size).astype(np.float32)
    return (d.astype(np.float32) * s).astype(np.float32)


def mse(a, b) -> float:
    """Mean squared error, accumulated in float64."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(np.mean(diff * diff))
