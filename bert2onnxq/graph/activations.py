"""Pass: 8-bit activations at the input of every MatMul whose weight was quantized.

Rewrite rule, for each MatMul(x, DQ(W)) in the set (Q, K and V share one quantizer of x):
    dynamic: x => DequantizeLinear(DynamicQuantizeLinear(x))          (uint8, per batch min-max)
    static:  x => DequantizeLinear(QuantizeLinear(x, s, zp), s, zp)   (uint8, calibrated range)
One DequantizeLinear per MatMul (the QDQ form ONNX Runtime fuses into integer MatMuls). When OCS
appends split channels of x (Concat(x, Gather(x, channels))), Concat and Gather move onto the uint8
tensor, before the DequantizeLinear: duplicated channels keep the same per-tensor scale.

Per token (`PerTokenActivationsPass`), for MatMul(x, DequantizeLinear(W_q, W_scale[, W_zp])) [+ bias]:
    s = max(ReduceMax(|x|, last axis) / 127, tiny);  q = QuantizeLinear(x, s, 128, block = the row)
    (numerics.per_token_quantize)
    MatMul => Mul(Cast(MatMulInteger(q, W_q, 128[, W_zp])), Mul(s, W_scale)) [- (-bias)]
QDQ cannot say a scale per row, so the integer MatMul is written out; ONNX Runtime fuses it into
MatMulIntegerToFloat, which applies a per-row scale after its GEMM. A bias Add after it becomes a Sub
of the negated bias: ORT 1.32 fuses a bias Add into that kernel and then scales the bias by the row
scale too (measured with ORT 1.32.0: docs/results.md).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .. import numerics
from .ocs import is_ocs_concat
from .qdq_weights import constant_initializer, float_initializer, shared_constant


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


def _quantized_inputs(graph: ir.Graph, weight_values, quantize):
    """(MatMul, the quantized input it should read, the quantizer's parameters) for each MatMul whose weight
    is in `weight_values`. `quantize(x, matmul) -> (q, *parameters)` runs once per activation (Q, K and V
    share it); an OCS Concat(x, Gather(x, channels)) moves onto q, so the split channels keep x's scale."""
    matmuls = [n for n in graph if n.op_type == "MatMul" and n.inputs[1] is not None
               and n.inputs[1].name in weight_values]
    quantized: dict[str, tuple] = {}
    for node in matmuls:
        concat = node.inputs[0].producer()
        concat = concat if is_ocs_concat(concat) else None
        x = concat.inputs[0] if concat else node.inputs[0]
        if x.name not in quantized:
            quantized[x.name] = quantize(x, node)
        q, *parameters = quantized[x.name]
        if concat:
            concat.inputs[1].producer().replace_input_with(0, q)  # the Gather of the split channels
            concat.replace_input_with(0, q)
            q = concat.outputs[0]
        yield node, q, parameters


class QuantizeActivationsPass(ir.passes.InPlacePass):
    """Insert activation quantizers in front of the MatMuls that use the given weight values."""

    def __init__(self, weight_values: list[str], ranges: dict[str, list[float]] | None = None):
        super().__init__()
        self.weight_values = set(weight_values)  # MatMul weight inputs (DequantizeLinear outputs)
        self.ranges = ranges  # None: dynamic; else activation name -> [lo, hi]

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        rewritten = 0
        for node, q, (scale, zp) in _quantized_inputs(graph, self.weight_values, lambda x, _: self._quantize(graph, x)):
            dq = ir.node("DequantizeLinear", [q, scale, zp], name=f"{node.name}_act_DequantizeLinear",
                         outputs=[ir.Value(name=f"{node.name}_act_dequantized")])
            graph.insert_before(node, dq)
            node.replace_input_with(0, dq.outputs[0])
            rewritten += 1
        return ir.passes.PassResult(model, modified=bool(rewritten))

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


class PerTokenActivationsPass(ir.passes.InPlacePass):
    """Symmetric int8 activations per token on the int8 GEMM (module docstring): `widths` maps each weight
    value (a DequantizeLinear output) to the width of the activation its MatMul reads."""

    def __init__(self, widths: dict[str, int]):
        super().__init__()
        self.widths = widths

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        rewritten = 0
        for node, q, (scale,) in _quantized_inputs(
                graph, self.widths, lambda x, node: self._quantize(graph, x, self.widths[node.inputs[1].name])):
            self._integer_matmul(graph, node, q, scale)
            rewritten += 1
        return ir.passes.PassResult(model, modified=bool(rewritten))

    def _quantize(self, graph: ir.Graph, x: ir.Value, width: int) -> tuple[ir.Value, ir.Value]:
        """Quantize x right after it is produced; returns (uint8 value, its scale per row [..., 1])."""
        base = x.name.replace("/", "_").strip("_") or "act"
        constants = {"axes": ([-1], np.int64), "levels": (127, np.float32), "min_scale": (numerics.PER_TOKEN_MIN_SCALE, np.float32)}
        c = {name: shared_constant(graph, f"per_token_{name}", a, dtype) for name, (a, dtype) in constants.items()}
        nodes: list[ir.Node] = []

        def add(op, inputs, name, **attributes):
            nodes.append(ir.node(op, inputs, attributes, name=f"{base}_per_token_{name}",
                                 outputs=[ir.Value(name=f"{base}_per_token_{name}_output")]))
            return nodes[-1].outputs[0]

        absmax = add("ReduceMax", [add("Abs", [x], "Abs"), c["axes"]], "ReduceMax", keepdims=1)
        scale = add("Max", [add("Div", [absmax, c["levels"]], "Div"), c["min_scale"]], "scale")
        # blocked QuantizeLinear wants a zero point shaped like its scale: 128 for every row
        zp = add("ConstantOfShape", [add("Shape", [scale], "Shape")], "zero_point",
                 value=ir.tensor(np.array([128], np.uint8), name="per_token_zero_point_value"))
        q = add("QuantizeLinear", [x, scale, zp], "QuantizeLinear", axis=-1, block_size=width)
        producer = x.producer()
        if producer is None:
            graph.insert_before(graph[0], nodes)
        else:
            graph.insert_after(producer, nodes)
        return q, scale

    def _integer_matmul(self, graph: ir.Graph, node: ir.Node, q: ir.Value, scale: ir.Value) -> None:
        dq = node.inputs[1].producer()  # the weight's DequantizeLinear(W_q, W_scale[, W_zp])
        w_q, w_scale, *w_zp = dq.inputs
        a_zp = shared_constant(graph, "per_token_zero_point", 128, np.uint8)
        name = node.name or node.outputs[0].name
        integer = ir.node("MatMulInteger", [q, w_q, a_zp, *w_zp], name=f"{name}_MatMulInteger")
        cast = ir.node("Cast", integer.outputs, {"to": ir.DataType.FLOAT}, name=f"{name}_Cast")
        scales = ir.node("Mul", [scale, w_scale], name=f"{name}_scales")
        out = ir.node("Mul", [cast.outputs[0], scales.outputs[0]], name=f"{name}_Mul",
                      outputs=[ir.Value(name=f"{name}_per_token_output")])
        nodes = [integer, cast, scales, out]
        graph.insert_before(node, nodes)
        y = nodes[-1].outputs[0]
        _take_place(node.outputs[0], y)
        graph.remove(node, safe=True)
        if not dq.outputs[0].uses():
            graph.remove(dq, safe=True)
        for user, index in list(y.uses()):
            bias = user.inputs[1 - index] if user.op_type == "Add" else None
            if bias is not None and bias.const_value is not None:
                negated = constant_initializer(graph, f"{bias.name}_negated", -bias.const_value.numpy(), np.float32)
                sub = ir.node("Sub", [y, negated], name=f"{user.name}_as_Sub", outputs=[ir.Value(name=f"{user.name}_as_Sub_output")])
                graph.insert_before(user, sub)
                _take_place(user.outputs[0], sub.outputs[0])
                graph.remove(user, safe=True)
                if not bias.uses() and bias.name in graph.initializers:
                    graph.initializers.pop(bias.name)


def _take_place(old: ir.Value, new: ir.Value) -> None:
    """`new` replaces `old` everywhere; a graph output keeps its name, type and shape (the file's interface)."""
    new.type, new.shape = new.type or old.type, new.shape or old.shape
    if old.is_graph_output():
        name, old.name = old.name, f"{old.name}_replaced"
        new.name = name
    old.replace_all_uses_with(new, replace_graph_outputs=True)
