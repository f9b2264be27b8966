"""Pass: Outlier Channel Splitting wiring — duplicated input channels come from a Concat + Gather.

Rewrite rule, for a weight W [K, N] split into W' [K + s, N] with channel index idx [K + s]
(idx[:K] = 0..K-1, idx[K:] = the channels that were split):
    MatMul(x, W)  =>  MatMul(Concat(x, Gather(x, idx[K:], axis=-1), axis=-1), W')
x[..., idx] @ W' == x @ W because each split row is halved and its copy reads the same channel.
Only the s split channels are gathered: a Gather over all K + s channels (one element at a time on
the last axis) cost ONNX Runtime far more than the 2% extra multiply-adds OCS adds; Concat copies
rows whole. The weight pass has already replaced W by W' (quantized, or FP32 for the equivalence
check). Weights whose split rows are folded back at session start (qdq_weights' ocs-fold form) need
no wiring at all.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..plan import split_activation_name
from .qdq_weights import float_initializer, int64_initializer

GATHER_SUFFIX = "_ocs_gather"
CONCAT_SUFFIX = "_ocs_concat"


def is_ocs_gather(node: ir.Node | None) -> bool:
    return node is not None and node.op_type == "Gather" and (node.name or "").endswith(GATHER_SUFFIX)


def is_ocs_concat(node: ir.Node | None) -> bool:
    return node is not None and node.op_type == "Concat" and (node.name or "").endswith(CONCAT_SUFFIX)


class SplitChannelsPass(ir.passes.InPlacePass):
    """Feed each MatMul whose weight value is in `splits` the split channels appended to its input.

    `splits` maps the MatMul's weight value name (the FP32 initializer or the DequantizeLinear output)
    to (base name, channel index [K + s]). `fp32_weights` optionally replaces FP32 initializers by W'.
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
            index = np.asarray(index, dtype=np.int64)
            k = int(index.max()) + 1
            if not np.array_equal(index[:k], np.arange(k)):
                raise ValueError(f"{base}: an OCS index starts with the K original channels")
            extra = int64_initializer(graph, f"{base}_ocs_index", index[k:])
            x = node.inputs[0]
            gather = ir.node("Gather", [x, extra], {"axis": -1}, name=f"{base}{GATHER_SUFFIX}",
                             outputs=[ir.Value(name=f"{base}_ocs_split_channels")])
            concat = ir.node("Concat", [x, gather.outputs[0]], {"axis": -1}, name=f"{base}{CONCAT_SUFFIX}",
                             outputs=[ir.Value(name=f"{base}_ocs_input")])
            graph.insert_before(node, [gather, concat])
            node.replace_input_with(0, concat.outputs[0])
        return ir.passes.PassResult(model, modified=bool(matmuls))


class SplitActivationsPass(ir.passes.InPlacePass):
    """OCS on activations: x => x[..., idx] * factor for the planned MatMuls reading x, written as
    Concat(x * factor[:K], Gather(x, idx[K:]) * factor[K:]): idx starts with the K channels in order, and a
    Gather of only the s split channels costs a fraction of one over all K + s (a last-axis Gather copies
    element by element).

    `splits` maps an activation name to (index, factor, weight values): the MatMuls whose weight input is
    one of those values (directly, or through their OCS weight Gather / Concat) read x' instead of x; the weights'
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
            readers = [(node, i) for node, i in list(x.uses()) if _reads_for(node, i, weights)]
            base = name.replace("/", "_").strip("_") or "act"
            index = np.asarray(index, np.int64)
            k = int(index.max()) + 1
            if not np.array_equal(index[:k], np.arange(k)):
                raise ValueError(f"{name}: an OCS activation index starts with the K original channels")
            scaled = ir.node("Mul", [x, float_initializer(graph, f"{base}_ocs_act_factor", factor[:k])],
                             name=f"{base}_ocs_act_halve")
            gather = ir.node("Gather", [x, int64_initializer(graph, f"{base}_ocs_act_index", index[k:])], {"axis": -1},
                             name=f"{base}_ocs_act_gather")
            extra = ir.node("Mul", [gather.outputs[0], float_initializer(graph, f"{base}_ocs_act_extra_factor", factor[k:])],
                            name=f"{base}_ocs_act_halve_extra")
            concat = ir.node("Concat", [scaled.outputs[0], extra.outputs[0]], {"axis": -1}, name=f"{base}_ocs_act_concat",
                             outputs=[ir.Value(name=split_activation_name(name))])
            nodes = [scaled, gather, extra, concat]
            producer = x.producer()
            if producer is None:
                graph.insert_before(graph[0], nodes)
            else:
                graph.insert_after(producer, nodes)
            for node, i in readers:
                node.replace_input_with(i, concat.outputs[0])
        return ir.passes.PassResult(model, modified=bool(self.splits))


def _reads_for(node: ir.Node, i: int, weights: set[str]) -> bool:
    """Whether input i of `node` is the activation input of a MatMul with one of `weights`, directly or
    through that MatMul's OCS weight wiring (Gather of the split channels -> Concat)."""
    while is_ocs_gather(node) or is_ocs_concat(node):
        node, i = node.outputs[0].uses()[0]
    return node.op_type == "MatMul" and i == 0 and node.inputs[1].name in weights
