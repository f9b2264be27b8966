"""--method ocs: outlier channel splitting (Zhao et al. 2019, as in cornell-zhang/dnn-quant-ocs).

The plan says which weights split ceil(r*K) input channels (the channels themselves are chosen by
numerics.ocs when the integers are computed, and recorded back into the plan), whether the halves
are grid-aware, whether ACIQ clips the expanded weight, and whether MatMul inputs are split too
(chosen on calibration data by the activation analysis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import BadInput
from .aciq import check_distribution
from .common import aciq_clip, base_plan, uniform_cells

CLIPS = ("none", "aciq")


@dataclass(frozen=True)
class OCSOptions:
    name: ClassVar[str] = "ocs"
    ocs_ratio: float = 0.02  # split ceil(ratio * K) input channels of each weight
    ocs_grid_aware: bool = False  # halves w/2 -+ delta/4, so they round to neighbouring grid points
    ocs_activations: bool = False  # also split outlier channels of MatMul inputs (needs calibration data)
    clip: str = "none"  # none | aciq: ACIQ clipping of the expanded weight
    distribution: str = "laplace"  # ACIQ prior, with clip aciq

    def check(self, options) -> None:
        if not 0 <= self.ocs_ratio <= 1:
            raise BadInput(f"--ocs-ratio {self.ocs_ratio} must be in 0..1 (the paper's grid: 0, 0.01, 0.02, 0.05)")
        if self.clip not in CLIPS:
            raise BadInput(f"unknown clip '{self.clip}': choose none or aciq")
        check_distribution(self.distribution)


def decide(model, sites, options, analysis=None):
    o: OCSOptions = options.method_options
    return base_plan(model, sites, options, "ocs", clip=aciq_clip(o.distribution) if o.clip == "aciq" else "none",
                     ocs_ratio=o.ocs_ratio, ocs_grid_aware=o.ocs_grid_aware,
                     act_ocs_ratio=o.ocs_ratio if o.ocs_activations else None)


sweep_cells = uniform_cells("ocs", split_ratios=True)
