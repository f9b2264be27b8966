"""Quantize: the integers of every planned tensor, on the grid its TensorPlan gives.

The grid (scales, zero points, OCS expansion) follows from the weights and the plan by `numerics`;
the rounding onto it is this stage's choice: nearest, or GPTQ (numerics/gptq.py), which minimises
each MatMul's output error on the calibration inputs' second moment H = X^T X (`moments`, one per
MatMul input; OCS-expanded weights get the moment of their expanded input). The graph forms the kernels need
(two-level int8, folded OCS rows, the load-time container) are decided here too, so the passes
only write what they are handed.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .. import numerics
from ..analyse.activations import activation_readers, activation_split
from ..errors import BadInput
from ..methods.common import grid_options, method_grid
from ..numerics.gptq import (
    GPTQSettings,
    expand_moment,
    gptq_round,
    input_aware_target,
    output_error,
    output_error_quantized_inputs,
    within_cells,
)
from ..numerics.grid_search import search_range
from ..onnx_io import weight_array
from ..plan import INT8_GEMM_KERNELS, QuantPlan, TensorPlan
from .tensor import QuantizedTensor


def weight_grid(w: np.ndarray, t: TensorPlan) -> tuple[np.ndarray, numerics.QuantParams, np.ndarray | None]:
    """The plan's decision for one weight, turned into (matrix to quantize, its scales, OCS channel
    index or None) by numerics; OCS expands W [K, N] to W' [K + splits, N]."""
    matrix, params, index = method_grid(w, t)
    return matrix, _kernel_form(matrix, params, t), index


def _searched_grid(matrix: np.ndarray, params: numerics.QuantParams, t: TensorPlan,
                   importance: np.ndarray) -> numerics.QuantParams:
    """The ranges of `matrix` searched on `importance` (numerics/grid_search.py), from the method's grid
    `params` when unclipped, else from the min-max range (the clipped grid is the other candidate)."""
    base = params if t.clip == "none" else numerics.lq_params(matrix, t.bits, **grid_options(t))
    return _kernel_form(matrix, search_range(matrix, base, importance), t)


def _kernel_form(matrix: np.ndarray, params: numerics.QuantParams, t: TensorPlan) -> numerics.QuantParams:
    if t.kernel == "int8-two-level":  # the int8 GEMM runs group scales as channel scale x integer multiplier
        return numerics.two_level_params(matrix, params)
    return params


def quantize_plan(model: ir.Model, plan: QuantPlan, moments: dict | None = None, progress=None,
                  kept: dict[str, numerics.QuantParams] | None = None) -> tuple[list[QuantizedTensor], list[QuantizedTensor]]:
    """Integers and scales for every planned tensor, and the graph form its kernel needs; fills each
    TensorPlan's statistics (and, for OCS, the channels split and the form chosen).

    `moments` {MatMul input activation: analyse.activations.ChannelObserver with its moments}: required
    when the plan rounds with GPTQ. `kept` {weight: grid}: nearest rounding on these grids instead (a GPTQ
    plan fine-tuned on GPTQ's grid, quantize/finetune.py)."""
    gptq = plan.rounding.get("method") == "gptq" and not kept
    tick = progress("GPTQ rounding (weights)", len(plan.weights)) if progress and gptq else None
    weights = quantize_weights(model, plan, plan.weights, moments, tick, kept)
    return weights, quantize_tables(model, plan)


def quantize_weights(model: ir.Model, plan: QuantPlan, tensors: list[TensorPlan], moments: dict | None,
                     tick=None, kept: dict[str, numerics.QuantParams] | None = None,
                     keep_latent: bool = False) -> list[QuantizedTensor]:
    """The QuantizedTensor of each of `tensors` (weights of `plan`); GPTQ rounds on `moments`, or
    (`kept`) each weight is rounded to the nearest point of the grid given for it. `keep_latent`: GPTQ's
    tensors keep the float weights fine-tuning starts from (QuantizedTensor.latent)."""
    inputs, kept = {}, kept or {}
    if plan.rounding.get("method") == "gptq" and not kept:
        if moments is None:
            raise BadInput("the plan rounds with GPTQ, which needs the calibration inputs: pass --task and its data "
                           "(the same --calib-samples reproduce the same integers)")
        inputs = {w: moments[x] for x, ws in activation_readers(model, plan).items() for w in ws if x in moments}
    weights = []
    for t in tensors:
        weights.append(_quantize_weight(model, plan, t, inputs.get(t.name), kept.get(t.name), keep_latent))
        if tick:
            tick(1)
    return weights


def quantize_tables(model: ir.Model, plan: QuantPlan) -> list[QuantizedTensor]:
    """The embedding tables: int8 (or int4 row blocks) per row, nearest rounding."""
    tables = []
    for t in plan.embeddings:
        table = weight_array(model, t.name)
        params_t = table_params(table, t)
        q = numerics.quantize(table.T, params_t).T
        t.stats = _stats(table.T, q.T, params_t)
        tables.append(QuantizedTensor(t.name, np.ascontiguousarray(q), params_t))
    return tables


def table_params(table: np.ndarray, t: TensorPlan) -> numerics.QuantParams:
    """The grid of an embedding table [rows, hidden], laid out for its transpose: one scale per row (its
    columns once transposed), row blocks for 4-bit tables."""
    granularity = "group" if t.group_size else "channel"
    return numerics.lq_params(table.T, t.bits, symmetric=True, granularity=granularity, group_size=t.group_size)


def runtime_weight(plan: QuantPlan, t: TensorPlan, qt: QuantizedTensor) -> np.ndarray:
    """The [K, N] float32 weight the quantized graph multiplies the original input with (OCS rows folded
    back; two-level scales dequantize exactly): what later layers see when GPTQ runs sequentially."""
    w = numerics.dequantize(qt.values, qt.params)
    return effective_weight(w, qt.gather_index, activation_split(plan, t)).astype(np.float32)


def _quantize_weight(model: ir.Model, plan: QuantPlan, t: TensorPlan, observed,
                     kept: numerics.QuantParams | None = None, keep_latent: bool = False) -> QuantizedTensor:
    w = weight_array(model, t.name)
    act_split = activation_split(plan, t)
    w_in = w if act_split is None else w[act_split.index]  # rows duplicated unchanged for x' = x[idx] * f
    matrix, method_params, index = method_grid(w_in, t)
    params = kept or _kernel_form(matrix, method_params, t)
    q = numerics.quantize(matrix, params)
    errors, updated = {}, None
    if observed is not None and kept is None:
        q, params, errors, updated = _gptq(plan, t, w, matrix, (params, method_params), q, index, act_split, observed)
    t.stats = {**_stats(matrix, q, params), **errors}
    qt = QuantizedTensor(t.name, q, params, index, bit_packed=t.storage == "bits")
    if keep_latent and updated is not None and index is None:  # OCS rows: finetune does not start from GPTQ there
        qt.latent = within_cells(q, updated, params).astype(np.float32)
    if t.kernel == "int8-two-level":
        qt.form = "two-level"
    if index is not None:
        t.ocs_channels = [int(c) for c in index[w_in.shape[0]:]]
        folded = numerics.fold_ocs(q, params, index) if qt.form == "plain" else None
        if t.ocs_form == "fold" and folded is None:
            raise BadInput(f"the plan folds the OCS rows of '{t.name}', but they do not fit int8 at this granularity: "
                           "use ocs_form 'gather'")
        t.ocs_form = t.ocs_form or ("fold" if folded is not None else "gather")
        if t.ocs_form == "fold":
            qt.form = "ocs-fold"
    if index is not None or act_split is not None:
        # the error that matters is the effective weight's: fold duplicated rows back onto W
        t.stats["mse"] = float(numerics.mse(w, effective_weight(numerics.dequantize(q, params), index, act_split)))
    if qt.form == "plain":
        qt.load_as = _load_as(params, plan.target)
    return qt


def _gptq(plan: QuantPlan, t: TensorPlan, w, matrix, method_grids, q_nearest, index, act_split, observed):
    """GPTQ integers for `matrix` on the moments of the input it really reads, on the method's grid or
    (rounding grid "search") the searched one, whichever gives the lower output error on the calibration
    inputs; that grid, the output errors (nearest on the method's grid, then GPTQ), and the compensated
    weights the integers round from (gptq_round). `method_grids`: the method's params in the kernel's form, and before it."""
    r = plan.rounding
    aware = _quantized_inputs(plan, t, act_split)
    if aware:
        h, cross = observed.q_moment, observed.cross_moment
        if index is not None:
            h, cross = expand_moment(h, index), expand_moment(cross, index)
        target = input_aware_target(matrix, h, cross, r["damp"])
    else:
        h = observed.moment if act_split is None else expand_moment(observed.moment, act_split.index, act_split.factor)
        h = h if index is None else expand_moment(h, index)
        target = matrix
    grids = [method_grids[0]]
    if r.get("grid") == "search":  # diag(H) of the rows of `matrix` (OCS-expanded, activation-split)
        grids.append(_searched_grid(matrix, method_grids[1], t, np.diag(h)))

    def error(q_, params):
        w_hat = effective_weight(numerics.dequantize(q_, params), index, act_split)
        if aware:
            return output_error_quantized_inputs(w, w_hat, observed.moment, observed.q_moment, observed.cross_moment)
        return output_error(w, w_hat, observed.moment)

    settings = GPTQSettings(r["damp"], r["block"], r["act_order"])
    tried = []
    for params in grids:  # the first grid wins ties: a search that does not help changes nothing
        q, updated = gptq_round(target, h, params, settings)
        tried.append((error(q, params), q, params, updated))
    best = min(range(len(tried)), key=lambda i: tried[i][0])
    err, q, params, updated = tried[best]
    errors = {"out_err_nearest": error(q_nearest, grids[0]), "out_err": err, "gptq_inputs": "quantized" if aware else "fp32"}
    if len(grids) > 1:
        errors.update(grid="searched" if best else "method", out_err_method_grid=tried[0][0])
    return q, params, errors, updated


def _quantized_inputs(plan: QuantPlan, t: TensorPlan, act_split) -> bool:
    """Whether GPTQ rounds for the 8-bit run-time inputs (X_q Q ~ X W): the int8 kernels' case. The quantizer
    runs on x itself, before an OCS weight gather; an activation split is quantized after the split."""
    return (plan.rounding.get("inputs") == "quantized" and t.kernel in INT8_GEMM_KERNELS
            and act_split is None and plan.activations.mode in ("dynamic", "per-token"))


def effective_weight(w: np.ndarray, index: np.ndarray | None, act_split: numerics.ActivationSplit | None) -> np.ndarray:
    """The [K, N] weight that x meets through OCS: rows of W' folded over the weight gather `index`, then
    over the activation split (x' = x[idx] * factor); float64."""
    w = np.asarray(w, np.float64)
    if index is not None:
        folded = np.zeros((len(act_split.index) if act_split else index.max() + 1, w.shape[1]))
        np.add.at(folded, index, w)
        w = folded
    if act_split is not None:
        folded = np.zeros((act_split.index.max() + 1, w.shape[1]))
        np.add.at(folded, act_split.index, w * act_split.factor[:, None])
        w = folded
    return w


def split_weights_fp32(model: ir.Model, plan: QuantPlan) -> tuple[dict, dict]:
    """OCS channel splitting alone, in FP32: ({weight: (weight, index)}, {weight: expanded matrix})."""
    splits, expanded = {}, {}
    for t in plan.weights:
        act_split = activation_split(plan, t)
        w = weight_array(model, t.name)
        w = w if act_split is None else w[act_split.index]
        if t.ocs_ratio:
            split = numerics.ocs_split(w, t.ocs_ratio)
            splits[t.name], w = (t.name, split.index), split.weight
        expanded[t.name] = w
    return splits, expanded


def _load_as(params: numerics.QuantParams, target: str) -> str | None:
    """Container to cast a plain weight to at session start (qdq_weights docstring): the CPU runs
    per-tensor/per-channel sub-byte weights as int8; CUDA has no int2 DequantizeLinear or MatMulNBits."""
    bits = numerics.container_bits(params.bits)
    if target == "cpu" and bits < 8 and params.block_size is None:
        return "int8"
    if target == "cuda" and bits == 2:
        return "int4"
    return None


def _stats(w: np.ndarray, q: np.ndarray, params: numerics.QuantParams) -> dict:
    scale = np.asarray(params.scale, dtype=np.float64)
    deq = numerics.dequantize(q, params)
    step = numerics.expand_scale(params.scale, w.shape, params.axis, params.block_size)
    return {
        "num_scales": params.num_scales,
        "scale_min": float(scale.min()), "scale_max": float(scale.max()), "scale_mean": float(scale.mean()),
        "max_abs": float(np.abs(w).max()),
        # inside the range the error is at most half a step; beyond it, the value was clipped
        "clipped_fraction": float(np.mean(np.abs(w - deq) > step * 0.5 * (1 + 1e-6))),
        "mse": float(numerics.mse(w, deq)),
    }
