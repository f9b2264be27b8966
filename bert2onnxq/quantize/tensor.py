"""What the quantize stage hands the graph passes for one tensor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..numerics import QuantParams

FORMS = ("plain", "ocs-fold", "two-level")  # graph forms: graph/qdq_weights.py's docstring


@dataclass
class QuantizedTensor:
    """What numerics decided for one tensor: integer values and their quantization parameters."""

    name: str
    values: np.ndarray  # integers, unpacked, same shape as the FP32 tensor (OCS: the expanded W')
    params: QuantParams
    gather_index: np.ndarray | None = None  # OCS: input channel feeding each row of W'
    form: str = "plain"  # plain | ocs-fold | two-level (graph/qdq_weights.py's docstring)
    load_as: str | None = None  # plain form: signed container name to Cast to at session start (int8, int4)
    bit_packed: bool = False  # stored `bits` bits each in uint8 bytes, unpacked by the graph at load
    latent: np.ndarray | None = None  # GPTQ, kept for --finetune: float32 weights that round to `values` (within_cells)
