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
            extra = ir.Value(name=f"{base}_ocs_index", shape=ir.Shape([index.size - k]), type=ir.TensorType(ir.DataType.INT64),
                             const_value=ir.tensor(index[k:], name=f"{base}_ocs_index"))
            graph.register_initializer(extra)
            x = node.inputs[0]
            gather = ir.node("Gather", [x, extra], {"axis": -1}, name=f"{base}{GATHER_SUFFIX}",
                             outputs=[ir.Value(name=f"{base}_ocs_split_channels")])
            concat = ir.node("Concat", [x, gather.outputs[0]], {"axis": -1}, name=f"{base}{CONCAT_SUFFIX}",
                             outputs=[ir.Value(name=f"{base}_ocs_input")])
            graph.insert_before(node, [gather, concat])
            node.replace_input_with(0, concat.outputs[0])
        return ir.passes.PassResult(model, modified=bool(matmuls))
