"""Pass: Outlier Channel Splitting wiring — duplicated input channels come from a Gather.

Rewrite rule, for a weight W [K, N] split into W' [K + s, N] with channel index idx [K + s]:
    MatMul(x, W)  =>  MatMul(Gather(x, idx, axis=-1), W')
x[..., idx] @ W' == x @ W because each split row is halved and its copy reads the same channel.
The weight pass has already replaced W by W' (quantized, or FP32 for the equivalence check).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

GATHER_SUFFIX = "_ocs_gather"


def is_ocs_gather(node: ir.Node | None) -> bool:
    return node is not None and node.op_type == "Gather" and (node.name or "").endswith(GATHER_SUFFIX)


class SplitChannelsPass(ir.passes.InPlacePass):
    """Insert Gather(x, idx, axis=-1) in front of each MatMul whose weight value is in `splits`.

    `splits` maps the MatMul's weight value name (the FP32 initializer or the DequantizeLinear output)
    to (base name, channel index). `fp32_weights` optionally replaces FP32 initializers by W'.
    """

    def __init__(self, splits: dict[str, tuple[str, np.ndarray]], fp32_weights: dict[str, np.ndarray] | None = None):
        super().__init__()
        self.splits = splits
        self.fp32_weights = fp32_weights or {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        for name, expanded in self.fp32_weights.items():
            old = graph.initializers[name]
            old.const_value = ir.tensor(np.asarray(expanded, dtype=np.float32), name=name)
            old.shape = ir.Shape(expanded.shape)
        matmuls = [n for n in graph if n.op_type == "MatMul" and n.inputs[1] is not None and n.inputs[1].name in self.splits]
        for node in matmuls:
            base, index = self.splits[node.inputs[1].name]
            idx = ir.Value(name=f"{base}_ocs_index", shape=ir.Shape(index.shape), type=ir.TensorType(ir.DataType.INT64),
                           const_value=ir.tensor(np.asarray(index, dtype=np.int64), name=f"{base}_ocs_index"))
            graph.register_initializer(idx)
            gather = ir.node("Gather", [node.inputs[0], idx], {"axis": -1}, name=f"{base}{GATHER_SUFFIX}",
                             outputs=[ir.Value(name=f"{base}_ocs_input")])
            graph.insert_before(node, gather)
            node.replace_input_with(0, gather.outputs[0])
        return ir.passes.PassResult(model, modified=bool(matmuls))


class SplitActivationsPass(ir.passes.InPlacePass):
    """OCS on activations: x => Mul(Gather(x, idx, axis=-1), factor) for the planned MatMuls reading x.

    `splits` maps an activation name to (index, factor, weight values): the MatMuls whose weight input is
    one of those values (directly, or through their OCS weight Gather) read x' instead of x; the weights'
    rows were already duplicated by the weight pass. Other readers of x (residual Add) keep x.
    """

    def __init__(self, splits: dict[str, tuple[np.ndarray, np.ndarray, set[str]]]):
        super().__init__()
        self.splits = splits

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        values = {v.name: v for n in graph for v in n.outputs} | {v.name: v for v in graph.inputs}
        for name, (index, factor, weights) in self.splits.items():
            x = values[name]
            readers = []
            for node, i in list(x.uses()):
                matmul = node.outputs[0].uses()[0][0] if is_ocs_gather(node) else node
                if i == 0 and matmul.op_type == "MatMul" and matmul.inputs[1].name in weights:
                    readers.append(node)
            base = name.replace("/", "_").strip("_") or "act"
            idx = ir.Value(name=f"{base}_ocs_act_index", shape=ir.Shape(index.shape),
                           type=ir.TensorType(ir.DataType.INT64), const_value=ir.tensor(np.asarray(index, np.int64)))
            scale = ir.Value(name=f"{base}_ocs_act_factor", shape=ir.Shape(factor.shape),
                             type=ir.TensorType(ir.DataType.FLOAT), const_value=ir.tensor(np.asarray(factor, np.float32)))
            graph.register_initializer(idx)
            graph.register_initializer(scale)
            gather = ir.node("Gather", [x, idx], {"axis": -1}, name=f"{base}_ocs_act_gather")
            mul = ir.node("Mul", [gather.outputs[0], scale], name=f"{base}_ocs_act_halve",
                          outputs=[ir.Value(name=split_activation_name(name))])
            producer = x.producer()
            if producer is None:
                graph.insert_before(graph[0], [gather, mul])
            else:
                graph.insert_after(producer, [gather, mul])
            for node in readers:
                node.replace_input_with(0, mul.outputs[0])
        return ir.passes.PassResult(model, modified=bool(self.splits))


def split_activation_name(name: str) -> str:
    """The graph name of activation `name` after its channels were split (what gets quantized)."""
    return f"{name}_ocs_split"
