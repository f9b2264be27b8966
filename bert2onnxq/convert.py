"""convert = (export) + analyse + decide a QuantPlan + compute integers with numerics + apply passes."""

from __future__ import annotations

import fnmatch
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from . import numerics
from .errors import BadInput
from .graph.activations import QuantizeActivationsPass
from .graph.embeddings import QuantizeEmbeddingsPass
from .graph.locate import WeightSite, check_quantizable, embedding_tables
from .graph.ocs import SplitActivationsPass, SplitChannelsPass, split_activation_name
from .graph.qdq_weights import QuantizedTensor, QuantizeWeightsPass
from .onnx_io import atomic_output, load_onnx, save_onnx
from .plan import KERNELS, OCS_FORMS, TARGETS, ActivationPlan, QuantPlan, TensorPlan, check_plan_fits

if TYPE_CHECKING:
    from .qbert import QBertOptions

METHODS = ("lq", "aciq", "ocs", "qbert")
GROUP_KERNELS = ("matmulnbits", "int8")
DEFAULT_SKIP = ()  # pooler and classifier are never encoder weights, so they stay FP32 anyway


@dataclass(frozen=True)
class ConvertOptions:
    """What the user asked for; `decide_plan` turns it into a per-tensor QuantPlan."""

    method: str = "lq"
    bits: int = 8
    granularity: str = "channel"
    group_size: int = 128
    groups: int = 128  # neuron-group: ranges per matrix (Q-BERT's 128)
    symmetric: bool | None = None  # None: symmetric at 5+ bits, asymmetric at 2-4 (see `grid_is_symmetric`)
    distribution: str = "laplace"  # ACIQ prior
    clip: str = "none"  # OCS only: none | aciq (LQ and ACIQ imply their own)
    ocs_ratio: float = 0.02
    ocs_grid_aware: bool = False
    ocs_activations: bool = False  # also split outlier channels of MatMul inputs (needs calibration data)
    act_bits: int | None = 8
    act_calib: str = "dynamic"  # dynamic | static
    calib_method: str = "minmax"  # static: minmax | aciq
    calib_samples: int = 128
    emb_bits: int | None = 8
    skip: tuple[str, ...] = field(default_factory=tuple)
    target: str = "cpu"  # execution provider whose native kernels the graph forms are chosen for
    group_kernel: str = "matmulnbits"  # cpu, group-wise: matmulnbits (exact) | int8 (requantized per channel)
    qbert: QBertOptions | None = None  # --method qbert: Hessian analysis and bit allocation

    def check(self) -> None:
        if self.method not in METHODS:
            raise BadInput(f"unknown method '{self.method}': choose one of {', '.join(METHODS)}")
        if not 2 <= self.bits <= 8:
            raise BadInput(f"--bits {self.bits} is outside 2..8")
        if self.granularity not in numerics.GRANULARITIES:
            raise BadInput(f"unknown granularity '{self.granularity}': choose {', '.join(numerics.GRANULARITIES)}")
        if self.granularity == "neuron-group" and self.groups < 1:
            raise BadInput(f"--groups {self.groups} must be at least 1")
        if self.method == "ocs" and not 0 <= self.ocs_ratio <= 1:
            raise BadInput(f"--ocs-ratio {self.ocs_ratio} must be in 0..1 (the paper's grid: 0, 0.01, 0.02, 0.05)")
        if self.ocs_activations and self.method != "ocs":
            raise BadInput("--ocs-activations splits activation channels as part of OCS: use it with --method ocs")
        if self.emb_bits not in (None, 8, 4):
            raise BadInput(f"--emb-bits {self.emb_bits} is not supported: use 8, 4 or none")
        if self.act_bits not in (None, 8):
            raise BadInput(f"--act-bits {self.act_bits} is not supported: use 8 or none")
        if self.target not in TARGETS:
            raise BadInput(f"unknown target '{self.target}': choose cpu or cuda")
        if self.group_kernel not in GROUP_KERNELS:
            raise BadInput(f"unknown group kernel '{self.group_kernel}': choose matmulnbits or int8")
        if self.target == "cuda" and self.act_bits:
            raise BadInput("--target cuda writes weight-only graphs (CUDA has no DynamicQuantizeLinear and no int8 "
                           "MatMul for QDQ activations): use --act-bits none")
        if self.group_kernel == "int8" and (self.target != "cpu" or not self.act_bits):
            raise BadInput("--group-kernel int8 runs group-wise weights on ONNX Runtime's CPU int8 GEMM: it needs "
                           "--target cpu and --act-bits 8")


def grid_is_symmetric(bits: int, symmetric: bool | None) -> bool:
    """The weight grid: as asked, else symmetric from 5 bits up and asymmetric below.

    The symmetric grid is the narrow [-(2^(b-1)-1), 2^(b-1)-1] with no zero point: at 2 bits it has
    3 levels (ternary), at 3 bits 7 and at 4 bits 15, where the asymmetric grid has 4, 8 and 16. On the
    shared SST-2 model, 2-bit per-channel ACIQ keeps 83.49 asymmetric vs 64.56 symmetric (FP32 86.81);
    at 4 bits group-32 LQ on SQuAD loses 0.58 F1 asymmetric vs 1.79 symmetric (benchmarks/results/
    sweep/README.md). Sub-byte asymmetric weights run as fast (signed int8 at load, or MatMulNBits
    zero points); from 5 bits an asymmetric int8 weight would need ORT's slower u8u8 GEMM.
    """
    return bits >= 5 if symmetric is None else bool(symmetric)


def load_ir(path: Path) -> ir.Model:
    return ir.from_proto(load_onnx(path))


def weight_array(model: ir.Model, name: str) -> np.ndarray:
    return np.asarray(model.graph.initializers[name].const_value.numpy(), dtype=np.float32)


def quantize_weight(w: np.ndarray, t: TensorPlan) -> tuple[np.ndarray, numerics.QuantParams, np.ndarray | None]:
    """The plan's decision for one weight, turned into (matrix to quantize, its scales, OCS channel
    index or None) by numerics; OCS expands W [K, N] to W' [K + splits, N]."""
    common = dict(symmetric=t.symmetric, granularity=t.granularity, group_size=t.group_size)
    if t.granularity == "neuron-group":
        common.update(groups=t.groups, heads=t.heads)
    method = "lq" if t.clip == "none" else "aciq"
    if method == "aciq":
        common["distribution"] = t.clip.removeprefix("aciq-")
    if t.ocs_ratio:
        split, params = numerics.ocs_params(w, t.ocs_ratio, t.bits, method=method, grid=t.ocs_grid_aware, **common)
        return split.weight, params, split.index
    fit = numerics.lq_params if method == "lq" else numerics.aciq_params
    return w, fit(w, t.bits, **common), None


def _skipped(name: str, patterns) -> bool:
    return any(fnmatch.fnmatch(name, p) or p in name for p in patterns)


def decide_plan(model: ir.Model, options: ConvertOptions, sites: list[WeightSite]) -> QuantPlan:
    """LQ and ACIQ: the same bits and granularity for every encoder weight; ACIQ clips analytically."""
    options.check()
    clips = options.method == "aciq" or (options.method == "ocs" and options.clip == "aciq")
    clip = f"aciq-{'gauss' if options.distribution == 'gauss' else 'laplace'}" if clips else "none"
    weights = []
    for site in sites:
        if _skipped(site.name, options.skip):
            continue
        t = TensorPlan(site.name, site.role, site.layer, site.shape, options.bits,
                       grid_is_symmetric(options.bits, options.symmetric),
                       options.granularity, options.group_size if options.granularity == "group" else None, clip)
        if options.granularity == "neuron-group":
            t.groups, t.heads = neuron_grouping(model, site, options.groups)
        if clip != "none":
            t.alpha_ratio = numerics.optimal_alpha(options.bits, clip.removeprefix("aciq-"))
        if options.method == "ocs":
            t.ocs_ratio, t.ocs_grid_aware = options.ocs_ratio, options.ocs_grid_aware
        t.kernel = default_kernel(t, options.target, options.act_bits, options.group_kernel)
        weights.append(t)
    embeddings = []
    if options.emb_bits:
        for site in embedding_tables(model.graph):
            if not _skipped(site.name, options.skip):
                block = embedding_block(site.shape[1]) if options.emb_bits == 4 else None
                embeddings.append(TensorPlan(site.name, site.role, None, site.shape, options.emb_bits, True,
                                             "row" if block is None else "row-block", block))
    acts = ActivationPlan(bits=options.act_bits, mode=options.act_calib if options.act_bits else "none",
                          calibration=options.calib_method if options.act_calib == "static" else None,
                          samples=options.calib_samples if options.act_calib == "static" else None,
                          ocs_ratio=options.ocs_ratio if options.ocs_activations else None)
    return QuantPlan(options.method, weights, embeddings, acts, list(options.skip), _source_info(model), options.target)


def default_kernel(t: TensorPlan, target: str, act_bits: int | None, group_kernel: str = "matmulnbits") -> str:
    """The ORT kernel a weight runs on (plan.KERNELS). CPU with 8-bit activations: the int8 GEMM for
    per-tensor/per-channel weights; group-wise ones have no int8 GEMM in ORT and go to MatMulNBits
    (int8 activations per block) unless requantized per channel (group_kernel="int8"). Weight-only
    graphs and CUDA: DequantizeLinear -> MatMul, which ORT fuses into MatMulNBits."""
    if target == "cpu" and act_bits:
        if t.granularity != "group":
            return "int8"
        return "int8-requant" if group_kernel == "int8" else "matmulnbits"
    return "matmulnbits"


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
        int8 = t.kernel in ("int8", "int8-requant")
        if int8 and (plan.target != "cpu" or not plan.activations.bits):
            raise BadInput(f"the plan runs '{t.name}' on the int8 GEMM, which needs target cpu and 8-bit activations")
        if (t.kernel == "int8-requant") != (t.granularity == "group" and int8):
            raise BadInput(f"the plan's kernel '{t.kernel}' for '{t.name}' does not fit its {t.granularity} granularity")


def neuron_grouping(model: ir.Model, site: WeightSite, groups: int) -> tuple[int, int | None]:
    """(groups, heads) for one weight: at most one group per output column; query/key/value groups
    respect the attention heads recorded at export (bert2onnxq.num_heads)."""
    groups = min(groups, site.shape[1])
    if site.role not in ("query", "key", "value"):
        return groups, None
    heads = model.metadata_props.get("bert2onnxq.num_heads")
    if heads is None or not heads.isdigit():
        raise BadInput("the model has no bert2onnxq.num_heads metadata, so neuron groups cannot follow the "
                       "attention heads: re-export it with 'bert2onnxq export'")
    if site.shape[1] % int(heads):
        raise BadInput(f"'{site.name}' has {site.shape[1]} outputs, not a multiple of {heads} heads")
    return groups, int(heads)


def embedding_block(hidden: int) -> int:
    """Row block for 4-bit tables: the largest power of two >= 16 dividing the hidden size
    (ONNX Runtime's GatherBlockQuantized needs one), else the whole row."""
    block = 1 << (hidden.bit_length() - 1)
    while block >= 16 and hidden % block:
        block //= 2
    if block < 16:
        raise BadInput(f"--emb-bits 4 needs a hidden size divisible by 16 (got {hidden}): use --emb-bits 8")
    return block


def _source_info(model: ir.Model) -> dict:
    meta = model.metadata_props
    return {k.removeprefix("bert2onnxq."): meta[k] for k in ("bert2onnxq.source_model", "bert2onnxq.head",
                                                               "bert2onnxq.num_layers", "bert2onnxq.hidden_size",
                                                               "bert2onnxq.num_heads") if k in meta}


def quantize_tensors(model: ir.Model, plan: QuantPlan) -> tuple[list[QuantizedTensor], list[QuantizedTensor]]:
    """Integers and scales for every planned tensor, and the graph form its kernel needs; fills each
    TensorPlan's statistics (and, for OCS, the channels split and the form chosen)."""
    weights = []
    for t in plan.weights:
        w = weight_array(model, t.name)
        act_split = activation_split(plan, t)
        w_in = w if act_split is None else w[act_split.index]  # rows duplicated unchanged for x' = x[idx] * f
        matrix, params, index = quantize_weight(w_in, t)
        q = numerics.quantize(matrix, params)
        t.stats = _stats(matrix, q, params)
        qt = QuantizedTensor(t.name, q, params, index)
        if t.kernel == "int8-requant":
            qt.form = "requant"
            q8, qt.requant = numerics.requantize_int8(q, params)
            runtime = numerics.dequantize(q8, qt.requant)  # what the int8 GEMM multiplies with
            t.stats["requant_mse"] = float(numerics.mse(numerics.dequantize(q, params), runtime))
            if index is None:
                t.stats["runtime_mse"] = float(numerics.mse(matrix, runtime))
        if index is not None:
            t.ocs_channels = [int(c) for c in index[w_in.shape[0]:]]
            folded = numerics.fold_ocs(q, params, index) if qt.form == "plain" else None
            if t.ocs_form == "fold" and folded is None:
                raise BadInput(f"the plan folds the OCS rows of '{t.name}', but they do not fit int8 at this granularity: "
                               "use ocs_form 'gather'")
            t.ocs_form = t.ocs_form or ("fold" if folded is not None else "gather")
            if t.ocs_form == "fold":
                qt.form = "ocs-fold"
        if index is not None or act_split is not None:
            # the error that matters is the effective weight's: fold duplicated rows back onto W
            t.stats["mse"] = float(numerics.mse(w, effective_weight(numerics.dequantize(q, params), index, act_split)))
        if qt.form == "plain":
            qt.load_as = _load_as(params, plan.target)
        weights.append(qt)
    tables = []
    for t in plan.embeddings:
        table = weight_array(model, t.name)
        # per row of T (its columns once transposed); 4-bit tables use row blocks
        granularity = "group" if t.group_size else "channel"
        params_t = numerics.lq_params(table.T, t.bits, symmetric=True, granularity=granularity, group_size=t.group_size)
        q = numerics.quantize(table.T, params_t).T
        t.stats = _stats(table.T, q.T, params_t)
        tables.append(QuantizedTensor(t.name, np.ascontiguousarray(q), params_t))
    return weights, tables


def activation_split(plan: QuantPlan, t: TensorPlan) -> numerics.ActivationSplit | None:
    rows = plan.activation_split_rows(t.name)
    return numerics.ActivationSplit.from_rows(t.shape[0], rows) if rows else None


def effective_weight(w: np.ndarray, index: np.ndarray | None, act_split: numerics.ActivationSplit | None) -> np.ndarray:
    """The [K, N] weight that x meets through OCS: rows of W' folded over the weight gather `index`, then
    over the activation split (x' = x[idx] * factor); float64."""
    w = np.asarray(w, np.float64)
    if index is not None:
        folded = np.zeros((len(act_split.index) if act_split else index.max() + 1, w.shape[1]))
        np.add.at(folded, index, w)
        w = folded
    if act_split is not None:
        folded = np.zeros((act_split.index.max() + 1, w.shape[1]))
        np.add.at(folded, act_split.index, w * act_split.factor[:, None])
        w = folded
    return w


def _load_as(params: numerics.QuantParams, target: str) -> str | None:
    """Container to cast a plain weight to at session start (qdq_weights docstring): the CPU runs
    per-tensor/per-channel sub-byte weights as int8; CUDA has no int2 DequantizeLinear or MatMulNBits."""
    bits = numerics.container_bits(params.bits)
    if target == "cpu" and bits < 8 and params.block_size is None:
        return "int8"
    if target == "cuda" and bits == 2:
        return "int4"
    return None


def _stats(w: np.ndarray, q: np.ndarray, params: numerics.QuantParams) -> dict:
    scale = np.asarray(params.scale, dtype=np.float64)
    deq = numerics.dequantize(q, params)
    step = numerics.expand_scale(params.scale, w.shape, params.axis, params.block_size)
    return {
        "num_scales": params.num_scales,
        "scale_min": float(scale.min()), "scale_max": float(scale.max()), "scale_mean": float(scale.mean()),
        "max_abs": float(np.abs(w).max()),
        # inside the range the error is at most half a step; beyond it, the value was clipped
        "clipped_fraction": float(np.mean(np.abs(w - deq) > step * 0.5 * (1 + 1e-6))),
        "mse": float(numerics.mse(w, deq)),
    }


def apply_plan(model: ir.Model, plan: QuantPlan) -> ir.Model:
    """Apply `plan` in place: weights, then embeddings, then activation quantizers."""
    check_kernels(plan)
    weights, tables = quantize_tensors(model, plan)
    splits = {f"{t.name}_dequantized": (t.name, t.gather_index) for t in weights
              if t.gather_index is not None and t.form != "ocs-fold"}
    passes = [QuantizeWeightsPass(weights), SplitChannelsPass(splits), _split_activations_pass(plan),
              QuantizeEmbeddingsPass(tables)]
    if plan.activations.bits:
        # MatMulNBits weights quantize activations to int8 themselves (session.qdq_matmulnbits_accuracy_level=4,
        # ORT's default); explicit activation QDQ in front of a blocked weight makes ORT 1.31 build a
        # MatMulIntegerToFloat that cannot run. The int8 GEMM kernels get the activation quantizers.
        kernels = {t.name: t.kernel for t in plan.weights}
        dequantized = [f"{t.name}_dequantized" for t in weights if kernels[t.name] in ("int8", "int8-requant")]
        ranges = plan.activations.ranges if plan.activations.mode == "static" else None
        passes.append(QuantizeActivationsPass(dequantized, ranges))
    ir.passes.PassManager(passes)(model)
    model.metadata_props["bert2onnxq.plan"] = plan.to_json()
    model.metadata_props["bert2onnxq.plan_summary"] = plan.summary()
    return model


def _split_activations_pass(plan: QuantPlan, suffix: str = "_dequantized") -> SplitActivationsPass:
    splits = {}
    for name, split in plan.activations.splits.items():
        k = next(t.shape[0] for t in plan.weights if t.name in split["weights"])
        s = numerics.ActivationSplit.from_rows(k, split["split_rows"])
        splits[name] = (s.index, s.factor, {f"{w}{suffix}" for w in split["weights"]})
    return SplitActivationsPass(splits)


def split_fp32(model: ir.Model, plan: QuantPlan) -> ir.Model:
    """Apply only OCS channel splitting (weights and activations), in FP32: must equal the FP32 model."""
    splits, expanded = {}, {}
    for t in plan.weights:
        act_split = activation_split(plan, t)
        w = weight_array(model, t.name)
        w = w if act_split is None else w[act_split.index]
        if t.ocs_ratio:
            split = numerics.ocs_split(w, t.ocs_ratio)
            splits[t.name], w = (t.name, split.index), split.weight
        expanded[t.name] = w
    ir.passes.PassManager([SplitChannelsPass(splits, expanded), _split_activations_pass(plan, suffix="")])(model)
    return model


def convert(
    source: str,
    output: Path,
    options: ConvertOptions | None = None,
    *,
    plan: QuantPlan | None = None,
    plan_out: Path | None = None,
    calibrate=None,
    progress=None,
) -> dict:
    """Convert an FP32 ONNX (or an HF model, exported first) into a quantized ONNX at `output`.

    `calibrate(fp32_path, activation_names) -> {name: calibrate.ChannelObserver}` observes activations
    on calibration data, for static ranges and activation OCS;
    `progress(label, total) -> advance(n)` shows long analyses (Q-BERT's Hessian).
    """
    output = Path(output)
    if output.suffix != ".onnx":
        raise BadInput(f"output '{output}' must end in .onnx")
    with atomic_output(output) as tmp:
        fp32_path = _fp32_source(source, tmp)
        model = load_ir(fp32_path)
        sites = check_quantizable(model)
        if plan is None and options is not None and options.method == "qbert":
            from .qbert import decide_qbert_plan  # imports torch; only Q-BERT needs it

            plan = decide_qbert_plan(model, options, sites, source, progress)
        elif plan is None:
            plan = decide_plan(model, options or ConvertOptions(), sites)
        check_plan_fits(plan, {name: tuple(v.shape.numpy()) for name, v in model.graph.initializers.items()})
        check_kernels(plan)
        calibrate_activations(model, plan, fp32_path, calibrate)
        planned = {t.name for t in plan.weights + plan.embeddings}
        fp32_rest = sum(v.const_value.nbytes for n, v in model.graph.initializers.items() if n not in planned)
        apply_plan(model, plan)
        save_onnx(ir.to_proto(model), tmp / output.name)
        shutil.rmtree(tmp / "fp32", ignore_errors=True)  # the intermediate export, if we made one
        if plan_out is not None:
            Path(plan_out).write_text(plan.to_json())
    size = output.stat().st_size
    ideal = plan.ideal_bytes() + fp32_rest
    container_ideal = plan.ideal_bytes(container=True) + fp32_rest
    return {"output": str(output), "plan": plan, "bytes": size, "ideal_bytes": ideal, "size_vs_ideal": size / ideal,
            "container_ideal_bytes": container_ideal, "size_vs_container_ideal": size / container_ideal}


def calibrate_activations(model: ir.Model, plan: QuantPlan, fp32_path: Path, calibrate) -> None:
    """Fill the plan's activation decisions that need data: OCS activation splits, then static ranges."""
    acts = plan.activations
    need_splits = bool(acts.ocs_ratio) and not acts.splits
    need_ranges = acts.mode == "static" and not acts.ranges
    if not (need_splits or need_ranges):
        return
    if calibrate is None:
        raise BadInput("static activation ranges and --ocs-activations need calibration samples: pass --task "
                       "(and --data-dir or --calib-file)")
    readers = _activation_readers(model, plan)
    observers = calibrate(fp32_path, sorted(readers))
    if need_splits:
        acts.splits = {x: {"split_rows": numerics.activation_split(observers[x].channel_absmax(), acts.ocs_ratio).split_rows,
                           "weights": weights} for x, weights in readers.items()}
    if need_ranges:
        acts.ranges = {}
        nbits = {t.name for t in plan.weights if t.kernel == "matmulnbits"}  # MatMulNBits quantizes these itself
        for x, weights in readers.items():
            if set(weights) <= nbits:
                continue
            split = activation_split(plan, next(t for t in plan.weights if t.name == weights[0]))
            name = x if split is None else split_activation_name(x)
            acts.ranges[name] = observers[x].range(acts.calibration, split=split)


def _activation_readers(model: ir.Model, plan: QuantPlan) -> dict[str, list[str]]:
    """{MatMul input activation: [planned weights it multiplies]} (Q, K and V share one input)."""
    names = {t.name for t in plan.weights}
    readers: dict[str, list[str]] = {}
    for n in model.graph:
        if n.op_type == "MatMul" and n.inputs[1] is not None and n.inputs[1].name in names:
            readers.setdefault(n.inputs[0].name, []).append(n.inputs[1].name)
    return readers


def _fp32_source(source: str, tmp: Path) -> Path:
    """An FP32 .onnx path: the given file, or a fresh export of an HF model into `tmp`."""
    path = Path(source)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise BadInput(f"'{source}' does not exist: pass an FP32 .onnx or a Hugging Face model folder")
        tokenizer = path.parent / "tokenizer.json"
        if tokenizer.is_file():  # keep the tokenizer beside the output so validate finds it
            for f in path.parent.iterdir():
                if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "vocab.txt"):
                    (tmp / f.name).write_bytes(f.read_bytes())
        return path
    from .export import export

    export(source, tmp / "fp32" / "model.onnx")
    for f in (tmp / "fp32").iterdir():
        if f.suffix not in (".onnx", ".data"):
            f.rename(tmp / f.name)
    return tmp / "fp32" / "model.onnx"

