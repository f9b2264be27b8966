"""Searching plans: --max-drop (`candidates`: sizes, candidates, the two-stage search; `max_drop`: the
conversion that writes its result) and `sensitivity` (which layers of a plan cost the accuracy)."""

from .candidates import (
           LAYER_SCORES,
           Candidate,
           SearchResult,
           Step,
           estimate_bytes,
           mixed,
           search,
           uniform_candidates,
)
from .max_drop import SEARCH_DATA, convert_max_drop, search_subset
from .sensitivity import plan_units, run_sensitivity

__all__ = ["LAYER_SCORES", "SEARCH_DATA", "Candidate", "SearchResult", "Step", "convert_max_drop", "estimate_bytes",
           "mixed", "plan_units", "run_sensitivity", "search", "search_subset", "uniform_candidates"]
