"""Find BERT's quantizable tensors in an exported graph: encoder MatMul weights and embedding tables."""

from __future__ import annotations

import re
from dataclasses import dataclass

import onnx_ir as ir

from ..errors import BadInput

_ENCODER = re.compile(
    r"(?:^|\.)encoder\.layer\.(\d+)\.(attention\.self\.query|attention\.self\.key|attention\.self\.value|"
    r"attention\.output\.dense|intermediate\.dense|output\.dense)\.weight$"
)
_ROLE = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attention_output",
    "intermediate.dense": "intermediate",
    "output.dense": "output",
}
_EMBEDDING = re.compile(r"(?:^|\.)embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight$")
QUANTIZED_OPS = {"DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear", "MatMulNBits", "MatMulInteger",
                 "DynamicQuantizeMatMul", "QLinearMatMul", "GatherBlockQuantized"}


@dataclass(frozen=True)
class WeightSite:
    name: str
    role: str
    layer: int | None
    shape: tuple[int, ...]


def encoder_weights(graph: ir.Graph) -> list[WeightSite]:
    """Initializers matching BERT's encoder Linear names that feed a MatMul as its weight ([in, out])."""
    sites = []
    for name, value in graph.initializers.items():
        match = _ENCODER.search(name)
        if match and any(node.op_type == "MatMul" and idx == 1 for node, idx in value.uses()):
            sites.append(WeightSite(name, _ROLE[match.group(2)], int(match.group(1)), tuple(value.shape.numpy())))
    return sorted(sites, key=lambda s: (s.layer, list(_ROLE.values()).index(s.role)))


def embedding_tables(graph: ir.Graph) -> list[WeightSite]:
    """Embedding tables read by a Gather (word, position, token type)."""
    sites = []
    for name, value in graph.initializers.items():
        match = _EMBEDDING.search(name)
        if match and value.uses() and all(node.op_type == "Gather" and idx == 0 for node, idx in value.uses()):
            sites.append(WeightSite(name, match.group(1), None, tuple(value.shape.numpy())))
    return sorted(sites, key=lambda s: s.role)


def check_quantizable(model: ir.Model) -> list[WeightSite]:
    """The encoder weights, or a BadInput when the graph is already quantized or is not a BERT export."""
    quantized = sorted({n.op_type for n in model.graph.all_nodes() if n.op_type in QUANTIZED_OPS})
    if quantized or "bert2onnxq.plan" in model.metadata_props:
        what = ", ".join(quantized) or "a bert2onnxq plan"
        raise BadInput(f"the model is already quantized ({what}): convert the FP32 export instead")
    sites = encoder_weights(model.graph)
    if not sites:
        raise BadInput("no BERT encoder weights (encoder.layer.N.*.weight feeding MatMul) in this graph: "
                       "export the model with 'bert2onnxq export' first")
    return sites
