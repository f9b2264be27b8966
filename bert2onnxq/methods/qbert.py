"""--method qbert: Q-BERT (Shen et al., AAAI 2020) decided post-training.

Analyse: the Hessian record (analyse/hessian_record.py): Omega = |mean| + std of each encoder
layer's top Hessian eigenvalue over train batches. Decide: bits per layer from Omega (an
average-bit budget over the bit choices, or Q-BERT's fixed 2/3 mix), every weight on the grid the
options give (neuron groups by default). The plan records Omega, the eigenvalues and the bits, so
`--plan` re-applies the decision and `--hessian-from` re-decides it without the Hessian.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from .. import numerics
from ..analyse.hessian_record import HessianSettings, hessian_record, recorded
from ..errors import BadInput
from ..numerics import bits as bit_allocation
from ..plan import QuantPlan, TensorPlan
from .aciq import check_distribution
from ..onnx_io import weight_array
from .common import Grid, aciq_clip, base_plan, grid_is_symmetric, method_grid, skipped

ORDERS = ("hessian", "reverse")
# rank: Q-BERT's ordering, the most bits to the most sensitive layers; hawq: the least Omega-weighted
# weight error (HAWQ-V2), which weighs what a bit buys in each layer
ALLOCATIONS = ("rank", "hawq")
# What --method qbert gets unless told otherwise: neuron groups, all 2^bits levels (a narrow symmetric
# 2-bit grid is ternary) and ACIQ clipping; chosen from benchmarks/results/qbert_table.md (--grid-ablation).
PRESET = {"granularity": "neuron-group", "groups": 128, "symmetric": False, "clip": "aciq"}


@dataclass(frozen=True)
class QBertOptions:
    """How Q-BERT analyses (the Hessian) and allocates bits; clipping of its grid."""

    name: ClassVar[str] = "qbert"
    clip: str = "none"  # none | aciq (PRESET: aciq)
    distribution: str = "laplace"  # ACIQ prior, with clip aciq
    task: str | None = None  # whose train split feeds the Hessian
    data_dir: Path | None = None  # GLUE folder
    calib_file: Path | None = None  # SQuAD JSON or GLUE train TSV
    hf_model: str | None = None  # the PyTorch model; default: the ONNX's bert2onnxq.source_model
    avg_bits: float = 3.0
    bit_choices: tuple[int, ...] = (2, 3, 4)
    mix: tuple[int, int] | None = None  # Q-BERT's fixed (low, high) mix: the more sensitive half gets high
    allocation: str = "rank"  # how --avg-bits is spent (ALLOCATIONS)
    order: str = "hessian"  # reverse: the same bits, most to the least sensitive layers (control)
    batches: int = 10
    batch_size: int = 8
    max_iter: int = 50
    tol: float = 1e-3
    seed: int = 0
    threads: int | None = None  # torch threads for the Hessian (None: torch's default, the machine's cores)
    hessian: dict | None = None  # a plan's recorded analysis["hessian"]: re-decide the bits without recomputing

    def check(self, options=None) -> None:
        if self.clip not in ("none", "aciq"):
            raise BadInput(f"unknown clip '{self.clip}': choose none or aciq")
        check_distribution(self.distribution)
        if self.order not in ORDERS:
            raise BadInput(f"unknown order '{self.order}': choose {' or '.join(ORDERS)}")
        if self.allocation not in ALLOCATIONS:
            raise BadInput(f"unknown allocation '{self.allocation}': choose {' or '.join(ALLOCATIONS)}")
        if self.mix is not None:
            if self.allocation != "rank":
                raise BadInput("--allocation spends an --avg-bits budget; --mix fixes the bits by Omega rank: drop one")
            low, high = self.mix
            if not 2 <= low < high <= 8:
                raise BadInput(f"--mix {low}/{high} needs 2 <= low < high <= 8, e.g. 2/3")
        else:
            if not self.bit_choices or any(not 2 <= b <= 8 for b in self.bit_choices):
                raise BadInput(f"--bit-choices {','.join(map(str, self.bit_choices))} must be bits in 2..8")
            if not min(self.bit_choices) <= self.avg_bits <= 8:
                raise BadInput(f"--avg-bits {self.avg_bits} must lie between the smallest bit choice "
                               f"({min(self.bit_choices)}) and 8")
        if self.batches < 1 or self.batch_size < 1 or self.max_iter < 1:
            raise BadInput("--hessian-batches, --hessian-batch-size and --hessian-iters must be positive")
        if self.task is None and self.hessian is None:
            raise BadInput("--method qbert needs --task (and its data: --data-dir or --calib-file) to compute "
                           "the Hessian on train batches; or reuse a recorded one with --hessian-from PLAN.json")

    @property
    def choices(self) -> list[int]:
        return sorted(set(self.mix) if self.mix else set(self.bit_choices))

    def hessian_settings(self) -> HessianSettings:
        return HessianSettings(**{f.name: getattr(self, f.name) for f in fields(HessianSettings)})


def analyse(model, source: str, sites, options, progress=None) -> dict:
    """The Hessian record: the recorded one (--hessian-from), else computed on the source model."""
    qb: QBertOptions = options.method_options
    layers = sorted({s.layer for s in sites if not skipped(s.name, options.skip)})
    if not layers:
        raise BadInput("--skip left no encoder weight to quantize")
    if qb.hessian is not None:
        return recorded(qb.hessian, layers)
    return hessian_record(model, source, sites, qb.hessian_settings(), max(layers) + 1, progress)


def decide(model, sites, options, analysis: dict) -> QuantPlan:
    """Every decision but the bits is the ordinary one (LQ, or ACIQ with clip aciq); bits per layer by Omega."""
    qb: QBertOptions = options.method_options
    base = replace(options, bits=max(qb.choices))
    clip = aciq_clip(qb.distribution) if qb.clip == "aciq" else "none"
    plan = base_plan(model, sites, base, "aciq" if clip != "none" else "lq", clip=clip)
    layers = sorted({t.layer for t in plan.weights})
    by_layer_record = {entry["layer"]: entry for entry in analysis["layers"]}
    errors = None
    omegas = [by_layer_record[layer]["omega"] for layer in layers]
    sizes = [sum(t.num_params for t in plan.weights if t.layer == layer) for layer in layers]
    if qb.mix:
        bits = bit_allocation.fixed_mix(omegas, *qb.mix)
        rule = f"fixed mix {qb.mix[0]}/{qb.mix[1]}: the more sensitive half of the layers (by Omega) gets {qb.mix[1]} bits"
    elif qb.allocation == "hawq":
        errors = _weight_errors(model, plan, layers, qb.choices, options.symmetric)
        costs = [{b: omega * errors[layer][b] for b in qb.choices} for layer, omega in zip(layers, omegas)]
        bits = bit_allocation.allocate_bits_min_cost(costs, qb.avg_bits, sizes)
        rule = (f"average {qb.avg_bits:g} bits over {','.join(map(str, qb.choices))}, the least sum of Omega x "
                "||W - Q(W)||^2 (HAWQ-V2)")
    else:
        bits = bit_allocation.allocate_bits(omegas, qb.avg_bits, qb.choices, sizes)
        rule = (f"average {qb.avg_bits:g} bits over {','.join(map(str, qb.choices))}, monotone in Omega, the whole "
                "budget, the most bits on the most sensitive layers")
    if qb.order == "reverse":
        bits = bit_allocation.reverse(bits, omegas)
    by_layer = dict(zip(layers, bits))
    for t in plan.weights:
        _set_bits(t, by_layer[t.layer], options.symmetric)
    plan.method = "qbert"
    plan.analysis = {
        "hessian": analysis,
        "allocation": {
            "rule": rule, "order": qb.order,
            "bits": [{"layer": layer, "bits": b, "omega": o,
                      **({"weight_sse": {str(c): errors[layer][c] for c in qb.choices}} if errors else {})}
                     for layer, b, o in zip(layers, bits, omegas)],
            "avg_bits": float(np.dot(bits, sizes) / sum(sizes)),
        },
    }
    return plan


def _weight_errors(model, plan: QuantPlan, layers: list[int], choices: list[int],
                   symmetric: bool | None) -> dict[int, dict[int, float]]:
    """{layer: {bits: sum over its weights of ||W - Q(W)||^2}}, nearest rounding on each weight's planned grid."""
    errors = {layer: dict.fromkeys(choices, 0.0) for layer in layers}
    for t in plan.weights:
        w = weight_array(model, t.name)
        for b in choices:
            tb = copy.copy(t)
            _set_bits(tb, b, symmetric)
            matrix, params, _ = method_grid(w, tb)
            errors[t.layer][b] += float(np.sum((matrix - numerics.dequantize(numerics.quantize(matrix, params), params)) ** 2))
    return errors


def _set_bits(t: TensorPlan, bits: int, symmetric: bool | None) -> None:
    t.bits = bits
    t.symmetric = grid_is_symmetric(bits, symmetric)  # None: the grid follows each layer's bits
    if t.clip != "none":
        t.alpha_ratio = numerics.optimal_alpha(bits, t.clip.removeprefix("aciq-"))


def bit_choices_around(bits: int) -> tuple[int, ...]:
    """A sweep's Q-BERT cell at `bits`: each layer at bits-1, bits or bits+1."""
    return tuple(b for b in (bits - 1, bits, bits + 1) if 2 <= b <= 8)


def sweep_cells(bits: int, grid: Grid) -> list[dict]:
    """Q-BERT at an average of `bits` per weight, each layer at bits-1, bits or bits+1 by its Hessian
    Omega (so the 8- and 2-bit columns come out uniform); neuron groups and ACIQ. The grid follows each
    layer's bits as in the other rows (asymmetric at 2-4 bits, symmetric at 5-8)."""
    return [{**dict(grid.extra), "method": "qbert", "bits": bits, "granularity": "neuron-group", "clip": "aciq"}]
