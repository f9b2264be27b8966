"""QuantPlan: the decision of what to quantize and how; JSON round trip and checks against a model.

Methods (LQ, ACIQ, ...) decide a plan; graph passes only apply it. A plan holds decisions and
statistics, not scale arrays: scales are recomputed from the weights by `numerics`, so a saved
plan re-applied to the same model gives the same file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import BadInput

PLAN_VERSION = 1
TARGETS = ("cpu", "cuda")
ACT_MODES = ("dynamic", "static", "per-token")
INT8_GEMM_KERNELS = ("int8", "int8-two-level")  # the kernels whose activations the graph quantizes
# How ONNX Runtime runs a weight (decided per tensor for the plan's target):
KERNELS = {
    "int8": "int8 GEMM on int8 weights and 8-bit activations (ORT MatMulIntegerToFloat / DynamicQuantizeMatMul)",
    "int8-two-level": "group-wise weight with two-level scales (float per output channel x integer per group), "
                      "multiplied out exactly to int8 at session load, then int8 GEMM",
    "matmulnbits": "DequantizeLinear -> MatMul fused by ORT into MatMulNBits (block-wise n-bit weights)",
}
OCS_FORMS = {
    "fold": "split rows summed back in int8 at session load (no Gather, no extra multiply-adds)",
    "gather": "Concat(x, Gather(x, split channels)) feeds the expanded weight",
}
WEIGHT_ROLES = ("query", "key", "value", "attention_output", "intermediate", "output")
EMBEDDING_ROLES = ("word_embeddings", "position_embeddings", "token_type_embeddings")


def split_activation_name(name: str) -> str:
    """The graph name of activation `name` after OCS split its channels (what gets quantized, and
    the key of its static range)."""
    return f"{name}_ocs_split"


@dataclass
class TensorPlan:
    """One quantized tensor: an encoder MatMul weight ([in, out]) or an embedding table ([rows, hidden])."""

    name: str
    role: str
    layer: int | None
    shape: tuple[int, ...]
    bits: int
    symmetric: bool = True
    granularity: str = "channel"  # tensor | channel | group | neuron-group (weights); embeddings are per row
    group_size: int | None = None
    clip: str = "none"  # none | aciq-laplace | aciq-gauss
    alpha_ratio: float | None = None  # ACIQ's alpha in units of b (Laplace) or sigma (Gaussian)
    ocs_ratio: float | None = None  # OCS: split ceil(ratio * K) input channels
    ocs_grid_aware: bool = False
    ocs_channels: list[int] = field(default_factory=list)  # original input channel of each appended row
    ocs_form: str = ""  # OCS only: fold | gather (see OCS_FORMS); "" = decide when applied
    kernel: str = ""  # see KERNELS; "" = the target's default, decided when applied
    storage: str = ""  # "bits": bit-packed bytes, unpacked at load (3/5/6/7 bits); "" = the ONNX container
    stats: dict = field(default_factory=dict)  # scale statistics, clipped fraction, weight MSE
    groups: int | None = None  # neuron-group: ranges per matrix (runs of output columns)
    heads: int | None = None  # neuron-group on query/key/value: runs never straddle these attention heads

    @property
    def num_params(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def ideal_bytes(self, scale_bytes: int = 4, container: bool = False, rows_added: int | None = None) -> float:
        """Bits x params / 8 + scales (+ zero points, `bits` each), OCS rows included (QuantPlan.ideal_bytes).

        rows_added: the OCS rows stored (default: this weight's own splits; QuantPlan adds its activation's).
        """
        scales = self.stats.get("num_scales", 1)
        stored = self.bits if self.storage == "bits" else 2 if self.bits <= 2 else 4 if self.bits <= 4 else 8
        bits = stored if container else self.bits
        rows = len(self.ocs_channels) if rows_added is None else rows_added
        params = self.num_params + rows * self.shape[1]
        return (params + (0 if self.symmetric else scales)) * bits / 8 + scales * scale_bytes


@dataclass
class ActivationPlan:
    """8-bit activations at every quantized MatMul's input: dynamic (per batch), static (calibrated) or
    per token (a symmetric int8 scale per row, on the int8 GEMM)."""

    bits: int | None = 8  # None: activations stay FP32
    mode: str = "dynamic"  # dynamic (per batch) | static | per-token (int8 GEMM weights; ACT_MODES)
    calibration: str | None = None  # static only: minmax | aciq
    samples: int | None = None
    ranges: dict[str, list[float]] = field(default_factory=dict)  # static: quantized tensor -> [lo, hi]
    # OCS on activations: split ceil(ratio * K) channels of each MatMul input, chosen on calibration data.
    # splits: activation name -> {"split_rows": rows halved in order (replayable), "weights": its readers}
    ocs_ratio: float | None = None
    splits: dict[str, dict] = field(default_factory=dict)
    # Where the quantizers live: QDQ nodes in front of per-tensor/per-channel weights; inside
    # ONNX Runtime's MatMulNBits (int8 activations per block, accuracy level 4) for group-wise ones.
    note: str = "QDQ before per-tensor/per-channel weights; MatMulNBits int8 activations for group-wise weights"


@dataclass
class QuantPlan:
    method: str
    weights: list[TensorPlan]
    embeddings: list[TensorPlan] = field(default_factory=list)
    activations: ActivationPlan = field(default_factory=ActivationPlan)
    skip: list[str] = field(default_factory=list)
    source: dict = field(default_factory=dict)  # the FP32 model it was made for (head, layers, hidden)
    target: str = "cpu"  # execution provider the graph forms were chosen for (TARGETS)
    analysis: dict = field(default_factory=dict)  # what the method measured to decide (Q-BERT: Hessian, bits)
    # how the quantize stage rounds onto the grid: {} = nearest; gptq: {"method", "damp", "block", "act_order",
    # "samples", then what calibrated it: "task", "data", "tokens"}
    rounding: dict = field(default_factory=dict)
    # quantization-aware fine-tuning (quantize/finetune.py): the recipe, its data and what it reached; {} = none
    finetune: dict = field(default_factory=dict)
    version: int = PLAN_VERSION

    # --- JSON ---
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> "QuantPlan":
        try:
            raw = json.loads(text)
            if raw.get("version") != PLAN_VERSION:
                raise BadInput(f"plan version {raw.get('version')} is not supported (expected {PLAN_VERSION}): recreate it with --plan-out")
            return cls(
                method=raw["method"],
                weights=[_tensor(t) for t in raw["weights"]],
                embeddings=[_tensor(t) for t in raw.get("embeddings", [])],
                activations=ActivationPlan(**raw.get("activations", {})),
                skip=list(raw.get("skip", [])),
                source=dict(raw.get("source", {})),
                target=raw.get("target", "cpu"),
                analysis=dict(raw.get("analysis", {})),
                rounding=dict(raw.get("rounding", {})),
                finetune=dict(raw.get("finetune", {})),
            )
        except BadInput:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BadInput(f"not a bert2onnxq plan ({type(exc).__name__}: {exc}): write one with 'convert --plan-out'") from None

    @classmethod
    def load(cls, path: Path) -> "QuantPlan":
        path = Path(path)
        if not path.is_file():
            raise BadInput(f"plan file '{path}' does not exist")
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError) as exc:
            raise BadInput(f"plan file '{path}' is not a readable JSON text ({type(exc).__name__}): write one with "
                           "'convert --plan-out'") from None
        return cls.from_json(text)

    # --- summaries ---
    def ideal_bytes(self, scale_bytes: int = 4, container: bool = False) -> float:
        """Bits x params / 8 + scales (+ zero points) of every quantized tensor (OCS rows included).

        `container=True` counts the bits as stored: the ONNX container (3 -> 4, 5..7 -> 8; ONNX has no
        INT3), or the nominal bits for bit-packed tensors (storage "bits"); the nominal figure is the paper's.
        """
        return sum(t.ideal_bytes(scale_bytes, container, self.rows_added(t)) for t in self.weights + self.embeddings)

    def activation_split_rows(self, weight: str) -> list[int]:
        """The OCS split rows of the activation that `weight`'s MatMul reads ([] when not split)."""
        for split in self.activations.splits.values():
            if weight in split["weights"]:
                return split["split_rows"]
        return []

    def rows_added(self, t: TensorPlan) -> int:
        """Input channels OCS added to weight `t`: its own splits plus those of its activation."""
        return len(t.ocs_channels) + len(self.activation_split_rows(t.name))

    def ocs_overhead(self) -> dict:
        """Channels gained, extra weight parameters and extra multiply-adds per token of OCS. Weight rows
        folded back at session start (ocs_form "fold") are stored but cost no multiply-adds; activation
        splits always do (x' really has the extra channels)."""
        extra_rows = sum(self.rows_added(t) for t in self.weights)
        extra = sum(self.rows_added(t) * t.shape[1] for t in self.weights)
        macs = sum((self.rows_added(t) - (len(t.ocs_channels) if t.ocs_form == "fold" else 0)) * t.shape[1]
                   for t in self.weights)
        total = sum(t.num_params for t in self.weights)
        return {"channels_added": extra_rows, "extra_params": extra, "extra_fraction": extra / total if total else 0.0,
                "extra_macs_per_token": macs, "extra_macs_fraction": macs / total if total else 0.0,
                "activation_channels_added": sum(len(s["split_rows"]) for s in self.activations.splits.values()),
                "folded_tensors": sum(1 for t in self.weights if t.ocs_form == "fold")}

    def summary(self) -> str:
        bits = sorted({t.bits for t in self.weights})
        grans = sorted({t.granularity for t in self.weights})
        act = "fp32" if self.activations.bits is None else f"{self.activations.bits}-bit {self.activations.mode}"
        emb = sorted({t.bits for t in self.embeddings}) or ["fp32"]
        ocs = self.ocs_overhead()
        act_split = f"; {ocs['activation_channels_added']} activation channels split" if ocs["activation_channels_added"] else ""
        split = (f", OCS +{ocs['channels_added']} weight rows (+{100 * ocs['extra_fraction']:.2f}% weights, "
                 f"+{100 * ocs['extra_macs_fraction']:.2f}% MACs{act_split})") if ocs["channels_added"] else ""
        kernels = sorted({t.kernel for t in self.weights if t.kernel})
        runs = f", {self.target} kernels {'/'.join(kernels)}" if kernels else ""
        rounding = f", {self.rounding['method']} rounding" if self.rounding.get("method", "nearest") != "nearest" else ""
        rounding += f", fine-tuned {self.finetune['steps']} steps" if self.finetune else ""
        return (f"{self.method}: {len(self.weights)} weights at {'/'.join(map(str, bits))} bits ({', '.join(grans)}){rounding}{split}, "
                f"activations {act}, embeddings {'/'.join(map(str, emb))}{runs}")


def _tensor(raw: dict) -> TensorPlan:
    known = {f.name for f in fields(TensorPlan)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"unknown tensor fields {sorted(unknown)}")
    raw = dict(raw)
    raw["shape"] = tuple(raw["shape"])
    return TensorPlan(**raw)


def check_plan_fits(plan: QuantPlan, initializers: dict[str, tuple[int, ...]]) -> None:
    """BadInput unless every tensor of the plan exists in the model with the planned shape."""
    for t in plan.weights + plan.embeddings:
        if t.name not in initializers:
            raise BadInput(f"the plan quantizes '{t.name}', which this model does not have: use a plan made for this model")
        if tuple(initializers[t.name]) != tuple(t.shape):
            raise BadInput(f"the plan expects '{t.name}' of shape {list(t.shape)} but the model has "
                           f"{list(initializers[t.name])}: use a plan made for this model")
        if not 2 <= t.bits <= 8:
            raise BadInput(f"the plan gives '{t.name}' {t.bits} bits; bits must be 2..8")


def default_kernel(t: TensorPlan, target: str, act_bits: int | None, group_kernel: str = "matmulnbits") -> str:
    """The ORT kernel a weight runs on (KERNELS). CPU with 8-bit activations: the int8 GEMM for
    per-tensor/per-channel weights; group-wise ones have no int8 GEMM in ORT and go to MatMulNBits
    (int8 activations per block) unless given two-level scales (group_kernel="int8"). Weight-only
    graphs and CUDA: DequantizeLinear -> MatMul, which ORT fuses into MatMulNBits."""
    if target == "cpu" and act_bits:
        if t.granularity != "group":
            return "int8"
        return "int8-two-level" if group_kernel == "int8" else "matmulnbits"
    return "matmulnbits"


NBITS_BLOCKS = (16, 32, 64, 128, 256)  # ORT fuses DequantizeLinear -> MatMul into MatMulNBits only at these


def nbits_block_ok(group_size: int | None) -> bool:
    """Whether ORT fuses blocks of `group_size` into MatMulNBits (else it runs float MatMuls on the DQ output)."""
    return bool(group_size) and group_size >= 16 and group_size & (group_size - 1) == 0


def check_kernels(plan: QuantPlan) -> None:
    """Fill kernels missing from older plans with the target's default; BadInput for impossible ones."""
    if plan.target not in TARGETS:
        raise BadInput(f"the plan's target '{plan.target}' is unknown: choose cpu or cuda")
    for t in plan.weights:
        if not t.kernel:
            t.kernel = default_kernel(t, plan.target, plan.activations.bits)
        if t.kernel not in KERNELS or t.ocs_form not in ("", *OCS_FORMS):
            raise BadInput(f"the plan gives '{t.name}' kernel '{t.kernel}' / OCS form '{t.ocs_form}', which bert2onnxq "
                           f"does not know: recreate the plan with --plan-out")
        int8 = t.kernel in INT8_GEMM_KERNELS
        if int8 and (plan.target != "cpu" or not plan.activations.bits):
            raise BadInput(f"the plan runs '{t.name}' on the int8 GEMM, which needs target cpu and 8-bit activations")
        if (t.kernel == "int8-two-level") != (t.granularity == "group" and int8):
            raise BadInput(f"the plan's kernel '{t.kernel}' for '{t.name}' does not fit its {t.granularity} granularity")
        if t.kernel == "matmulnbits" and t.granularity == "group" and not nbits_block_ok(t.group_size):
            raise BadInput(f"group size {t.group_size} cannot run on ONNX Runtime's MatMulNBits (its blocks are powers of "
                           f"two from 16: {', '.join(map(str, NBITS_BLOCKS))}): choose one of those, or "
                           "--group-kernel int8 (CPU with 8-bit activations; any group size)")
