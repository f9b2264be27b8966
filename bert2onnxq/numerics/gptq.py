"""Error-compensating rounding onto a fixed grid: the OBQ / GPTQ update (Frantar & Alistarh, 2022).

A MatMul weight W is [K inputs, N outputs] (y = x W). Nearest rounding minimises each weight's own
error; GPTQ minimises the layer's output error ||X (W - Q)||^2 = tr((W - Q)^T H (W - Q)) with
H = X^T X, one input row at a time: row k is rounded, and its error, scaled by the inverse Hessian,
is spread over the rows not yet rounded, so they absorb it. With the upper Cholesky factor U of
H^-1 (U^T U = H^-1), the update after row k is W[j] -= U[k, j] / U[k, k] * (W[k] - Q[k]) for j > k,
applied lazily per block of rows (the same arithmetic, in fewer, larger products).

The grid (scale and zero point per tensor, channel, group or neuron group, clipping included) is
given and never changed, so every integer is one the plan's grid can hold: with H = I the update
vanishes and the result is nearest rounding, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .quant import QuantParams, expanded_grid, int_range

PER_TOKEN_MIN_SCALE = np.float32(1e-12)  # the scale of an all-zero row: its values quantize to 0


@dataclass(frozen=True)
class GPTQSettings:
    damp: float = 0.01  # added to H's diagonal, as a fraction of its mean (GPTQ's percdamp)
    block: int = 128  # rows per lazy batch update
    act_order: bool = True  # round the rows with the largest H[k, k] (most active inputs) first


def damped(h: np.ndarray, damp: float) -> np.ndarray:
    """H + damp * mean(diag H) * I in float64; an input that never fires (H[k, k] = 0) gets a unit
    diagonal so that H stays invertible (its rounding then carries no weight)."""
    h = np.array(h, dtype=np.float64, copy=True)
    diag = np.diag(h).copy()
    dead = diag <= 0
    diag[dead] = 1.0
    np.fill_diagonal(h, diag)
    h[np.diag_indices_from(h)] += damp * float(np.mean(diag))
    return h


def gptq_quantize(w: np.ndarray, h: np.ndarray, params: QuantParams, settings: GPTQSettings = GPTQSettings()) -> np.ndarray:
    """Integers for W [K, N] on `params`' grid that (approximately) minimise tr((W - Q)^T H (W - Q)).

    Returns the same dtype and layout as numerics.quantize (int8 if signed else uint8).
    """
    return gptq_round(w, h, params, settings)[0]


def gptq_round(w: np.ndarray, h: np.ndarray, params: QuantParams,
               settings: GPTQSettings = GPTQSettings()) -> tuple[np.ndarray, np.ndarray]:
    """gptq_quantize's integers, and the error-compensated weights they are the nearest rounding of
    (each row as it stood when rounded, float64, W's layout): where training through the grid starts."""
    w = np.asarray(w, dtype=np.float64)
    k, n = w.shape
    if h.shape != (k, k):
        raise ValueError(f"H must be [{k}, {k}] for a weight of {k} input rows, got {h.shape}")
    if settings.block < 1 or settings.damp < 0:
        raise ValueError("block must be >= 1 and damp >= 0")
    qmin, qmax = int_range(params.bits, params.symmetric)
    scale, zero = expanded_grid(params, w.shape)
    hd = damped(h, settings.damp)
    # act order: the grid stays that of each row's own position (static groups), so any order is representable
    order = np.argsort(-np.diag(hd), kind="stable") if settings.act_order else np.arange(k)
    w, scale, zero, hd = w[order], scale[order], zero[order], hd[np.ix_(order, order)]
    u = upper_cholesky_of_inverse(hd)
    q = np.empty((k, n), dtype=np.float64)
    updated = np.empty((k, n), dtype=np.float64)
    for start in range(0, k, settings.block):
        stop = min(start + settings.block, k)
        wb = w[start:stop].copy()
        errors = np.empty_like(wb)
        for i in range(stop - start):
            r = start + i
            updated[r] = wb[i]
            qi = np.clip(np.rint(wb[i] / scale[r]) + zero[r], qmin, qmax)
            q[r] = qi
            err = (wb[i] - (qi - zero[r]) * scale[r]) / u[r, r]
            wb[i + 1:] -= np.outer(u[r, r + 1:stop], err)
            errors[i] = err
        w[stop:] -= u[start:stop, stop:].T @ errors
    out, before = np.empty_like(q), np.empty_like(updated)
    out[order], before[order] = q, updated
    return out.astype(np.int8 if params.signed else np.uint8), before


def within_cells(q: np.ndarray, updated: np.ndarray, params: QuantParams, margin: float = 0.49) -> np.ndarray:
    """Float weights that round back to the integers q on `params`' grid and sit where `updated` sits
    inside each rounding cell (clipped to +-margin of a step, so float32 rounding cannot change a q):
    a latent that keeps how close each of GPTQ's decisions was, so training can move the near ones."""
    scale, zero = expanded_grid(params, q.shape)
    q = q.astype(np.float64)
    cell = np.divide(np.asarray(updated, np.float64), scale, out=q - zero, where=scale > 0) + zero - q
    offset = np.clip(cell, -margin, margin)
    return (q - zero + offset) * scale


def dynamic_quantize(x: np.ndarray) -> np.ndarray:
    """x as ONNX DynamicQuantizeLinear then DequantizeLinear see it: uint8 over [min(0, min x), max(0, max x)]
    of the whole tensor, zero point rounded and saturated (the 8-bit dynamic activations of our int8 kernels)."""
    x = np.asarray(x, np.float32)
    lo, hi = min(0.0, float(x.min())), max(0.0, float(x.max()))
    scale = np.float32((hi - lo) / 255.0) if hi > lo else np.float32(1.0)
    zero = np.clip(np.rint(-lo / scale), 0, 255)
    q = np.clip(np.rint(x / scale) + zero, 0, 255)
    return ((q - zero) * scale).astype(np.float32)


def per_token_quantize(x: np.ndarray) -> np.ndarray:
    """x as the per-token activation quantizer sees it (graph/activations.py): symmetric int8 per row of the
    last axis, scale max|row| / 127 (a tiny floor for an all-zero row), round half to even."""
    x = np.asarray(x, np.float32)
    scale = np.maximum(np.abs(x).max(axis=-1, keepdims=True) / np.float32(127), PER_TOKEN_MIN_SCALE)
    return (np.clip(np.rint(x / scale), -127, 127) * scale).astype(np.float32)


def input_aware_target(w: np.ndarray, hq: np.ndarray, cross: np.ndarray, damp: float) -> np.ndarray:
    """The weights V that best map the quantized inputs X_q to the FP32 outputs X W:
    argmin ||X W - X_q V||^2 = W + (X_q^T X_q)^-1 (X_q^T X - X_q^T X_q) W (hq = X_q^T X_q, cross = X_q^T X),
    the damping pulling V toward W (not toward 0). GPTQ on this target with H = hq minimises
    ||X W - X_q Q||^2: what the int8 kernel really computes."""
    w = np.asarray(w, np.float64)
    hq = np.asarray(hq, np.float64)
    return w + np.linalg.solve(damped(hq, damp), (np.asarray(cross, np.float64) - hq) @ w)


def upper_cholesky_of_inverse(h: np.ndarray) -> np.ndarray:
    """U upper triangular with U^T U = H^-1 (GPTQ's Hinv), for a symmetric positive definite H."""
    lower = np.linalg.cholesky(h)
    inv = np.linalg.inv(lower)  # L^-1, so H^-1 = L^-T L^-1
    hinv = inv.T @ inv
    return np.linalg.cholesky(hinv).T


def output_error(w: np.ndarray, w_hat: np.ndarray, h: np.ndarray) -> float:
    """tr((W - W_hat)^T H (W - W_hat)) / tr(W^T H W): the relative output error on the inputs behind H."""
    d = np.asarray(w, np.float64) - np.asarray(w_hat, np.float64)
    w = np.asarray(w, np.float64)
    h = np.asarray(h, np.float64)
    den = float(np.sum(w * (h @ w)))
    return float(np.sum(d * (h @ d))) / den if den > 0 else 0.0


def output_error_quantized_inputs(w: np.ndarray, w_hat: np.ndarray, h: np.ndarray, hq: np.ndarray,
                                  cross: np.ndarray) -> float:
    """||X W - X_q W_hat||^2 / ||X W||^2 from the moments h = X^T X, hq = X_q^T X_q, cross = X_q^T X."""
    w, w_hat = np.asarray(w, np.float64), np.asarray(w_hat, np.float64)
    ref = float(np.sum(w * (h @ w)))
    err = ref - 2 * float(np.sum(w_hat * (np.asarray(cross, np.float64) @ w))) + float(np.sum(w_hat * (hq @ w_hat)))
    return max(err, 0.0) / ref if ref > 0 else 0.0


def expand_moment(h: np.ndarray, index: np.ndarray, factor: np.ndarray | None = None) -> np.ndarray:
    """The second moment of x' = x[..., index] * factor from that of x: D H[index][:, index] D.
    OCS duplicates channels (weight splits: W' reads x[index]; activation splits scale them too)."""
    h = np.asarray(h, np.float64)[np.ix_(index, index)]
    if factor is not None:
        f = np.asarray(factor, np.float64)
        h = h * f[:, None] * f[None, :]
    return h
