"""Pass: embedding tables stored quantized with per-row scales, dequantized after the lookup.

Rewrite rule, for Gather(T, ids) with T [rows, hidden]:
    8-bit: Gather(T, ids) => Cast(Gather(T_q, ids), float) * Unsqueeze(Gather(T_scale, ids), -1)
    4-bit: Gather(T, ids) => com.microsoft.GatherBlockQuantized(T_q int4, ids, T_scale [rows, hidden/B])
Only the looked-up rows are dequantized; the table is never dequantized whole per inference.
Standard ONNX has no gather over INT4, hence ONNX Runtime's contrib op for 4-bit tables.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..quantize.tensor import QuantizedTensor
from .qdq_weights import float_initializer, integer_initializer


class QuantizeEmbeddingsPass(ir.passes.InPlacePass):
    def __init__(self, tables: list[QuantizedTensor]):
        super().__init__()
        self.tables = tables  # params.scale has one entry per row; symmetric int8

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        for t in self.tables:
            if t.params.bits <= 4:
                self._gather_block_quantized(model, t)
                continue
            old = graph.initializers[t.name]
            q = integer_initializer(graph, f"{t.name}_quantized", t.values, t.params.bits, signed=True)
            scale = float_initializer(graph, f"{t.name}_scale", np.asarray(t.params.scale).reshape(-1))
            axes = ir.Value(name=f"{t.name}_unsqueeze_axes", shape=ir.Shape([1]), type=ir.TensorType(ir.DataType.INT64),
                            const_value=ir.tensor(np.array([-1], dtype=np.int64)))
            graph.register_initializer(axes)
            for gather, _ in list(old.uses()):
                ids = gather.inputs[1]
                prefix = gather.name or t.name
                rows = ir.node("Gather", [q, ids], {"axis": 0}, name=f"{prefix}_rows")
                cast = ir.node("Cast", [rows.outputs[0]], {"to": ir.DataType.FLOAT}, name=f"{prefix}_cast")
                row_scale = ir.node("Gather", [scale, ids], {"axis": 0}, name=f"{prefix}_row_scale")
                unsq = ir.node("Unsqueeze", [row_scale.outputs[0], axes], name=f"{prefix}_unsqueeze")
                mul = ir.node("Mul", [cast.outputs[0], unsq.outputs[0]], name=f"{prefix}_dequantize")
                graph.insert_before(gather, [rows, cast, row_scale, unsq, mul])
                gather.outputs[0].replace_all_uses_with(mul.outputs[0])
                if gather.outputs[0].is_graph_output():
                    continue
                graph.remove(gather, safe=True)
            graph.initializers.pop(t.name)
        return ir.passes.PassResult(model, modified=bool(self.tables))

    @staticmethod
    def _gather_block_quantized(model: ir.Model, t: QuantizedTensor) -> None:
        graph = model.graph
        old = graph.initializers[t.name]
        q = integer_initializer(graph, f"{t.name}_quantized", t.values, 4, signed=True)
        scale = float_initializer(graph, f"{t.name}_scale", np.asarray(t.params.scale).T)  # [rows, hidden / B]
        model.opset_imports.setdefault("com.microsoft", 1)
        for gather, _ in list(old.uses()):
            node = ir.node("GatherBlockQuantized", [q, gather.inputs[1], scale],
                           {"gather_axis": 0, "quantize_axis": 1, "block_size": t.params.block_size},
                           domain="com.microsoft", name=f"{gather.name or t.name}_GatherBlockQuantized")
            graph.insert_before(gather, node)
            gather.outputs[0].replace_all_uses_with(node.outputs[0])
            graph.remove(gather, safe=True)
        graph.initializers.pop(t.name)
