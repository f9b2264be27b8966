"""What is inside an ONNX BERT: per weight (layer, role) its bits, container, granularity, group size,
OCS splits and kernel; sizes by part, actual vs ideal; the stored plan; and what ONNX Runtime makes
of the graph after its session optimizations (fusions, kernels, dequantization left at run time).

Works on any BERT export: ours (the plan in the metadata says what was decided; the graph says what
was written), ONNX Runtime's quantizers' outputs (`<name>_quantized` / `_scale` / `_zero_point`) and
plain FP32 files.
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from .errors import BadInput
from .onnx_io import load_onnx, model_metadata
from .plan import QuantPlan

_ENCODER = re.compile(r"encoder\.layer\.(\d+)\.(attention\.self\.query|attention\.self\.key|attention\.self\.value|"
                      r"attention\.output\.dense|intermediate\.dense|output\.dense)\.weight$")
_ROLE = {"attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
         "attention.output.dense": "attention_output", "intermediate.dense": "intermediate", "output.dense": "output"}
_EMBEDDING = re.compile(r"embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight$")
# Initializers a quantized tensor is made of, by suffix (ours and onnxruntime.quantization's).
_SUFFIXES = ("_quantized", "_zero_point", "_multiplier", "_channel_scale", "_rows_shape", "_scale", "_ocs_index",
             "_ocs_channels", "_ocs_start", "_ocs_k", "_ocs_end", "_unsqueeze_axes", "_row_start", "_row_step",
             "_block_size", "_k")
_INTEGER = {"INT8": 8, "UINT8": 8, "INT4": 4, "UINT4": 4, "INT2": 2, "UINT2": 2}
# Ops worth naming in the optimized graph: transformer fusions and the kernels linear layers run on.
FUSIONS = ("Attention", "MultiHeadAttention", "QAttention", "EmbedLayerNormalization", "QEmbedLayerNormalization",
           "SkipLayerNormalization", "LayerNormalization", "BiasGelu", "FastGelu", "Gelu", "FusedMatMul")
LINEAR_KERNELS = {"MatMulIntegerToFloat": "int8", "DynamicQuantizeMatMul": "int8", "MatMulInteger": "int8",
                  "QLinearMatMul": "int8", "QAttention": "int8", "MatMulNBits": "nbits", "MatMul": "fp32",
                  "FusedMatMul": "fp32", "Gemm": "fp32", "FusedGemm": "fp32", "Attention": "fp32"}


def base_name(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _nbytes(init) -> int:
    from onnx import numpy_helper

    return len(init.raw_data) if init.HasField("raw_data") else int(numpy_helper.to_array(init).nbytes)


def _part(name: str) -> str:
    if "embeddings." in name:
        return "embeddings"
    if "encoder.layer." in name:
        return "encoder"
    return "rest"


def inspect_model(path: Path, runtime: bool = True, device: str = "cpu", config: dict | None = None) -> dict:
    """Everything `bert2onnxq inspect` prints, as a dict (module docstring)."""
    import onnx

    path = Path(path)
    model = load_onnx(path)
    meta = {p.key.removeprefix("bert2onnxq."): p.value for p in model.metadata_props if p.key.startswith("bert2onnxq.")}
    plan = QuantPlan.from_json(meta["plan"]) if "plan" in meta else None
    planned = {t.name: t for t in (plan.weights + plan.embeddings)} if plan else {}
    inits = {i.name: i for i in model.graph.initializer}
    groups: dict[str, list] = defaultdict(list)
    for name, init in inits.items():
        groups[base_name(name)].append(init)
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    rows = []
    for base, members in groups.items():
        enc, emb = _ENCODER.search(base), _EMBEDDING.search(base)
        if not (enc or emb or base in planned):
            continue
        main = inits.get(f"{base}_quantized") or inits.get(base) or members[0]
        dtype = onnx.TensorProto.DataType.Name(main.data_type)
        t = planned.get(base)
        row = {"name": base, "part": "embeddings" if emb else "encoder",
               "layer": int(enc.group(1)) if enc else None,
               "role": _ROLE[enc.group(2)] if enc else (emb.group(1) if emb else t.role if t else None),
               "container": f"{t.bits}-bit packed" if t and t.storage == "bits" else dtype.lower(),
               "shape": list(t.shape) if t and (t.storage == "bits" or t.kernel == "int8-two-level") else list(main.dims),
               "bits": t.bits if t else _INTEGER.get(dtype, 32),
               "granularity": t.granularity if t else _granularity(base, inits, dq, main),
               "group_size": t.group_size if t else _block_size(dq.get(f"{base}_dequantized")),
               "ocs_splits": len(t.ocs_channels) if t else 0, "ocs_form": (t.ocs_form or None) if t and t.ocs_channels else None,
               "kernel": (t.kernel or None) if t else None,
               "rounding": (plan.rounding.get("method", "nearest") if t.layer is not None else "nearest") if t else None,
               "out_err_nearest": t.stats.get("out_err_nearest") if t else None,
               "out_err": t.stats.get("out_err") if t else None,
               "grid": t.stats.get("grid") if t else None,  # gptq range search: which grid won (method | searched)
               "bytes": sum(_nbytes(i) for i in members)}
        row["ideal_bytes"] = t.ideal_bytes() if t else row["bytes"]
        rows.append(row)
    rows.sort(key=lambda r: (r["part"] != "embeddings", r["layer"] if r["layer"] is not None else -1, r["role"] or ""))
    sizes = _sizes(path, inits, planned)
    result = {"path": str(path), "bytes": sizes["file_bytes"], "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
              "metadata": {k: v for k, v in meta.items() if k not in ("plan", "plan_summary")},
              "plan_summary": meta.get("plan_summary"), "weights": rows, "sizes": sizes}
    if plan:
        result["plan"] = {"method": plan.method, "target": plan.target, "activations": {
            k: v for k, v in vars(plan.activations).items() if k != "ranges"}, "skip": plan.skip,
            "ocs": plan.ocs_overhead(), "kernels": dict(Counter(t.kernel or "(default)" for t in plan.weights)),
            "rounding": plan.rounding or {"method": "nearest"}}
    if runtime:
        result["runtime"] = runtime_graph(path, device, config)
    return result


def _granularity(base: str, inits: dict, dq: dict, main) -> str:
    if main.data_type == 1:  # FLOAT
        return "-"
    node = dq.get(f"{base}_dequantized")
    if _block_size(node):
        return "group"
    scale = inits.get(f"{base}_scale")
    if scale is None:
        return "?"
    return "tensor" if int(np.prod(scale.dims or [1])) == 1 else "channel"


def _block_size(node) -> int | None:
    if node is None:
        return None
    return next((a.i for a in node.attribute if a.name == "block_size" and a.i), None)


def _sizes(path: Path, inits: dict, planned: dict) -> dict:
    """Bytes per part (embeddings / encoder / rest): actual initializer bytes and the ideal (planned
    tensors: bits x params / 8 + scales; everything else counts as it is)."""
    actual, ideal = Counter(), Counter()
    for name, init in inits.items():
        part = _part(base_name(name))
        actual[part] += _nbytes(init)
    for part in ("embeddings", "encoder", "rest"):
        ideal[part] = actual[part]
    for t in planned.values():
        members = [i for n, i in inits.items() if base_name(n) == t.name]
        part = _part(t.name)
        ideal[part] += t.ideal_bytes() - sum(_nbytes(i) for i in members)
    file_bytes = path.stat().st_size
    data = path.with_name(path.name + ".data")
    if data.is_file():
        file_bytes += data.stat().st_size
    parts = {p: {"bytes": int(actual[p]), "ideal_bytes": float(ideal[p]),
                 "vs_ideal": actual[p] / ideal[p] if ideal[p] else None} for p in ("embeddings", "encoder", "rest")}
    tensors = sum(actual.values())
    return {"file_bytes": file_bytes, "parts": parts, "initializer_bytes": int(tensors),
            "graph_bytes": int(file_bytes - tensors), "ideal_bytes": float(sum(ideal.values()) + file_bytes - tensors),
            "file_vs_ideal": file_bytes / (sum(ideal.values()) + file_bytes - tensors)}


def runtime_graph(path: Path, device: str = "cpu", config: dict | None = None) -> dict:
    """Op counts of the graph ONNX Runtime runs after ORT_ENABLE_ALL optimizations, and which kernel
    each linear layer (MatMul-like node with a constant weight) ends up on."""
    import onnx

    from .runtime import make_runner

    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        runner = make_runner(path, device, 1, config, optimized_path=optimized)
        describe = runner.describe()
        del runner
        model = onnx.load(str(optimized))
    constants = {i.name for i in model.graph.initializer}
    ops = Counter(n.op_type for n in model.graph.node)
    linear, nbits = Counter(), set()
    for node in model.graph.node:
        kind = LINEAR_KERNELS.get(node.op_type)
        if kind is None:
            continue
        weight_constant = len(node.input) > 1 and node.input[1] in constants
        if node.op_type in ("MatMul", "FusedMatMul") and not weight_constant:
            continue  # activation x activation (attention scores): not a linear layer
        linear[kind] += 1
        if node.op_type == "MatMulNBits":
            attrs = {a.name: a.i for a in node.attribute}
            nbits.add((attrs.get("bits"), attrs.get("block_size"), attrs.get("accuracy_level", 0)))
    float_matmul_on_dq = sum(1 for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
                             and any(i.endswith("_dequantized") for i in n.input))
    return {"providers": describe["providers"], "session": describe, "ops": dict(ops.most_common()),
            "fusions": {op: ops[op] for op in FUSIONS if ops[op]},
            "linear_kernels": dict(linear),
            "matmulnbits": [{"bits": b, "block_size": bs, "accuracy_level": lvl} for b, bs, lvl in sorted(nbits)],
            "dequantize_linear_at_run_time": ops["DequantizeLinear"], "float_matmul_on_dequantized_weights": float_matmul_on_dq,
            "ocs_gathers": sum(1 for n in model.graph.node if n.op_type == "Gather" and n.name.endswith("_ocs_gather")),
            "dynamic_quantize_linear": ops["DynamicQuantizeLinear"],
            "per_token_quantizers": sum(1 for n in model.graph.node if n.name.endswith("_per_token_QuantizeLinear"))}


def stored_plan(path: Path) -> str:
    """The plan in the file's metadata, as the JSON --plan-out writes."""
    meta = model_metadata(path)
    if "plan" not in meta:
        raise BadInput(f"'{path}' holds no bert2onnxq plan (an FP32 export, or written by another tool): "
                       "only files from bert2onnxq convert have one")
    return QuantPlan.from_json(meta["plan"]).to_json()


def check_inspectable(path: Path) -> None:
    if Path(path).suffix != ".onnx":
        raise BadInput(f"'{path}' is not an .onnx file: pass a model written by export or convert")
