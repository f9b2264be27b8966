"""Quantization numerics on plain numpy arrays (no onnx, no torch): ranges, scales, packing, ACIQ."""

from .aciq import DISTRIBUTIONS, gauss_mse, laplace_mse, optimal_alpha
from .gptq import PER_TOKEN_MIN_SCALE, dynamic_quantize, per_token_quantize
from .ocs import (
                  ActivationSplit,
                  OCSSplit,
                  activation_split,
                  grid_aware,
                  num_splits,
                  ocs_params,
                  ocs_split,
                  replay_splits,
                  split_order,
)
from .packing import (
                  BIT_PACKED,
                  bit_offsets,
                  container_bits,
                  container_bytes,
                  ideal_bytes,
                  pack,
                  pack_bits,
                  unpack,
                  unpack_bits,
)
from .quant import (
                  GRANULARITIES,
                  QuantParams,
                  aciq_params,
                  container,
                  dequantize,
                  expand_scale,
                  expanded_grid,
                  int_range,
                  lq_params,
                  mse,
                  neuron_groups,
                  quantize,
                  weight_ranges,
)
from .runtime import fold_ocs, multiplier_limit, two_level_int8, two_level_params

__all__ = ["DISTRIBUTIONS", "GRANULARITIES", "QuantParams", "aciq_params", "container", "container_bits",
           "container_bytes", "dequantize", "expand_scale", "expanded_grid", "gauss_mse", "ideal_bytes", "int_range",
           "laplace_mse", "lq_params", "mse", "neuron_groups", "ActivationSplit", "OCSSplit", "activation_split",
           "replay_splits", "split_order", "grid_aware", "num_splits", "ocs_params", "ocs_split", "optimal_alpha",
           "pack", "quantize", "unpack", "weight_ranges", "fold_ocs", "multiplier_limit", "two_level_int8", "two_level_params", "dynamic_quantize",
           "PER_TOKEN_MIN_SCALE", "per_token_quantize",
           "BIT_PACKED", "bit_offsets", "pack_bits", "unpack_bits"]
