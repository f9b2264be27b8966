"""Activation statistics: run the FP32 model on train-split samples and observe MatMul inputs.

They decide static activation ranges and which activation channels OCS splits: the plan's
decisions that need data, filled once the method has said which MatMuls are quantized.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir

from .. import numerics
from ..errors import BadInput
from ..onnx_io import load_onnx, load_tokenizer, model_metadata
from ..plan import QuantPlan, TensorPlan, split_activation_name
from ..runtime import make_runner
from ..tasks import get_task
from ..tasks.base import CALIBRATION_DRAW, calibration_order

SAMPLE_VALUES = 200_000  # values (as whole token rows) kept per tensor for ACIQ's b estimate


class ChannelObserver:
    """Per-channel min/max of one activation [..., K] over real tokens, plus a random sample of token rows.

    Keeping whole rows lets the range of an OCS-split activation x' = x[..., index] * factor be computed
    exactly from the same statistics.
    """

    def __init__(self, rng: np.random.Generator, moments: bool | str = False):
        self.lo = self.hi = None
        self.rows: list[np.ndarray] = []
        self.rng = rng
        self.moment = None if not moments else 0.0  # X^T X over every real token (GPTQ's H), float64
        # with the batch quantized as the int8 kernels' activations are: X_q^T X_q and X_q^T X, for moments
        # "quantized" (DynamicQuantizeLinear, per batch) or "per-token"
        self.quantize = {"quantized": numerics.dynamic_quantize, "per-token": numerics.per_token_quantize}.get(moments)
        self.q_moment = self.cross_moment = None if self.quantize is None else 0.0
        self.tokens = 0

    def update(self, x: np.ndarray) -> None:
        x = x.reshape(-1, x.shape[-1])
        self.tokens += len(x)
        lo, hi = x.min(axis=0), x.max(axis=0)
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)
        keep = max(1, SAMPLE_VALUES // (8 * x.shape[1]))
        self.rows.append(x[self.rng.choice(len(x), size=min(len(x), keep), replace=False)])

    def add_moment(self, x: np.ndarray) -> None:
        """Accumulate X^T X of one batch's token rows x [tokens, K] and, for quantized moments, the same
        with the batch quantized to 8 bits (one call per batch: a few large products)."""
        # one batch's products in float32 (BLAS sgemm, a few hundred rows each), summed over batches in float64
        x32 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=np.float32)
        self.moment = self.moment + (x32.T @ x32).astype(np.float64)
        if self.q_moment is not None:
            xq = self.quantize(x32)
            self.q_moment = self.q_moment + (xq.T @ xq).astype(np.float64)
            self.cross_moment = self.cross_moment + (xq.T @ x32).astype(np.float64)

    def channel_absmax(self) -> np.ndarray:
        return np.maximum(-self.lo, self.hi)

    def range(self, method: str, bits: int = 8, split: numerics.ActivationSplit | None = None) -> list[float]:
        """[lo, hi] of the activation (after `split`, if given): min-max, or ACIQ's Laplace clip."""
        lo, hi = self.lo.astype(np.float64), self.hi.astype(np.float64)
        values = np.concatenate(self.rows).astype(np.float64)
        if split is not None:  # factor > 0, so each channel's range scales with it
            lo, hi = lo[split.index] * split.factor, hi[split.index] * split.factor
            values = values[:, split.index] * split.factor
        lo, hi = float(lo.min()), float(hi.max())
        if method == "minmax":
            return [lo, hi]
        mu = float(values.mean())
        alpha = numerics.optimal_alpha(bits, "laplace") * float(np.mean(np.abs(values - mu)))
        return [max(lo, mu - alpha), min(hi, mu + alpha)]


def observe_activations(
    fp32_path: Path,
    names: list[str],
    task_name: str,
    *,
    samples: int = 128,
    data_dir: Path | None = None,
    data_file: Path | None = None,
    batch_size: int = 16,
    seed: int = 0,
    moments: bool | str = False,
    min_tokens: int = 0,
    progress=None,
    weights: dict | None = None,
) -> dict[str, ChannelObserver]:
    """Run the FP32 model on `samples` train examples of `task_name` in calibration order (more, in that
    order, until they hold `min_tokens` tokens) and observe the named activations (with `moments`, also their
    second moment X^T X; "quantized" / "per-token": also those of the 8-bit quantized batch); `progress(label, total)`
    shows the batches. `weights` {initializer name: array} replace those initializers first."""
    import onnx
    from onnx import numpy_helper

    task = get_task(task_name)
    model = load_onnx(fp32_path)
    if weights:
        for init in model.graph.initializer:
            if init.name in weights:
                init.CopyFrom(numpy_helper.from_array(np.asarray(weights[init.name], np.float32), init.name))
    known = {o.name for o in model.graph.output}
    for name in names:  # expose the activations as outputs for the calibration session only
        if name not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    tokenizer = load_tokenizer(Path(fp32_path), model_metadata(Path(fp32_path)))
    features = _calibration_features(task, tokenizer, samples, min_tokens, data_dir, data_file)
    tmp = Path(fp32_path).with_name(f".{Path(fp32_path).stem}.calibration.onnx")
    try:
        onnx.save(model, str(tmp))
        runner = make_runner(tmp)
        observers = {name: ChannelObserver(np.random.default_rng(seed), moments) for name in names}
        starts = range(0, len(features), batch_size)
        tick = progress(f"calibration batches ({task.name} train)", len(starts)) if progress else None
        for start in starts:
            batch = features[start:start + batch_size]
            outputs = runner.run_features(batch, batch_size, tokenizer.pad_token_id or 0)
            for name in names:  # cut padded positions: they are not real activations
                rows = [row[: len(feature["input_ids"])] if row.ndim >= 2 else row
                        for row, feature in zip(outputs[name], batch)]
                for row in rows:
                    observers[name].update(row)
                if moments:
                    observers[name].add_moment(np.concatenate([r.reshape(-1, r.shape[-1]) for r in rows]))
            if tick:
                tick(1)
    finally:
        tmp.unlink(missing_ok=True)
    return observers


def task_calibrator(task_name: str, *, default_samples: int = 128, data_dir: Path | None = None,
                    data_file: Path | None = None, progress=None):
    """convert's `calibrate(fp32_path, names, samples=None, moments=False, min_tokens=0, weights=None)`:
    `observe_activations` on train examples of `task_name` (`default_samples` when none are asked for)."""

    def calibrate(fp32_path, names, samples=None, moments=False, min_tokens=0, weights=None):
        return observe_activations(fp32_path, names, task_name, samples=samples or default_samples, data_dir=data_dir,
                                   data_file=data_file, moments=moments, min_tokens=min_tokens, progress=progress,
                                   weights=weights)
    return calibrate


def _calibration_features(task, tokenizer, samples: int, min_tokens: int, data_dir, data_file) -> list[dict]:
    """Features of `samples` train examples in calibration order (a seeded shuffle of the split),
    extended in that order until they hold `min_tokens` tokens."""
    examples = task.load_examples(data_dir=data_dir, data_file=data_file, split="train")
    order = calibration_order(len(examples))

    def encode(ids):
        return task.encode([examples[i] for i in ids], tokenizer, max_length=task.default_max_length).features

    features = encode(order[:samples])
    tokens = sum(len(f["input_ids"]) for f in features)
    taken = samples
    while min_tokens and tokens < min_tokens and taken < len(order):
        for feature in encode(order[taken:taken + samples]):
            if tokens >= min_tokens:
                break
            features.append(feature)
            tokens += len(feature["input_ids"])
        taken += samples
    return features


def activation_ranges(fp32_path: Path, names: list[str], task_name: str, *, method: str = "minmax",
                      **kwargs) -> dict[str, list[float]]:
    """{activation name: [lo, hi]} from train examples of `task_name` (min-max or ACIQ)."""
    observers = observe_activations(fp32_path, names, task_name, **kwargs)
    return {name: obs.range(method) for name, obs in observers.items()}


def fill_activation_plan(model: ir.Model, plan: QuantPlan, fp32_path: Path, calibrate) -> None:
    """Fill the plan's activation decisions that need data: OCS activation splits, then static ranges.

    `calibrate(fp32_path, activation_names) -> {name: ChannelObserver}` observes the activations.
    """
    acts = plan.activations
    need_splits = bool(acts.ocs_ratio) and not acts.splits
    need_ranges = acts.mode == "static" and not acts.ranges
    if not (need_splits or need_ranges):
        return
    if calibrate is None:
        raise BadInput("static activation ranges and --ocs-activations need calibration samples: pass --task "
                       "(and --data-dir or --calib-file)")
    readers = activation_readers(model, plan)
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


def input_moments(model: ir.Model, plan: QuantPlan, fp32_path: Path, calibrate, progress=None, *,
                  only: list[TensorPlan] | None = None, weights: dict | None = None) -> dict | None:
    """{MatMul input activation: X^T X} on the plan's calibration samples when it rounds with GPTQ, else None.
    `only`: just the inputs these weights read; `weights` {initializer: [K, N] float32}: measured on the
    FP32 model with these weights replaced (sequential GPTQ: the layers already rounded). The plan records
    the tokens they came from."""
    rounding = plan.rounding
    if rounding.get("method") != "gptq":
        return None
    if not plan.weights:
        raise BadInput("--rounding gptq has no weight to round (--skip left none): use --rounding nearest")
    if calibrate is None:
        raise BadInput("--rounding gptq needs calibration samples to measure each layer's inputs: pass --task "
                       "(and --data-dir or --calib-file); a plan that rounds with GPTQ needs them to replay too")
    if rounding.get("draw") != CALIBRATION_DRAW:  # a plan from before the shuffle drew the file's first rows
        raise BadInput("this GPTQ plan was calibrated on the train split's first examples in file order, which this "
                       "version no longer draws; convert again without --plan to re-decide it")
    readers = activation_readers(model, plan)
    if only is not None:
        names = {t.name for t in only}
        readers = {x: ws for x, ws in readers.items() if names & set(ws)}
    moments = True  # X_q moments only when used
    if rounding.get("inputs") == "quantized":
        moments = "per-token" if plan.activations.mode == "per-token" else "quantized"
    extra = {"weights": weights} if weights else {}
    observers = calibrate(fp32_path, sorted(readers), samples=rounding.get("samples"), moments=moments,
                          min_tokens=rounding.get("min_tokens", 0), **extra)
    rounding["tokens"] = int(next(iter(observers.values())).tokens)
    return {x: observers[x] for x in readers}


def activation_readers(model: ir.Model, plan: QuantPlan) -> dict[str, list[str]]:
    """{MatMul input activation: [planned weights it multiplies]} (Q, K and V share one input)."""
    names = {t.name for t in plan.weights}
    readers: dict[str, list[str]] = {}
    for n in model.graph:
        if n.op_type == "MatMul" and n.inputs[1] is not None and n.inputs[1].name in names:
            readers.setdefault(n.inputs[0].name, []).append(n.inputs[1].name)
    return readers


def activation_split(plan: QuantPlan, t: TensorPlan) -> numerics.ActivationSplit | None:
    """The OCS split of the activation that weight `t`'s MatMul reads, or None."""
    rows = plan.activation_split_rows(t.name)
    return numerics.ActivationSplit.from_rows(t.shape[0], rows) if rows else None
