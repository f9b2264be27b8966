"""What every method's plan shares: the options of the other stages, and the per-tensor plan that LQ,
ACIQ and OCS make alike (bits, grid, granularity, kernel), embeddings and activations.

A method module adds its own frozen options dataclass and its `decide` on top of `base_plan`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx_ir as ir

from .. import numerics
from ..errors import BadInput
from ..graph.locate import WeightSite, embedding_tables
from ..plan import ACT_MODES, INT8_GEMM_KERNELS, TARGETS, ActivationPlan, QuantPlan, TensorPlan, default_kernel
from ..tasks.base import CALIBRATION_DRAW

GROUP_KERNELS = ("matmulnbits", "int8")
ROUNDINGS = ("nearest", "gptq")
# GPTQ's H = X^T X of a K-input MatMul needs many more tokens than K to be well estimated: 128 SST-2
# sentences (1,790 tokens) for K = 1,536 made 4-bit ACIQ worse than nearest (docs/rounding.md)
TOKENS_PER_INPUT = 8


@dataclass(frozen=True)
class ConvertOptions:
    """What the user asked for: the grid and the other stages' options, plus the method's own options.

    `method_options` is one method's frozen dataclass (methods.REGISTRY); None means LQ.
    `methods.convert_options(method=..., **flat)` builds one from the flat vocabulary of the CLI and sweeps.
    """

    method_options: object | None = None
    bits: int = 8
    granularity: str = "channel"
    group_size: int = 128
    groups: int = 128  # neuron-group: ranges per matrix (Q-BERT's 128)
    symmetric: bool | None = None  # None: symmetric at 5+ bits, asymmetric at 2-4 (see `grid_is_symmetric`)
    act_bits: int | None = 8
    act_calib: str = "dynamic"  # plan.ACT_MODES
    calib_method: str = "minmax"  # static: minmax | aciq
    calib_samples: int = 128
    emb_bits: int | None = 8
    skip: tuple[str, ...] = field(default_factory=tuple)
    target: str = "cpu"  # execution provider whose native kernels the graph forms are chosen for
    group_kernel: str = "matmulnbits"  # cpu, group-wise: matmulnbits | int8 (two-level scales)
    rounding: str = "nearest"  # the quantize stage: nearest | gptq (output-error compensating, needs calibration)
    gptq_damp: float = 0.01  # gptq: added to diag(H), as a fraction of its mean
    gptq_block: int = 128  # gptq: rows per lazy batch update
    gptq_act_order: bool = True  # gptq: round the most active input channels first
    gptq_tokens: int = 0  # gptq: calibrate on at least this many tokens (0: TOKENS_PER_INPUT x the widest input)
    gptq_inputs: str = "quantized"  # gptq, int8 kernels: round for the 8-bit inputs they see (quantized) or FP32 ones
    gptq_sequential: bool = False  # gptq: layer l's inputs from the model whose layers < l are already rounded
    gptq_grid: str = "search"  # gptq: the method's ranges only (fixed), or also min-max ranges shrunk on diag(H)
    pack_bits: bool = False  # 3/5/6/7-bit weights stored that many bits each (unpacked at load), not in INT4/INT8

    @property
    def method(self) -> str:
        return getattr(self.method_options, "name", "lq")

    def check(self) -> None:
        if not 2 <= self.bits <= 8:
            raise BadInput(f"--bits {self.bits} is outside 2..8")
        if self.granularity not in numerics.GRANULARITIES:
            raise BadInput(f"unknown granularity '{self.granularity}': choose {', '.join(numerics.GRANULARITIES)}")
        if self.granularity == "neuron-group" and self.groups < 1:
            raise BadInput(f"--groups {self.groups} must be at least 1")
        if self.emb_bits not in (None, 8, 4):
            raise BadInput(f"--emb-bits {self.emb_bits} is not supported: use 8, 4 or none")
        if self.act_bits not in (None, 8):
            raise BadInput(f"--act-bits {self.act_bits} is not supported: use 8 or none")
        if self.act_calib not in ACT_MODES:
            raise BadInput(f"unknown --act-calib '{self.act_calib}': choose {', '.join(ACT_MODES)}")
        if self.act_calib != "dynamic" and not self.act_bits:
            raise BadInput(f"--act-calib {self.act_calib} sets how activations are quantized, but --act-bits none keeps "
                           "them FP32: drop one of the two")
        if self.target not in TARGETS:
            raise BadInput(f"unknown target '{self.target}': choose cpu or cuda")
        if self.group_kernel not in GROUP_KERNELS:
            raise BadInput(f"unknown group kernel '{self.group_kernel}': choose matmulnbits or int8")
        if self.target == "cuda" and self.act_bits:
            raise BadInput("--target cuda writes weight-only graphs (CUDA has no DynamicQuantizeLinear and no int8 "
                           "MatMul for QDQ activations): use --act-bits none")
        if self.group_kernel == "int8" and (self.target != "cpu" or not self.act_bits):
            raise BadInput("--group-kernel int8 runs group-wise weights on ONNX Runtime's CPU int8 GEMM: it needs "
                           "--target cpu and --act-bits 8")
        if self.gptq_grid not in ("fixed", "search"):
            raise BadInput(f"unknown --gptq-grid '{self.gptq_grid}': choose fixed or search")
        if self.gptq_inputs not in ("quantized", "fp32"):
            raise BadInput(f"unknown --gptq-inputs '{self.gptq_inputs}': choose quantized or fp32")
        if self.rounding not in ROUNDINGS:
            raise BadInput(f"unknown rounding '{self.rounding}': choose {' or '.join(ROUNDINGS)}")
        if self.gptq_damp < 0 or self.gptq_block < 1 or self.gptq_tokens < 0:
            raise BadInput(f"--gptq-damp {self.gptq_damp} and --gptq-tokens {self.gptq_tokens} must be >= 0, "
                           f"--gptq-block {self.gptq_block} >= 1")
        if self.method_options is not None:
            self.method_options.check(self)


def grid_is_symmetric(bits: int, symmetric: bool | None) -> bool:
    """The weight grid: as asked, else symmetric from 5 bits up and asymmetric below.

    The symmetric grid is the narrow [-(2^(b-1)-1), 2^(b-1)-1] with no zero point (ternary at 2 bits,
    7 levels at 3, 15 at 4, where asymmetric has 4, 8, 16); docs/methods.md has the measurements.
    Sub-byte asymmetric weights run as fast (signed int8 at load, or MatMulNBits zero points); from
    5 bits an asymmetric int8 weight would need ORT's slower u8u8 GEMM.
    """
    return bits >= 5 if symmetric is None else bool(symmetric)


def aciq_clip(distribution: str) -> str:
    """The plan's clip name for ACIQ with this prior."""
    return f"aciq-{'gauss' if distribution == 'gauss' else 'laplace'}"


def skipped(name: str, patterns) -> bool:
    return any(fnmatch.fnmatch(name, p) or p in name for p in patterns)


def base_plan(model: ir.Model, sites: list[WeightSite], options: ConvertOptions, method: str, *, clip: str = "none",
              ocs_ratio: float | None = None, ocs_grid_aware: bool = False,
              act_ocs_ratio: float | None = None) -> QuantPlan:
    """The same bits and granularity for every encoder weight not skipped; `clip` 'none' or an ACIQ clip."""
    weights = []
    for site in sites:
        if skipped(site.name, options.skip):
            continue
        t = TensorPlan(site.name, site.role, site.layer, site.shape, options.bits,
                       grid_is_symmetric(options.bits, options.symmetric),
                       options.granularity, options.group_size if options.granularity == "group" else None, clip)
        if options.granularity == "neuron-group":
            t.groups, t.heads = neuron_grouping(model, site, options.groups)
        if clip != "none":
            t.alpha_ratio = numerics.optimal_alpha(options.bits, clip.removeprefix("aciq-"))
        if ocs_ratio is not None:
            t.ocs_ratio, t.ocs_grid_aware = ocs_ratio, ocs_grid_aware
        t.kernel = default_kernel(t, options.target, options.act_bits, options.group_kernel)
        weights.append(t)
    embeddings = []
    if options.emb_bits:
        for site in embedding_tables(model.graph):
            if not skipped(site.name, options.skip):
                block = embedding_block(site.shape[1]) if options.emb_bits == 4 else None
                embeddings.append(TensorPlan(site.name, site.role, None, site.shape, options.emb_bits, True,
                                             "row" if block is None else "row-block", block))
    static = options.act_calib == "static"
    acts = ActivationPlan(bits=options.act_bits, mode=options.act_calib if options.act_bits else "none",
                          calibration=options.calib_method if static else None,
                          samples=options.calib_samples if static else None, ocs_ratio=act_ocs_ratio)
    plan = QuantPlan(method, weights, embeddings, acts, list(options.skip), source_info(model), options.target)
    if acts.mode == "per-token" and not any(t.kernel in INT8_GEMM_KERNELS for t in weights):
        raise BadInput("--act-calib per-token quantizes the inputs of weights on the int8 GEMM, and every weight here runs "
                       "on MatMulNBits, which quantizes its own inputs: add --group-kernel int8 or drop --act-calib per-token")
    if options.rounding == "gptq":
        widest = max((t.shape[0] for t in weights), default=0)
        plan.rounding = {"method": "gptq", "damp": options.gptq_damp, "block": options.gptq_block,
                         "act_order": options.gptq_act_order, "samples": options.calib_samples, "draw": CALIBRATION_DRAW,
                         "min_tokens": options.gptq_tokens or TOKENS_PER_INPUT * widest, "inputs": options.gptq_inputs,
                         "sequential": options.gptq_sequential, "grid": options.gptq_grid}
    return plan


def grid_options(t: TensorPlan) -> dict:
    """numerics' grid keywords for the plan of one weight."""
    common = dict(symmetric=t.symmetric, granularity=t.granularity, group_size=t.group_size)
    if t.granularity == "neuron-group":
        common.update(groups=t.groups, heads=t.heads)
    return common


def method_grid(w: np.ndarray, t: TensorPlan) -> tuple[np.ndarray, numerics.QuantParams, np.ndarray | None]:
    """The grid the method decided for W [K, N]: (matrix to quantize, its scales, OCS channel index or None);
    OCS expands W to W' [K + splits, N]. quantize.weight_grid adds the kernel's form of the scales."""
    common = grid_options(t)
    method = "lq" if t.clip == "none" else "aciq"
    if method == "aciq":
        common["distribution"] = t.clip.removeprefix("aciq-")
    if t.ocs_ratio:
        split, params = numerics.ocs_params(w, t.ocs_ratio, t.bits, method=method, grid=t.ocs_grid_aware, **common)
        return split.weight, params, split.index
    fit = numerics.lq_params if method == "lq" else numerics.aciq_params
    return w, fit(w, t.bits, **common), None


def neuron_grouping(model: ir.Model, site: WeightSite, groups: int) -> tuple[int, int | None]:
    """(groups, heads) for one weight: at most one group per output column; query/key/value groups
    respect the attention heads recorded at export (bert2onnxq.num_heads)."""
    groups = min(groups, site.shape[1])
    if site.role not in ("query", "key", "value"):
        return groups, None
    heads = model.metadata_props.get("bert2onnxq.num_heads")
    if heads is None or not heads.isdigit():
        raise BadInput("the model has no bert2onnxq.num_heads metadata, so neuron groups cannot follow the "
                       "attention heads: re-export it with 'bert2onnxq export'")
    if site.shape[1] % int(heads):
        raise BadInput(f"'{site.name}' has {site.shape[1]} outputs, not a multiple of {heads} heads")
    return groups, int(heads)


def embedding_block(hidden: int) -> int:
    """Row block for 4-bit tables: the largest power of two >= 16 dividing the hidden size
    (ONNX Runtime's GatherBlockQuantized needs one), else the whole row."""
    block = 1 << (hidden.bit_length() - 1)
    while block >= 16 and hidden % block:
        block //= 2
    if block < 16:
        raise BadInput(f"--emb-bits 4 needs a hidden size divisible by 16 (got {hidden}): use --emb-bits 8")
    return block


def source_info(model: ir.Model) -> dict:
    meta = model.metadata_props
    return {k.removeprefix("bert2onnxq."): meta[k] for k in ("bert2onnxq.source_model", "bert2onnxq.head",
                                                               "bert2onnxq.num_layers", "bert2onnxq.hidden_size",
                                                               "bert2onnxq.num_heads") if k in meta}


# --- sweep cells: which flat option sets a method contributes to a sweep's column of `bits` ---------------


@dataclass(frozen=True)
class Grid:
    """Sweep-wide choices that multiply or shape the cells of every method."""

    granularities: tuple[str, ...] = ("channel",)
    group_size: int = 128
    ocs_ratios: tuple[float, ...] = (0.02,)
    extra: tuple[tuple[str, object], ...] = ()  # flat convert options for every cell (--set KEY=VALUE)


def uniform_cells(method: str, split_ratios: bool = False) -> Callable[[int, Grid], list[dict]]:
    """One cell per granularity of the grid (and per OCS ratio when `split_ratios`)."""
    def cells(bits: int, grid: Grid) -> list[dict]:
        out = []
        for gran in grid.granularities:
            kw = {**dict(grid.extra), "method": method, "bits": bits, "granularity": gran}
            if gran == "group":
                kw["group_size"] = grid.group_size
            out += [{**kw, "ocs_ratio": r} for r in grid.ocs_ratios] if split_ratios else [kw]
        return out
    return cells
