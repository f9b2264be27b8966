"""Pass: FP32 MatMul weights -> packed integer initializer + scale (+ zero point) + DequantizeLinear.

Rewrite rule, for each planned weight W feeding MatMul(x, W):
    MatMul(x, W)  =>  MatMul(x, DequantizeLinear(W_q, W_scale[, W_zero_point], axis, block_size))
W_q is stored in the smallest container holding its bits (INT2 / INT4 / INT8, unsigned when
asymmetric), packed as ONNX packs sub-byte types, so the file size shows the packing.

Per-tensor / per-channel INT2 and INT4 values pass through Cast(to int8) before DequantizeLinear:
ONNX Runtime 1.31 fuses DQ(int2) + quantized activations into a MatMulIntegerToFloat that rejects
int2, and leaves DQ(int4) unfused (float MatMul on weights dequantized at every run). The Cast is
constant-folded at session start: 2/4-bit on disk, int8 integer kernels at run time. Blocked
(group) weights need no Cast: ONNX Runtime fuses DQ(blocked) -> MatMul into MatMulNBits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from ..numerics import QuantParams, container, pack

_DTYPES = {name: getattr(ir.DataType, name.upper()) for name in ("int8", "uint8", "int4", "uint4", "int2", "uint2")}
INT2_OPSET = 25


@dataclass
class QuantizedTensor:
    """What numerics decided for one tensor: integer values and their quantization parameters."""

    name: str
    values: np.ndarray  # integers, unpacked, same shape as the FP32 tensor (OCS: the expanded W')
    params: QuantParams
    gather_index: np.ndarray | None = None  # OCS: input channel feeding each row of W'


def integer_initializer(graph: ir.Graph, name: str, values: np.ndarray, bits: int, signed: bool) -> ir.Value:
    """Register `values` as an initializer in the container for `bits` (packed for 2/4-bit types)."""
    dtype = _DTYPES[container(bits, signed)]
    if dtype.bitwidth < 8:
        tensor = ir.PackedTensor(pack(values, dtype.bitwidth), dtype, shape=list(values.shape), name=name)
    else:
        tensor = ir.tensor(values.astype(np.int8 if signed else np.uint8), name=name)
    value = ir.Value(name=name, shape=ir.Shape(values.shape), type=ir.TensorType(dtype), const_value=tensor)
    graph.register_initializer(value)
    return value


def float_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    array = np.asarray(array, dtype=np.float32)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.FLOAT),
                     const_value=ir.tensor(array, name=name))
    graph.register_initializer(value)
    return value


def dequantize_nodes(graph: ir.Graph, base: str, values: np.ndarray, params: QuantParams) -> list[ir.Node]:
    """[Cast,] DequantizeLinear over a new quantized initializer named after `base`; the last node's
    output is the dequantized tensor."""
    q = integer_initializer(graph, f"{base}_quantized", values, params.bits, params.symmetric)
    new_nodes = []
    zp_bits = params.bits
    if q.type.dtype.bitwidth < 8 and not params.block_size:
        to = ir.DataType.INT8 if params.symmetric else ir.DataType.UINT8
        cast = ir.node("Cast", [q], {"to": to}, name=f"{base}_Cast", outputs=[ir.Value(name=f"{base}_int8")])
        new_nodes.append(cast)
        q, zp_bits = cast.outputs[0], 8
    scale = float_initializer(graph, f"{base}_scale", params.scale)
    inputs = [q, scale]
    if params.zero_point is not None:  # same container type as the values (ONNX requires it)
        inputs.append(integer_initializer(graph, f"{base}_zero_point", np.asarray(params.zero_point), zp_bits,
                                          params.symmetric))
    attributes = {}
    if params.axis is not None:
        attributes["axis"] = params.axis
    if params.block_size:
        attributes["block_size"] = params.block_size
    dq = ir.node("DequantizeLinear", inputs, attributes, name=f"{base}_DequantizeLinear",
                 outputs=[ir.Value(name=f"{base}_dequantized")])
    return [*new_nodes, dq]


class QuantizeWeightsPass(ir.passes.InPlacePass):
    """Replace each planned MatMul weight by its dequantized integer form (see module docstring)."""

    def __init__(self, tensors: list[QuantizedTensor]):
        super().__init__()
        self.tensors = tensors

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        for t in self.tensors:
            old = graph.initializers[t.name]
            nodes = dequantize_nodes(graph, t.name, t.values, t.params)
            first_use = min((graph.index(n) for n, _ in old.uses()), default=0)
            graph.insert_before(graph[first_use], nodes)
            old.replace_all_uses_with(nodes[-1].outputs[0])
            graph.initializers.pop(t.name)
        if any(t.params.bits <= 2 for t in self.tensors):
            raise_opset(model, INT2_OPSET)
        return ir.passes.PassResult(model, modified=bool(self.tensors))


def raise_opset(model: ir.Model, version: int) -> None:
    """INT2 DequantizeLinear exists from opset 25; the ops BERT uses are unchanged 21 -> 25."""
    if model.opset_imports.get("", 0) < version:
        model.opset_imports[""] = version
