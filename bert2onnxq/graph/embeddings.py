"""Pass: embedding tables stored as int8 with one scale per row, dequantized after the lookup.

Rewrite rule, for Gather(T, ids) with T [rows, hidden]:
    Gather(T, ids) => Cast(Gather(T_q, ids), float) * Unsqueeze(Gather(T_scale, ids), -1)
Only the looked-up rows are dequantized; the table is never dequantized whole per inference.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .qdq_weights import QuantizedTensor, float_initializer, integer_initializer


class QuantizeEmbeddingsPass(ir.passes.InPlacePass):
    def __init__(self, tables: list[QuantizedTensor]):
        super().__init__()
        self.tables = tables  # params.scale has one entry per row; symmetric int8

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        for t in self.tables:
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
