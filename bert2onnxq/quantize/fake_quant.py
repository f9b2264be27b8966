"""The quantized file's forward pass in torch, for training through it (quantize/finetune.py).

`prepare` wraps a Hugging Face model in place: every planned Linear's weight becomes the float weight
the graph multiplies with (`quantize.runtime_weight` on `quantize.weight_grid`: the numerics that
write the file), its input the 8-bit activation its kernel sees, and the embedding tables their int8
rows. Gradients pass straight through the rounding (STE). Given GPTQ's integers (`start`), a weight
keeps their grid and starts where GPTQ's compensated weight sat in each rounding cell (numerics.within_cells):
it rounds to GPTQ's integers, so training begins from the rounded file, and a near decision flips with a small
step (from the cells' centres, the dequantized values, no weight would move at fine-tuning learning rates).
"""

from __future__ import annotations

import numpy as np

from .. import numerics
from ..errors import BadInput
from ..plan import QuantPlan, TensorPlan
from .tensor import QuantizedTensor


def fake_dynamic(x):
    """x as DynamicQuantizeLinear -> DequantizeLinear sees it (numerics.dynamic_quantize), straight through."""
    import torch

    with torch.no_grad():
        lo, hi = torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0)
        scale = (hi - lo) / 255.0
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero = torch.clamp(torch.round(-lo / scale), 0, 255)
        q = torch.clamp(torch.round(x / scale) + zero, 0, 255)
        xq = (q - zero) * scale
    return x + (xq - x).detach()


def fake_per_token(x):
    """x as the per-token quantizer sees it (numerics.per_token_quantize), straight through."""
    import torch

    with torch.no_grad():
        scale = torch.clamp(x.abs().amax(dim=-1, keepdim=True) / 127.0, min=float(numerics.PER_TOKEN_MIN_SCALE))
        xq = torch.clamp(torch.round(x / scale), -127, 127) * scale
    return x + (xq - x).detach()


def fake_blocks(x, block: int):
    """x as MatMulNBits (accuracy level 4) quantizes its input: symmetric int8 per block of `block` inputs."""
    import torch

    k = x.shape[-1]
    pad = (-k) % block
    with torch.no_grad():
        xp = torch.nn.functional.pad(x, (0, pad)).reshape(*x.shape[:-1], -1, block)
        scale = xp.abs().amax(dim=-1, keepdim=True) / 127.0
        inv = torch.where(scale > 0, 1.0 / scale, torch.zeros_like(scale))
        xq = (torch.round(xp * inv).clamp(-127, 127) * scale).reshape(*x.shape[:-1], -1)[..., :k]
    return x + (xq - x).detach()


def _torch_grid(params: numerics.QuantParams, shape: tuple[int, int]):
    """(scale, zero, qmin, qmax) of a [K, N] weight's grid, expanded and laid out as torch's [out, in]."""
    import torch

    scale, zero = numerics.expanded_grid(params, shape)
    qmin, qmax = numerics.int_range(params.bits, params.symmetric)
    return (torch.from_numpy(np.ascontiguousarray(scale.T, np.float32)),
            torch.from_numpy(np.ascontiguousarray(zero.T, np.float64)), qmin, qmax)


def _grid_module(plan: QuantPlan | None, t: TensorPlan, kept: numerics.QuantParams | None = None):
    """A parametrization: the tensor as the plan's grid holds it, gradients straight through.

    The grid (scales, zero points) comes from numerics on the weights as they are at `refresh()`, which
    training calls every few steps and after the last one; in between, the rounding runs in torch on that
    grid (in float64, as numerics.quantize does). `kept`: a grid that never changes (GPTQ's). OCS weights
    (rows split and folded back) are recomputed by numerics at every step. Embedding tables (plan None)
    are frozen: their grid is computed once."""
    import torch

    from . import runtime_weight, table_params, weight_grid

    class Grid(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fixed = None  # (scale, zero, qmin, qmax) as [out, in] tensors, or a frozen table
            self.trained = plan is not None and kept is None  # refreshed while training; tables, kept grids: not
            if kept is not None:
                self.fixed = _torch_grid(kept, tuple(t.shape))

        def refresh(self, w):
            if plan is None:  # an embedding table [rows, hidden]
                table = w.detach().cpu().numpy()
                params = table_params(table, t)
                self.fixed = torch.from_numpy(numerics.dequantize(numerics.quantize(table.T, params), params).T.copy())
                return
            if t.ocs_ratio:  # recomputed at every step (forward)
                return
            matrix, params, _ = weight_grid(np.ascontiguousarray(w.detach().cpu().numpy().T), t)
            self.fixed = _torch_grid(params, matrix.shape)

        def forward(self, w):
            with torch.no_grad():
                if plan is None:
                    if self.fixed is None:
                        self.refresh(w)
                    return self.fixed
                if self.fixed is None:  # OCS: numerics' runtime weight, every step
                    matrix, params, index = weight_grid(np.ascontiguousarray(w.detach().cpu().numpy().T), t)
                    qt = QuantizedTensor(t.name, numerics.quantize(matrix, params), params, index)
                    q = torch.from_numpy(np.ascontiguousarray(runtime_weight(plan, t, qt).T, np.float32))
                else:
                    scale, zero, qmin, qmax = self.fixed
                    d = torch.clamp(torch.round(w.double() / scale.double()) + zero, qmin, qmax) - zero
                    q = d.float() * scale
            return w + (q - w).detach()

    return Grid()


def refresh_grids(hf_model) -> None:
    """Recompute every planned weight's grid from its current (latent) weight."""
    for module in hf_model.modules():
        for plist in getattr(module, "parametrizations", {}).values():
            for grid in plist:
                if getattr(grid, "trained", False):
                    grid.refresh(plist.original)


def prepare(hf_model, plan: QuantPlan, start: dict[str, QuantizedTensor] | None = None):
    """Wrap `hf_model` (in place) so that its forward computes what the quantized file will (module docstring).
    `start` {weight: GPTQ's QuantizedTensor}: those weights start at its latent (or dequantized values), on its grid."""
    import torch
    from torch.nn.utils import parametrize

    modules = dict(hf_model.named_modules())
    for t in plan.weights:
        module = modules.get(t.name.removesuffix(".weight"))
        if module is None or tuple(module.weight.shape[::-1]) != tuple(t.shape):
            raise BadInput(f"the Hugging Face model has no Linear '{t.name}' of shape {list(t.shape[::-1])}: pass the "
                           "model this ONNX was exported from with --hf-model")
        begin = (start or {}).get(t.name)
        if begin is not None:  # on the kept grid, rounding gives GPTQ's integers back exactly
            start_w = begin.latent if begin.latent is not None else numerics.dequantize(begin.values, begin.params)
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(np.ascontiguousarray(start_w.T, np.float32)))
        grid = _grid_module(plan, t, begin.params if begin is not None else None)
        if begin is None:
            grid.refresh(module.weight)
        parametrize.register_parametrization(module, "weight", grid)
        if plan.activations.bits:
            block = t.group_size if t.kernel == "matmulnbits" and t.granularity == "group" else None
            quantize = fake_per_token if plan.activations.mode == "per-token" else fake_dynamic
            module.register_forward_pre_hook(lambda _m, args, b=block, f=quantize: ((fake_blocks(args[0], b) if b else f(args[0])),
                                                                                    *args[1:]))
    for t in plan.embeddings:
        module = modules.get(t.name.removesuffix(".weight"))
        if module is None or tuple(module.weight.shape) != tuple(t.shape):
            raise BadInput(f"the Hugging Face model has no embedding table '{t.name}' of shape {list(t.shape)}: pass the "
                           "model this ONNX was exported from with --hf-model")
        parametrize.register_parametrization(module, "weight", _grid_module(None, t))
        module.parametrizations.weight.original.requires_grad_(False)
    return hf_model
