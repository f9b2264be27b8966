"""--method aciq: analytical clipping (Banner et al.): alpha = c(bits) * b for a Laplace prior, or
c(bits) * sigma for a Gaussian one, per tensor / channel / group (numerics/aciq.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .. import numerics
from ..errors import BadInput
from .common import aciq_clip, base_plan, uniform_cells


@dataclass(frozen=True)
class ACIQOptions:
    name: ClassVar[str] = "aciq"
    distribution: str = "laplace"  # the prior the clip is optimal for: laplace | gauss

    def check(self, options) -> None:
        check_distribution(self.distribution)


def check_distribution(distribution: str) -> None:
    if distribution not in numerics.DISTRIBUTIONS:
        raise BadInput(f"unknown ACIQ distribution '{distribution}': choose {' or '.join(numerics.DISTRIBUTIONS)}")


def decide(model, sites, options, analysis=None):
    return base_plan(model, sites, options, "aciq", clip=aciq_clip(options.method_options.distribution))


sweep_cells = uniform_cells("aciq")
