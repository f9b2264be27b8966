"""Static activation ranges: run the FP32 model on train-split samples and record MatMul inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import numerics
from .onnx_io import load_onnx
from .runtime import make_runner
from .tasks import get_task
from .validate import load_tokenizer, model_metadata

RESERVOIR = 200_000  # values kept per tensor for ACIQ's b estimate


class RangeObserver:
    """Exact min/max plus a random sample of values (for ACIQ's Laplace b) of one tensor."""

    def __init__(self, rng: np.random.Generator):
        self.lo, self.hi = np.inf, -np.inf
        self.sample: list[np.ndarray] = []
        self.rng = rng

    def update(self, x: np.ndarray) -> None:
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        flat = x.ravel()
        self.sample.append(self.rng.choice(flat, size=min(flat.size, RESERVOIR // 8), replace=False))

    def range(self, method: str, bits: int = 8) -> list[float]:
        if method == "minmax":
            return [self.lo, self.hi]
        values = np.concatenate(self.sample)
        mu = float(values.mean())
        alpha = numerics.optimal_alpha(bits, "laplace") * float(np.mean(np.abs(values - mu)))
        return [max(self.lo, mu - alpha), min(self.hi, mu + alpha)]


def activation_ranges(
    fp32_path: Path,
    names: list[str],
    task_name: str,
    *,
    samples: int = 128,
    method: str = "minmax",
    data_dir: Path | None = None,
    data_file: Path | None = None,
    batch_size: int = 16,
    seed: int = 0,
) -> dict[str, list[float]]:
    """{activation name: [lo, hi]} from `samples` train examples of `task_name` (min-max or ACIQ)."""
    import onnx

    task = get_task(task_name)
    model = load_onnx(fp32_path)
    known = {o.name for o in model.graph.output}
    for name in names:  # expose the activations as outputs for the calibration session only
        if name not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    tokenizer = load_tokenizer(Path(fp32_path), model_metadata(Path(fp32_path)))
    examples = task.load_examples(data_dir=data_dir, data_file=data_file, split="train", limit=samples)
    encoded = task.encode(examples, tokenizer, max_length=task.default_max_length)
    tmp = Path(fp32_path).with_name(f".{Path(fp32_path).stem}.calibration.onnx")
    try:
        onnx.save(model, str(tmp))
        runner = make_runner(tmp)
        observers = {name: RangeObserver(np.random.default_rng(seed)) for name in names}
        for start in range(0, len(encoded.features), batch_size):
            batch = encoded.features[start:start + batch_size]
            outputs = runner.run_features(batch, batch_size, tokenizer.pad_token_id or 0)
            for name in names:  # cut padded positions: they are not real activations
                for row, feature in zip(outputs[name], batch):
                    observers[name].update(row[: len(feature["input_ids"])] if row.ndim >= 2 else row)
    finally:
        tmp.unlink(missing_ok=True)
    return {name: obs.range(method) for name, obs in observers.items()}
