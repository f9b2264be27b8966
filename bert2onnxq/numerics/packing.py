"""Sub-byte packing in ONNX's layout (first element in the lowest bits) and size accounting."""

from __future__ import annotations

import math

import numpy as np


def container_bits(bits) -> int:
    """Bits of the ONNX element type that holds `bits`-bit values: 2 -> 2, 3..4 -> 4, 5..8 -> 8."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer in 2..8, got {bits!r}")
    return 2 if bits == 2 else 4 if bits <= 4 else 8


def pack(q: np.ndarray, bits: int) -> np.ndarray:
    """Flatten q (C order) into uint8 bytes in ONNX's raw_data layout for the container of `bits`.

    2/4-bit containers hold 4/2 elements per byte, the first in the lowest bits, the tail padded with
    zeros; negative values are stored in two's complement. 8-bit returns a flat uint8 view of int8/uint8.
    """
    cb = container_bits(bits)
    flat = np.ascontiguousarray(q).reshape(-1)
    if cb == 8 and flat.dtype in (np.int8, np.uint8):
        return flat.view(np.uint8)
    if flat.dtype.kind not in "iu":
        raise ValueError(f"pack needs an integer array, got {flat.dtype}")
    wide = flat.astype(np.int64)
    # Masking would silently wrap out-of-range values; a wrapped weight is a bug upstream.
    if wide.size and (wide.min() < -(1 << (cb - 1)) or wide.max() > (1 << cb) - 1):
        raise ValueError(f"values outside the {cb}-bit container range")
    u = (wide & ((1 << cb) - 1)).astype(np.uint8)
    if cb == 8:
        return u
    per = 8 // cb
    u = np.concatenate([u, np.zeros(-u.size % per, np.uint8)]).reshape(-1, per)
    out = np.zeros(u.shape[0], np.uint8)
    for i in range(per):
        out |= u[:, i] << np.uint8(i * cb)
    return out


def unpack(packed: np.ndarray, bits: int, count: int, signed: bool) -> np.ndarray:
    """Inverse of pack: the first `count` elements, int8 (sign-extended) if signed else uint8, flat."""
    cb = container_bits(bits)
    b = np.ascontiguousarray(packed).reshape(-1).view(np.uint8)
    per = 8 // cb
    if count < 0 or count > b.size * per:
        raise ValueError(f"{b.size} bytes hold at most {b.size * per} {cb}-bit values, asked for {count}")
    if cb == 8:
        vals = b[:count]
    else:
        shifts = (np.arange(per, dtype=np.uint8) * cb).astype(np.uint8)
        vals = ((b[:, None] >> shifts) & np.uint8((1 << cb) - 1)).reshape(-1)[:count]
    if not signed:
        return vals.astype(np.uint8)
    v = vals.astype(np.int16)
    return np.where(v >= 1 << (cb - 1), v - (1 << cb), v).astype(np.int8)


def container_bytes(count: int, bits: int) -> int:
    """Bytes the packed tensor of `count` elements really takes (container width, padded tail)."""
    return math.ceil(count * container_bits(bits) / 8)


def ideal_bytes(num_params, bits, num_scales, scale_bytes=4, zero_point_bits=0) -> float:
    """Size if weights took exactly `bits` each (no container rounding), plus scales and zero points."""
    return num_params * bits / 8 + num_scales * (scale_bytes + zero_point_bits / 8)


# Bit packing: ONNX has no INT3/INT5/INT6/INT7, so b-bit values are stored b bits each in uint8 bytes
# and unpacked by the graph (graph/qdq_weights.py) with byte ops that ONNX Runtime folds at load.
BIT_PACKED = (3, 5, 6, 7)  # widths whose ONNX container wastes bits


def bit_offsets(bits: int) -> dict[str, np.ndarray]:
    """Where each of the 8 values of a `bits`-byte chunk lies: the byte holding its lowest bit (`lo`),
    the shift down to it (`shift`), and, for values crossing into the next byte (`straddles`), the
    shift up (`up`) that places the next byte's bits above them."""
    offset = np.arange(8) * bits
    lo, shift = offset // 8, offset % 8
    straddles = shift + bits > 8
    return {"lo": lo, "hi": np.minimum(lo + 1, bits - 1), "shift": shift, "straddles": straddles,
            "up": np.where(straddles, 8 - shift, 0)}


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Flatten unsigned `values` (0 .. 2^bits - 1, C order) into ceil(n/8)·bits bytes: each run of 8 values
    is one little-endian integer of `bits` bytes, value j in bits [j·bits, (j+1)·bits); the tail is zeros."""
    flat = np.ascontiguousarray(values).reshape(-1)
    if flat.dtype.kind not in "iu" or (flat.size and (flat.min() < 0 or flat.max() >= 1 << bits)):
        raise ValueError(f"pack_bits needs integers in 0..{(1 << bits) - 1}")
    chunks = np.zeros(-(-flat.size // 8) * 8, np.uint64)
    chunks[:flat.size] = flat
    chunks = chunks.reshape(-1, 8)
    word = np.zeros(chunks.shape[0], np.uint64)
    for j in range(8):
        word |= chunks[:, j] << np.uint64(j * bits)
    out = np.stack([(word >> np.uint64(8 * i)) & np.uint64(0xFF) for i in range(bits)], axis=1)
    return out.astype(np.uint8).reshape(-1)


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of pack_bits, by the same byte operations the graph uses: the first `count` values, uint8."""
    b = np.ascontiguousarray(packed).reshape(-1, bits).astype(np.uint8)
    o = bit_offsets(bits)
    low = b[:, o["lo"]] >> o["shift"].astype(np.uint8)
    high = (b[:, o["hi"]].astype(np.uint16) << o["up"].astype(np.uint16)).astype(np.uint8)
    high &= np.where(o["straddles"], 0xFF, 0).astype(np.uint8)
    return ((low | high) & np.uint8((1 << bits) - 1)).reshape(-1)[:count]
