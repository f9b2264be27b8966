"""Apply: write a plan and its integers into the graph with the passes, in one PassManager."""

from __future__ import annotations

import onnx_ir as ir

from .. import numerics
from ..plan import INT8_GEMM_KERNELS, QuantPlan
from ..quantize.tensor import QuantizedTensor
from .activations import PerTokenActivationsPass, QuantizeActivationsPass
from .embeddings import QuantizeEmbeddingsPass
from .ocs import SplitActivationsPass, SplitChannelsPass
from .qdq_weights import QuantizeWeightsPass


def apply_plan(model: ir.Model, plan: QuantPlan, weights: list[QuantizedTensor], tables: list[QuantizedTensor]) -> ir.Model:
    """Weights, their OCS gathers, activation splits, embeddings, then activation quantizers; the plan
    goes into the metadata. In place."""
    splits = {f"{t.name}_dequantized": (t.name, t.gather_index) for t in weights
              if t.gather_index is not None and t.form != "ocs-fold"}
    passes = [QuantizeWeightsPass(weights), SplitChannelsPass(splits), split_activations_pass(plan),
              QuantizeEmbeddingsPass(tables)]
    if plan.activations.bits:
        # MatMulNBits weights quantize activations to int8 themselves (session.qdq_matmulnbits_accuracy_level=4,
        # ORT's default); explicit activation QDQ in front of a blocked weight makes ORT 1.31 build a
        # MatMulIntegerToFloat that cannot run. The int8 GEMM kernels get the activation quantizers.
        int8 = [t for t in plan.weights if t.kernel in INT8_GEMM_KERNELS]
        dequantized = [f"{t.name}_dequantized" for t in int8]
        if plan.activations.mode == "per-token":
            passes.append(PerTokenActivationsPass({name: activation_width(plan, t) for name, t in zip(dequantized, int8)}))
        else:
            ranges = plan.activations.ranges if plan.activations.mode == "static" else None
            passes.append(QuantizeActivationsPass(dequantized, ranges))
    ir.passes.PassManager(passes)(model)
    model.metadata_props["bert2onnxq.plan"] = plan.to_json()
    model.metadata_props["bert2onnxq.plan_summary"] = plan.summary()
    return model


def apply_splits_fp32(model: ir.Model, plan: QuantPlan, splits: dict, expanded: dict) -> ir.Model:
    """Only OCS channel splitting (weights and activations), in FP32: must equal the FP32 model."""
    ir.passes.PassManager([SplitChannelsPass(splits, expanded), split_activations_pass(plan, suffix="")])(model)
    return model


def activation_width(plan: QuantPlan, t) -> int:
    """Inputs of the activation weight t's MatMul reads: its rows, more after an OCS activation split."""
    rows = plan.activation_split_rows(t.name)
    return len(numerics.ActivationSplit.from_rows(t.shape[0], rows).index) if rows else t.shape[0]


def split_activations_pass(plan: QuantPlan, suffix: str = "_dequantized") -> SplitActivationsPass:
    splits = {}
    for name, split in plan.activations.splits.items():
        k = next(t.shape[0] for t in plan.weights if t.name in split["weights"])
        s = numerics.ActivationSplit.from_rows(k, split["split_rows"])
        splits[name] = (s.index, s.factor, {f"{w}{suffix}" for w in split["weights"]})
    return SplitActivationsPass(splits)
