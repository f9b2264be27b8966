"""Methods decide plans. Each method is one module with a frozen options dataclass, an optional
`analyse` (what it must measure first) and `decide(model, sites, options, analysis) -> QuantPlan`;
`REGISTRY` is the one list that convert, sweep and the --max-drop search read.

The flat vocabulary (`convert_options(method=..., bits=..., ocs_ratio=...)`) is how the CLI, sweep
cells and `--set KEY=VALUE` name options: the common fields of ConvertOptions plus the fields of the
method's dataclass. A non-default value for an option the method does not have is refused.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Callable

from ..errors import BadInput
from . import aciq, lq, ocs, qbert
from .common import ConvertOptions, Grid


@dataclass(frozen=True)
class Method:
    name: str
    title: str  # as the papers' tables name it
    options: type  # the method's frozen options dataclass
    decide: Callable  # (model, sites, ConvertOptions, analysis) -> QuantPlan
    sweep_cells: Callable[[int, Grid], list[dict]]  # bits (a table column) -> flat options per row variant
    analyse: Callable | None = None  # (model, source, sites, ConvertOptions, progress) -> analysis
    preset: dict | None = None  # flat defaults the CLI gives this method (Q-BERT: neuron groups, ACIQ)


REGISTRY: dict[str, Method] = {
    "lq": Method("lq", "LQ", lq.LQOptions, lq.decide, lq.sweep_cells),
    "aciq": Method("aciq", "ACIQ", aciq.ACIQOptions, aciq.decide, aciq.sweep_cells),
    "ocs": Method("ocs", "OCS", ocs.OCSOptions, ocs.decide, ocs.sweep_cells),
    "qbert": Method("qbert", "Q-BERT", qbert.QBertOptions, qbert.decide, qbert.sweep_cells, qbert.analyse,
                    qbert.PRESET),
}
METHODS = tuple(REGISTRY)


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise BadInput(f"unknown method '{name}': choose one of {', '.join(METHODS)}")
    return REGISTRY[name]


def _defaults(cls) -> dict:
    return {f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            for f in fields(cls) if f.name != "method_options"}


COMMON = _defaults(ConvertOptions)
OWN = {name: _defaults(m.options) for name, m in REGISTRY.items()}  # each method's own flat options
FLAT_DEFAULTS = {"method": "lq", **COMMON}
FLAT_TYPES = {f.name: str(f.type) for f in fields(ConvertOptions) if f.name != "method_options"}
for _name, _own in OWN.items():
    for _key, _value in _own.items():
        if FLAT_DEFAULTS.setdefault(_key, _value) != _value:  # one name, one default, whichever method has it
            raise AssertionError(f"option '{_key}' has two defaults")
        FLAT_TYPES.setdefault(_key, str(next(f.type for f in fields(REGISTRY[_name].options) if f.name == _key)))


# A common option that only matters with another option's value: (option, needed option, values, the flag).
APPLIES_WITH = [
    ("group_size", "granularity", ("group",), "--granularity group"),
    ("group_kernel", "granularity", ("group",), "--granularity group"),
    ("groups", "granularity", ("neuron-group",), "--granularity neuron-group"),
    ("calib_method", "act_calib", ("static",), "--act-calib static"),
    *((k, "rounding", ("gptq",), "--rounding gptq") for k in ("gptq_damp", "gptq_block", "gptq_act_order",
                                                              "gptq_tokens", "gptq_inputs", "gptq_sequential",
                                                              "gptq_grid")),
]


def check_applicable(flat: dict, given: set[str]) -> None:
    """BadInput for an option the user set that the rest of the command makes irrelevant (it would be ignored)."""
    for key, needs, values, flag in APPLIES_WITH:
        if key in given and flat.get(needs) not in values:
            raise BadInput(f"--{key.replace('_', '-')} applies only with {flag} (here {needs.replace('_', '-')} is "
                           f"{flat.get(needs)}): drop it or add {flag}")


def owners(key: str) -> list[str]:
    """The methods that have option `key` of their own."""
    return [name for name, own in OWN.items() if key in own]


def convert_options(method: str = "lq", **flat) -> ConvertOptions:
    """ConvertOptions from the flat vocabulary; an option the method does not have must keep its default."""
    m = get_method(method)
    common = {k: v for k, v in flat.items() if k in COMMON}
    own = {}
    for key, value in flat.items():
        if key in common:
            continue
        if key in OWN[method]:
            own[key] = tuple(value) if isinstance(OWN[method][key], tuple) and isinstance(value, list) else value
        elif key in FLAT_DEFAULTS:
            if value != FLAT_DEFAULTS[key]:
                raise BadInput(f"'{key}' does not apply to --method {method}: it is an option of "
                               f"{', '.join(owners(key))}")
        else:
            raise BadInput(f"unknown convert option '{key}': choose from {', '.join(sorted(FLAT_DEFAULTS))}")
    if "skip" in common:
        common["skip"] = tuple(common["skip"])
    return ConvertOptions(method_options=m.options(**own), **common)


def flat_options(options: ConvertOptions) -> dict:
    """The flat vocabulary of `options` (the inverse of convert_options)."""
    out = {"method": options.method}
    out.update({f.name: getattr(options, f.name) for f in fields(ConvertOptions) if f.name != "method_options"})
    if options.method_options is not None:
        out.update({f.name: getattr(options.method_options, f.name) for f in fields(options.method_options)})
    return out


def qbert_convert_options(qb: "qbert.QBertOptions", **overrides) -> ConvertOptions:
    """ConvertOptions for --method qbert with Q-BERT's preset (neuron groups, asymmetric, ACIQ)."""
    from dataclasses import replace

    preset = {**qbert.PRESET, **overrides}
    clip = preset.pop("clip")
    return ConvertOptions(method_options=replace(qb, clip=clip), **preset)


__all__ = ["APPLIES_WITH", "COMMON", "FLAT_DEFAULTS", "check_applicable", "FLAT_TYPES", "METHODS", "REGISTRY", "ConvertOptions", "Grid", "Method",
           "convert_options", "flat_options", "get_method", "owners", "qbert_convert_options"]
