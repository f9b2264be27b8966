"""Pass: 8-bit activations at the input of every MatMul whose weight was quantized.

Rewrite rule, for each MatMul(x, DQ(W)) in the set (Q, K and V share one quantizer of x):
    dynamic: x => DequantizeLinear(DynamicQuantizeLinear(x))          (uint8, per batch min-max)
    static:  x => DequantizeLinear(QuantizeLinear(x, s, zp), s, zp)   (uint8, calibrated range)
One DequantizeLinear per MatMul (the QDQ form ONNX Runtime fuses into integer MatMuls). When OCS
appends split channels of x (Concat(x, Gather(x, channels))), Concat and Gather move onto the uint8
tensor, before the DequantizeLinear: duplicated channels keep the same per-tensor scale.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .ocs import is_ocs_concat
from .qdq_weights import float_initializer


def _uint8_initializer(graph: ir.Graph, name: str, value: int) -> ir.Value:
    v = ir.Value(name=name, shape=ir.Shape([]), type=ir.TensorType(ir.DataType.UINT8),
                 const_value=ir.tensor(np.array(value, dtype=np.uint8), name=name))
    graph.register_initializer(v)
    return v


def static_qparams(lo: float, hi: float) -> tuple[float, int]:
    """uint8 scale and zero point for a range that always contains 0 (ONNX's own convention)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    return float(np.float32(scale)), int(np.clip(np.rint(-lo / scale), 0, 255))


class QuantizeActivationsPass(ir.passes.InPlacePass):
    """Insert activation quantizers in front of the MatMuls that use the given weight values."""

    def __init__(self, weight_values: list[str], ranges: dict[str, list[float]] | None = None):
        super().__init__()
        self.weight_values = set(weight_values)  # MatMul weight inputs (DequantizeLinear outputs)
        self.ranges = ranges  # None: dynamic; else activation name -> [lo, hi]

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        matmuls = [n for n in graph if n.op_type == "MatMul" and n.inputs[1] is not None
                   and n.inputs[1].name in self.weight_values]
        quantized: dict[str, tuple[ir.Value, ir.Value, ir.Value]] = {}
        for node in matmuls:
            concat = node.inputs[0].producer()
            concat = concat if is_ocs_concat(concat) else None
            x = concat.inputs[0] if concat else node.inputs[0]
            if x.name not in quantized:
                quantized[x.name] = self._quantize(graph, x)
            q, scale, zp = quantized[x.name]
            if concat:
                concat.inputs[1].producer().replace_input_with(0, q)  # the Gather of the split channels
                concat.replace_input_with(0, q)
                q = concat.outputs[0]
            dq = ir.node("DequantizeLinear", [q, scale, zp], name=f"{node.name}_act_DequantizeLinear",
                         outputs=[ir.Value(name=f"{node.name}_act_dequantized")])
            graph.insert_before(node, dq)
            node.replace_input_with(0, dq.outputs[0])
        return ir.passes.PassResult(model, modified=bool(matmuls))

    def _quantize(self, graph: ir.Graph, x: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
        """Quantize x right after it is produced; returns (uint8 value, scale, zero point)."""
        base = x.name.replace("/", "_").strip("_") or "act"
        if self.ranges is None:
            q = ir.node("DynamicQuantizeLinear", [x], num_outputs=3, name=f"{base}_DynamicQuantizeLinear")
            q_out, scale, zp = q.outputs
        else:
            s, z = static_qparams(*self.ranges[x.name])
            scale = float_initializer(graph, f"{base}_act_scale", np.array(s, dtype=np.float32))
            zp = _uint8_initializer(graph, f"{base}_act_zero_point", z)
            q = ir.node("QuantizeLinear", [x, scale, zp], name=f"{base}_QuantizeLinear")
            q_out = q.outputs[0]
        producer = x.producer()
        if producer is None:
            graph.insert_before(graph[0], q)
        else:
            graph.insert_after(producer, q)
        return q_out, scale, zp
