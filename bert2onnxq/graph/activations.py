"""Pass: 8-bit activations at the input of every MatMul whose weight was quantized.

Rewrite rule, for each distinct input x of those MatMuls (Q, K and V share one):
    dynamic: x => DequantizeLinear(DynamicQuantizeLinear(x))          (uint8, per batch min-max)
    static:  x => DequantizeLinear(QuantizeLinear(x, s, zp), s, zp)   (uint8, calibrated range)
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

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
    """Insert activation quantizers before the given MatMul weights' consumers."""

    def __init__(self, weight_values: list[str], ranges: dict[str, list[float]] | None = None):
        super().__init__()
        self.weight_values = weight_values  # names of the values used as MatMul weights (dequantized)
        self.ranges = ranges  # None: dynamic; else activation name -> [lo, hi]

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        matmuls = [node for node in graph if node.op_type == "MatMul" and node.inputs[1] is not None
                   and node.inputs[1].name in set(self.weight_values)]
        done: dict[str, ir.Value] = {}
        for node in matmuls:
            x = node.inputs[0]
            if x.name not in done:
                done[x.name] = self._quantize(graph, node, x)
            node.replace_input_with(0, done[x.name])
        return ir.passes.PassResult(model, modified=bool(matmuls))

    def _quantize(self, graph: ir.Graph, before: ir.Node, x: ir.Value) -> ir.Value:
        base = x.name.replace("/", "_").strip("_") or "act"
        if self.ranges is None:
            q = ir.node("DynamicQuantizeLinear", [x], num_outputs=3, name=f"{base}_DynamicQuantizeLinear")
            q_out, scale, zp = q.outputs
            new = [q]
        else:
            s, z = static_qparams(*self.ranges[x.name])
            scale = float_initializer(graph, f"{base}_act_scale", np.array(s, dtype=np.float32))
            zp = _uint8_initializer(graph, f"{base}_act_zero_point", z)
            q = ir.node("QuantizeLinear", [x, scale, zp], name=f"{base}_QuantizeLinear")
            q_out = q.outputs[0]
            new = [q]
        dq = ir.node("DequantizeLinear", [q_out, scale, zp], name=f"{base}_act_DequantizeLinear",
                     outputs=[ir.Value(name=f"{base}_act_dequantized")])
        graph.insert_before(before, [*new, dq])
        return dq.outputs[0]
