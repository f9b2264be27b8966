"""--max-drop: a search over plans (`candidates`: sizes, candidates, the two-stage search) and the
conversion that writes its result (`max_drop`)."""

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

__all__ = ["LAYER_SCORES", "SEARCH_DATA", "Candidate", "SearchResult", "Step", "convert_max_drop", "estimate_bytes",
           "mixed", "search", "search_subset", "uniform_candidates"]
