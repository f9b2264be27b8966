"""The cells of a sweep: one conversion each, a row (method variant) x column (bits) of the table.

A cell is its flat convert options (methods.convert_options) with the defaults left out; its id
hashes them, so cells are found again on resume and an option added later with a default changes
no id. Which cells a method contributes comes from its methods.REGISTRY entry (`sweep_cells`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Iterable

from ..errors import BadInput
from ..methods import (
    FLAT_DEFAULTS,
    FLAT_TYPES,
    METHODS,
    OWN,
    REGISTRY,
    ConvertOptions,
    Grid,
    convert_options,
    owners,
)

UNSETTABLE = ("method", "bits", "hessian")  # the cell's own axes, and Q-BERT's record (given by the sweep)


def check_methods(methods: Iterable[str]) -> list[str]:
    names = [m.strip().lower() for m in methods if m.strip()]
    if not names:
        raise BadInput("no method given: pass --methods, e.g. lq,aciq,ocs")
    for m in names:
        if m not in REGISTRY:
            raise BadInput(f"unknown method '{m}': choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def check_bits(bits: Iterable[int]) -> list[int]:
    out = []
    for b in bits:
        if not 2 <= int(b) <= 8:
            raise BadInput(f"--bits {b} is outside 2..8")
        out.append(int(b))
    if not out:
        raise BadInput("no bit width given: pass --bits, e.g. 8,6,4,3,2")
    return sorted(set(out), reverse=True)


def canonical(kwargs: dict) -> dict:
    """The flat options that differ from the defaults (method and bits always kept), JSON-ready."""
    out = {}
    for k, v in sorted(kwargs.items()):
        if k not in FLAT_DEFAULTS:
            raise BadInput(f"unknown convert option '{k}': choose from {', '.join(sorted(FLAT_DEFAULTS))}")
        if isinstance(v, tuple):
            v = list(v)
        default = FLAT_DEFAULTS[k]
        if k in ("method", "bits") or v != (list(default) if isinstance(default, tuple) else default):
            out[k] = v
    return out


@dataclass(frozen=True)
class Cell:
    """One conversion of the sweep: a row (method variant) x column (bits) of the table."""

    options_json: str  # canonical kwargs as sorted JSON: hashable, stable

    @classmethod
    def of(cls, kwargs: dict) -> "Cell":
        return cls(json.dumps(canonical(kwargs), sort_keys=True))

    @property
    def options(self) -> dict:
        return json.loads(self.options_json)

    @property
    def method(self) -> str:
        return self.options["method"]

    @property
    def bits(self) -> int:
        return int(self.options["bits"])

    @property
    def id(self) -> str:
        """`<method>-w<bits>-<8 hex of the canonical options>`: readable, and stable across runs."""
        digest = hashlib.sha1(self.options_json.encode()).hexdigest()[:8]
        return f"{self.method}-w{self.bits}-{digest}"

    @property
    def variant(self) -> str:
        """The table row: method title plus what distinguishes it (not the bits, which are the column)."""
        o = self.options
        method = REGISTRY[self.method].title if self.method in REGISTRY else self.method.upper()
        parts = [method]
        if o.get("method") == "qbert":
            parts.append("bits±1 by Ω")
        if o.get("method") == "ocs":
            parts.append(f"r={o.get('ocs_ratio', FLAT_DEFAULTS['ocs_ratio'])}")
            if o.get("clip") == "aciq":
                parts.append("+ACIQ")
        gran = o.get("granularity", FLAT_DEFAULTS["granularity"])
        parts.append(f"group-{o.get('group_size', FLAT_DEFAULTS['group_size'])}" if gran == "group"
                     else "neuron groups" if gran == "neuron-group" else f"per-{gran}")
        for k, v in sorted(o.items()):
            if k not in ("method", "bits", "granularity", "group_size", "ocs_ratio", "clip"):
                parts.append(f"{k}={v}")
        return " ".join(parts)

    def convert_options(self) -> ConvertOptions:
        return convert_options(**self.options)


def for_method(kwargs: dict, method: str) -> dict:
    """`kwargs` without the --set options of other methods (an OCS option does not reach LQ cells)."""
    return {k: v for k, v in kwargs.items() if k in ("method", "bits") or k in FLAT_DEFAULTS and
            (k not in OWN_KEYS or k in OWN[method])}


OWN_KEYS = {k for own in OWN.values() for k in own}


def make_cells(methods: list[str], bits: list[int], grid: Grid) -> list[Cell]:
    for key, _ in grid.extra:  # a --set option that none of the methods has would be silently unused
        if key in OWN_KEYS and not set(owners(key)) & set(methods):
            raise BadInput(f"--set {key} is an option of {', '.join(owners(key))}, none of which this sweep runs")
    cells = []
    for m in methods:
        for b in bits:
            for kw in REGISTRY[m].sweep_cells(b, grid):
                cell = Cell.of(for_method(kw, m))
                options = cell.convert_options()  # bad --set values fail before any work
                # a Q-BERT cell's own options are completed by the sweep (its Hessian); check the rest
                (replace(options, method_options=None) if m == "qbert" else options).check()
                if cell not in cells:
                    cells.append(cell)
    return cells


def parse_setting(item: str) -> tuple[str, object]:
    """'KEY=VALUE' for --set, typed after the option's field (bool, int, float, none, tuple)."""
    if "=" not in item:
        raise BadInput(f"--set '{item}' must be KEY=VALUE, e.g. emb_bits=4")
    key, raw = (s.strip() for s in item.split("=", 1))
    key = key.replace("-", "_")
    if key not in FLAT_DEFAULTS or key in UNSETTABLE:
        raise BadInput(f"--set {key}: not a convert option a sweep can fix (choose from "
                       f"{', '.join(k for k in sorted(FLAT_DEFAULTS) if k not in UNSETTABLE)})")
    kind = FLAT_TYPES[key]  # the field's annotation, e.g. "bool | None", "int", "tuple[str, ...]"
    try:
        if raw.lower() == "none":
            value = None
        elif kind.startswith("bool"):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            value = raw.lower() in ("true", "1", "yes")
        elif kind.startswith("tuple"):
            value = tuple(s for s in raw.split(",") if s)
        elif kind.startswith("float"):
            value = float(raw)
        elif kind.startswith("int"):
            value = int(raw)
        else:
            value = raw
    except ValueError:
        raise BadInput(f"--set {key}={raw}: expected a {kind} value, e.g. {FLAT_DEFAULTS[key]!r}") from None
    return key, value
