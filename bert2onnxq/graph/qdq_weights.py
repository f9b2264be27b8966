"""Pass: FP32 MatMul weights -> packed integer initializer + scale (+ zero point) + DequantizeLinear.

Rewrite rule, for each planned weight W feeding MatMul(x, W):
    MatMul(x, W)  =>  MatMul(x, DequantizeLinear(form(W_q), W_scale[, W_zero_point], axis, block_size))
W_q is stored in the smallest container holding its bits (INT2 / INT4 / INT8, unsigned when
asymmetric), packed as ONNX packs sub-byte types, so the file size shows the packing; 3/5/6/7-bit
weights (plan storage "bits") are stored exactly that many bits each in uint8 bytes, and byte ops
that ORT folds at load unpack them into that same container (`bit_packed_values`), so every form
below runs on identical values.

`form` (QuantizedTensor.form) is made of constant ops that ONNX Runtime folds at session start, so the
file keeps the planned bits while the session runs the kernel the plan chose (plan.KERNELS):

* plain: W_q [-> Cast(load_as) [- zero point]]. The CPU target casts per-tensor/per-channel INT2 and INT4 to int8
  (ORT 1.31 fuses DQ(int2) + quantized activations into a MatMulIntegerToFloat that rejects int2, and
  leaves DQ(int4) unfused: a float MatMul on weights dequantized at every run), and subtracts the zero
  point of asymmetric ones there too: signed int8 weights run ORT's u8s8 GEMM, 1.3-1.5x faster here
  than its u8u8 one (Q-BERT's asymmetric 2-4-bit rows in benchmarks/speed_table.py). The CUDA target casts
  INT2 to INT4 (CUDA has no int2 DequantizeLinear). Blocked weights need no Cast: ORT fuses
  DQ(blocked) -> MatMul into MatMulNBits.
* ocs-fold: Cast(int8) [- zero point] -> ScatterND(rows 0..K-1, channel of each appended row,
  appended rows, reduction=add): OCS's duplicated rows summed back onto their input channel
  (numerics.fold_ocs). The MatMul then reads x itself: no Gather, no extra multiply-adds.
* two-level: W_q stored [blocks, B, N] (rows padded to whole blocks) -> Cast(int8) [- zero point]
  -> Mul(multiplier [blocks, 1, N]) -> Reshape [K, N] [-> Slice] -> DequantizeLinear(channel scale,
  axis 1): a group-wise weight with two-level scales (numerics.two_level_params) multiplied out to
  exactly its int8 values at load, so that ORT runs it on its int8 GEMM instead of MatMulNBits. The
  3-D layout lets the multiplier broadcast with no full-size index tensor (ORT has no int4 Reshape).
Every chain is short and narrow on purpose: ORT keeps every folded intermediate until its constant
folding pass ends, so each full-size one costs its bytes at the load peak (int8 where the values allow it).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..numerics import bit_offsets, container, pack, pack_bits
from ..quantize.tensor import FORMS, QuantizedTensor

_DTYPES = {name: getattr(ir.DataType, name.upper()) for name in ("int8", "uint8", "int4", "uint4", "int2", "uint2")}
INT2_OPSET = 25


def integer_initializer(graph: ir.Graph, name: str, values: np.ndarray, bits: int, signed: bool) -> ir.Value:
    """Register `values` as an initializer in the container for `bits` (packed for 2/4-bit types)."""
    dtype = _DTYPES[container(bits, signed)]
    if dtype.bitwidth < 8:
        tensor = ir.PackedTensor(pack(values, dtype.bitwidth), dtype, shape=list(values.shape), name=name)
    else:
        tensor = ir.tensor(values.astype(np.int8 if signed else np.uint8), name=name)
    value = ir.Value(name=name, shape=ir.Shape(values.shape), type=ir.TensorType(dtype), const_value=tensor)
    graph.register_initializer(value)
    return value


def constant_initializer(graph: ir.Graph, name: str, array, dtype) -> ir.Value:
    """Register `array` as an initializer of numpy `dtype` (float32, int64, uint8, int8 ...)."""
    array = np.asarray(array, dtype=dtype)
    tensor = ir.tensor(array, name=name)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)
    graph.register_initializer(value)
    return value


def float_initializer(graph: ir.Graph, name: str, array) -> ir.Value:
    return constant_initializer(graph, name, array, np.float32)


def int64_initializer(graph: ir.Graph, name: str, array) -> ir.Value:
    return constant_initializer(graph, name, array, np.int64)


def uint8_initializer(graph: ir.Graph, name: str, array) -> ir.Value:
    return constant_initializer(graph, name, array, np.uint8)


def _add(nodes: list[ir.Node], op: str, inputs: list, name: str, output: str | None = None, **attributes) -> ir.Value:
    node = ir.node(op, inputs, attributes, name=name, outputs=[ir.Value(name=output or f"{name}_output")])
    nodes.append(node)
    return node.outputs[0]


def _zero_point_int8(graph: ir.Graph, nodes: list[ir.Node], base: str, values: np.ndarray, bits: int) -> ir.Value:
    zp = integer_initializer(graph, f"{base}_zero_point", values, bits, False)
    return _add(nodes, "Cast", [zp], f"{base}_zero_point_Cast", to=ir.DataType.INT8)


def shared_constant(graph: ir.Graph, name: str, array, dtype) -> ir.Value:
    """One initializer per name for constants every tensor of a kind shares (the unpack tables)."""
    return graph.initializers[name] if name in graph.initializers else constant_initializer(graph, name, array, dtype)


def bit_packed_values(graph: ir.Graph, nodes: list[ir.Node], base: str, values: np.ndarray, bits: int,
                      signed: bool, to_container: bool = True) -> ir.Value:
    """`values` stored `bits` bits each (numerics.pack_bits; signed ones offset by 2^(bits-1)) and the
    byte ops that unpack them into the container `integer_initializer` would have used: Gather the two
    bytes each value lies in, BitShift, BitwiseAnd/Or, all uint8 (narrow intermediates: ORT keeps what
    it folds), then Cast [- offset]. Constant-folded at session start into the same initializer
    (`to_container=False`: left as int8 / uint8)."""
    offset = 1 << (bits - 1) if signed else 0
    stored = uint8_initializer(graph, f"{base}_quantized", pack_bits(np.asarray(values, np.int16) + offset, bits))
    o, k = bit_offsets(bits), f"bit_unpack{bits}"
    table = {"chunks": ([-1, bits], np.int64), "lo": (o["lo"], np.int64), "hi": (o["hi"], np.int64),
             "shift": (o["shift"], np.uint8), "up": (o["up"], np.uint8),
             "straddles": (np.where(o["straddles"], 0xFF, 0), np.uint8), "mask": ((1 << bits) - 1, np.uint8),
             "flat": ([-1], np.int64), "start": ([0], np.int64), "offset": (offset, np.int8)}
    c = {name: shared_constant(graph, f"{k}_{name}", array, dtype) for name, (array, dtype) in table.items()}
    chunks = _add(nodes, "Reshape", [stored, c["chunks"]], f"{base}_unpack_Reshape")
    low = _add(nodes, "Gather", [chunks, c["lo"]], f"{base}_unpack_lo_Gather", axis=1)
    low = _add(nodes, "BitShift", [low, c["shift"]], f"{base}_unpack_down", direction="RIGHT")
    high = _add(nodes, "Gather", [chunks, c["hi"]], f"{base}_unpack_hi_Gather", axis=1)
    high = _add(nodes, "BitShift", [high, c["up"]], f"{base}_unpack_up", direction="LEFT")
    high = _add(nodes, "BitwiseAnd", [high, c["straddles"]], f"{base}_unpack_high")
    v = _add(nodes, "BitwiseOr", [low, high], f"{base}_unpack_Or")
    v = _add(nodes, "BitwiseAnd", [v, c["mask"]], f"{base}_unpack_mask_And")
    v = _add(nodes, "Reshape", [v, c["flat"]], f"{base}_unpack_flatten")
    v = _add(nodes, "Slice", [v, c["start"], int64_initializer(graph, f"{base}_unpack_count", [values.size])],
             f"{base}_unpack_Slice")
    v = _add(nodes, "Reshape", [v, int64_initializer(graph, f"{base}_unpack_shape", list(values.shape))], f"{base}_unpack_values")
    if signed:
        v = _add(nodes, "Cast", [v], f"{base}_unpack_int8", to=ir.DataType.INT8)
        v = _add(nodes, "Sub", [v, c["offset"]], f"{base}_unpack_signed")
    dtype = _DTYPES[container(bits, signed)]
    if to_container and dtype.bitwidth < 8:
        v = _add(nodes, "Cast", [v], f"{base}_unpack_container", f"{base}_unpacked", to=dtype)
    return v


def dequantize_nodes(graph: ir.Graph, t: QuantizedTensor) -> list[ir.Node]:
    """The nodes from `t`'s new quantized initializer to the float weight; the last one is the
    DequantizeLinear whose output, `<name>_dequantized`, the MatMul reads (module docstring)."""
    base, params = t.name, t.params
    if t.form not in FORMS:
        raise ValueError(f"unknown form {t.form!r}")
    nodes: list[ir.Node] = []
    if t.form == "two-level":
        return two_level_nodes(graph, nodes, t)
    if t.bit_packed:
        q = bit_packed_values(graph, nodes, base, t.values, params.bits, params.symmetric)
    else:
        q = integer_initializer(graph, f"{base}_quantized", t.values, params.bits, params.symmetric)
    zp_values = None if params.zero_point is None else np.asarray(params.zero_point)
    attributes = {} if params.axis is None else {"axis": params.axis}
    if t.form == "ocs-fold":
        # int8 all along: a wider type would hold 4x the weight's bytes per node while ORT folds
        q = _add(nodes, "Cast", [q], f"{base}_Cast", f"{base}_int8", to=ir.DataType.INT8)
        if zp_values is not None:
            q = _add(nodes, "Sub", [q, _zero_point_int8(graph, nodes, base, zp_values, params.bits)], f"{base}_Sub")
        k = int(t.gather_index.max()) + 1
        start, end = int64_initializer(graph, f"{base}_ocs_start", [0]), int64_initializer(graph, f"{base}_ocs_k", [k])
        stop = int64_initializer(graph, f"{base}_ocs_end", [t.values.shape[0]])
        rows = _add(nodes, "Slice", [q, start, end], f"{base}_ocs_rows")
        split = _add(nodes, "Slice", [q, end, stop], f"{base}_ocs_split_rows")
        channels = int64_initializer(graph, f"{base}_ocs_channels", np.asarray(t.gather_index[k:])[:, None])
        q = _add(nodes, "ScatterND", [rows, channels, split], f"{base}_ocs_fold", f"{base}_folded_int8", reduction="add")
        inputs = [q, float_initializer(graph, f"{base}_scale", params.scale)]
    elif t.load_as == "int8" and zp_values is not None:
        # sub-byte asymmetric: q - zero point in int8 at load (|q - zp| <= 15), so the DequantizeLinear
        # has signed weights and no zero point and ORT runs its u8s8 int8 GEMM, not the slower u8u8 one
        q = _add(nodes, "Cast", [q], f"{base}_Cast", f"{base}_int8", to=ir.DataType.INT8)
        q = _add(nodes, "Sub", [q, _zero_point_int8(graph, nodes, base, zp_values, params.bits)], f"{base}_Sub")
        inputs = [q, float_initializer(graph, f"{base}_scale", params.scale)]
    else:
        zp_bits = params.bits
        if t.load_as is not None:
            to = _DTYPES[t.load_as if params.symmetric else f"u{t.load_as}"]
            q = _add(nodes, "Cast", [q], f"{base}_Cast", f"{base}_{t.load_as}", to=to)
            zp_bits = to.bitwidth
        inputs = [q, float_initializer(graph, f"{base}_scale", params.scale)]
        if zp_values is not None:  # same container type as the values (ONNX requires it)
            inputs.append(integer_initializer(graph, f"{base}_zero_point", zp_values, zp_bits, params.symmetric))
        if params.block_size:
            attributes["block_size"] = params.block_size
    dq = ir.node("DequantizeLinear", inputs, attributes, name=f"{base}_DequantizeLinear",
                 outputs=[ir.Value(name=f"{base}_dequantized")])
    return [*nodes, dq]


def two_level_nodes(graph: ir.Graph, nodes: list[ir.Node], t: QuantizedTensor) -> list[ir.Node]:
    """The two-level form (module docstring): int8 m * (q - z) multiplied out at load, per-channel DQ."""
    base, params = t.name, t.params
    k, n = t.values.shape
    b = params.block_size
    g = -(-k // b)
    pad = np.zeros((g * b - k, n), t.values.dtype)
    if params.zero_point is not None:  # padded rows hold their block's zero point: zero after the Sub
        pad[:] = np.asarray(params.zero_point)[-1]
    values = np.concatenate([t.values, pad]).reshape(g, b, n)
    if t.bit_packed:
        q = bit_packed_values(graph, nodes, base, values, params.bits, params.symmetric, to_container=False)
    else:
        q = integer_initializer(graph, f"{base}_quantized", values, params.bits, params.symmetric)
    q = _add(nodes, "Cast", [q], f"{base}_Cast", f"{base}_int8", to=ir.DataType.INT8)
    if params.zero_point is not None:
        zp = constant_initializer(graph, f"{base}_zero_point", np.asarray(params.zero_point)[:, None, :], np.int8)
        q = _add(nodes, "Sub", [q, zp], f"{base}_Sub")
    m = constant_initializer(graph, f"{base}_multiplier", np.asarray(params.multiplier)[:, None, :], np.int8)
    q = _add(nodes, "Mul", [q, m], f"{base}_multiply", f"{base}_multiplied_int8")
    q = _add(nodes, "Reshape", [q, int64_initializer(graph, f"{base}_rows_shape", [g * b, n])], f"{base}_rows")
    if g * b != k:
        q = _add(nodes, "Slice", [q, int64_initializer(graph, f"{base}_row_start", [0]),
                                  int64_initializer(graph, f"{base}_k", [k])], f"{base}_Slice")
    dq = ir.node("DequantizeLinear", [q, float_initializer(graph, f"{base}_channel_scale", params.channel_scale)],
                 {"axis": 1}, name=f"{base}_DequantizeLinear", outputs=[ir.Value(name=f"{base}_dequantized")])
    return [*nodes, dq]


class QuantizeWeightsPass(ir.passes.InPlacePass):
    """Replace each planned MatMul weight by its dequantized integer form (see module docstring)."""

    def __init__(self, tensors: list[QuantizedTensor]):
        super().__init__()
        self.tensors = tensors

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        for t in self.tensors:
            old = graph.initializers[t.name]
            nodes = dequantize_nodes(graph, t)
            first_use = min((graph.index(n) for n, _ in old.uses()), default=0)
            graph.insert_before(graph[first_use], nodes)
            old.replace_all_uses_with(nodes[-1].outputs[0])
            graph.initializers.pop(t.name)
        if any(t.params.bits <= 2 for t in self.tensors):
            raise_opset(model, INT2_OPSET)
        return ir.passes.PassResult(model, modified=bool(self.tensors))


def raise_opset(model: ir.Model, version: int) -> None:
    """INT2 DequantizeLinear exists from opset 25; the ops BERT uses are unchanged 21 -> 25."""
    if model.opset_imports.get("", 0) < version:
        model.opset_imports[""] = version
