"""--method lq: min-max linear quantization of every encoder weight on one grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .common import base_plan, uniform_cells


@dataclass(frozen=True)
class LQOptions:
    """LQ has no options of its own: the grid (bits, granularity, symmetric) is every method's."""

    name: ClassVar[str] = "lq"

    def check(self, options) -> None:
        pass


def decide(model, sites, options, analysis=None):
    return base_plan(model, sites, options, "lq")


sweep_cells = uniform_cells("lq")
