"""ONNX Runtime sessions (providers, session options) and batched inference with per-batch padding."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .errors import BadInput

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


@dataclass
class Runner:
    """An InferenceSession plus the settings that were used to build it (for the record)."""

    session: object
    device: str
    threads: int
    config: dict[str, str] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    @property
    def _sequence_outputs(self) -> set[str]:
        """Outputs whose second axis is the (symbolic) sequence axis, e.g. start/end logits."""
        return {o.name for o in self.session.get_outputs() if len(o.shape) >= 2 and isinstance(o.shape[1], str)}

    def describe(self) -> dict:
        """Provider and session options that can affect numerics or speed, for reports."""
        import onnxruntime as ort

        return {
            "onnxruntime": ort.__version__,
            "providers": self.session.get_providers(),
            "device": self.device,
            "intra_op_num_threads": self.threads,
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "session_config": dict(self.config),
            # numerics of MatMulNBits (fused from blocked DequantizeLinear -> MatMul): 4 = int8 activations
            "qdq_matmulnbits_accuracy_level": self.config.get("session.qdq_matmulnbits_accuracy_level", "4 (default)"),
            "numerics_options": numerics_options(self.config),
        }

    def run_features(
        self,
        features: list[dict[str, np.ndarray]],
        batch_size: int = 32,
        pad_id: int = 0,
        on_batch: Callable[[int], None] | None = None,
    ) -> dict[str, list[np.ndarray]]:
        """Run every feature; return, per output, one array per feature in input order.

        Features are batched in order of length and padded to the longest in their batch (less
        padding, same numbers: BERT masks padded positions). Sequence axes of outputs are cut back
        to each feature's own length.
        """
        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
        results: dict[str, list] = {name: [None] * len(features) for name in self.output_names}
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            feeds, lengths = pad_batch([features[i] for i in idx], self.input_names, pad_id)
            outputs = self.session.run(None, feeds)
            for name, value in zip(self.output_names, outputs):
                per_token = name in self._sequence_outputs
                for row, (i, length) in enumerate(zip(idx, lengths)):
                    results[name][i] = np.array(value[row, :length] if per_token else value[row])
            if on_batch:
                on_batch(len(idx))
        return results


# Session settings that change the numbers a quantized graph computes (not only its speed), with
# what ONNX Runtime does when they are not set. Threads and batch size are speed settings; `bench`
# checks that they leave the outputs unchanged.
NUMERICS_CONFIG = {
    "session.qdq_matmulnbits_accuracy_level": "4: MatMulNBits quantizes activations to int8 per block",
    "session.disable_quant_qdq": "0: QDQ pairs fused into integer kernels (else simulated in float)",
    "session.x64quantprecision": "0: ORT's default u8s8 int8 GEMM on x64",
    "optimization.enable_gelu_approximation": "0: exact Gelu",
    "mlas.use_lut_gemm": "ORT default (2-bit MatMulNBits through a lookup-table GEMM when on)",
}


def numerics_options(config: dict[str, str]) -> dict[str, str]:
    """The numerics-relevant settings of a session: the value set, or the default's meaning."""
    return {key: config.get(key, f"unset ({meaning})") for key, meaning in NUMERICS_CONFIG.items()} | {
        "graph_optimization_level": "ORT_ENABLE_ALL"}


@functools.lru_cache(maxsize=1)
def known_config_keys() -> frozenset[str]:
    """The session config keys this onnxruntime build knows: ORT accepts any key and silently ignores
    unknown ones, and exposes no list, so they are read from its library's string table (empty if unreadable)."""
    import re

    import onnxruntime as ort

    keys: set[str] = set()
    for lib in (Path(ort.__file__).parent / "capi").glob("libonnxruntime.so*"):
        try:
            data = lib.read_bytes()
        except OSError:
            continue
        keys |= {m.decode() for m in re.findall(
            rb"(?<![A-Za-z0-9_.])((?:session|optimization|mlas|ep)\.[a-z0-9_]+(?:\.[a-z0-9_]+)*)\x00", data)}
    return frozenset(keys)


def check_session_config(config: dict[str, str] | None) -> None:
    """BadInput for a key ONNX Runtime would ignore without a word (a typo, or an option of another version)."""
    if not config:
        return
    import difflib

    import onnxruntime as ort

    known = known_config_keys()
    for key in config:
        if known and key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            raise BadInput(f"--session-config key '{key}' is unknown to onnxruntime {ort.__version__} (it would be ignored)"
                           + (f": did you mean '{close[0]}'?" if close else ": see onnxruntime_session_options_config_keys.h"))


def session_options(threads: int = 0, config: dict[str, str] | None = None, optimized_path: Path | None = None):
    """The SessionOptions every bert2onnxq session uses: all graph optimizations, quiet logging."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, str(value))
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return options


def pad_batch(batch: list[dict[str, np.ndarray]], names: Iterable[str], pad_id: int = 0):
    """Right-pad a list of 1-D features into int64 matrices; returns (feeds, lengths)."""
    lengths = [len(f["input_ids"]) for f in batch]
    width = max(lengths)
    feeds = {}
    for name in names:
        fill = pad_id if name == "input_ids" else 0
        out = np.full((len(batch), width), fill, dtype=np.int64)
        for row, f in enumerate(batch):
            out[row, : lengths[row]] = f[name]
        feeds[name] = out
    return feeds, lengths


def make_runner(model_path: Path, device: str = "cpu", threads: int = 0, config: dict[str, str] | None = None,
                optimized_path: Path | None = None) -> Runner:
    """Build a session; a clear error when the device's provider or the model is unusable.
    `optimized_path` also writes the graph ONNX Runtime runs after its optimizations there."""
    import onnxruntime as ort

    if device not in PROVIDERS:
        raise BadInput(f"unknown device '{device}': choose cpu or cuda")
    provider = PROVIDERS[device]
    if provider not in ort.get_available_providers():
        raise BadInput(
            f"device '{device}' needs {provider}, which this onnxruntime build lacks: "
            "install onnxruntime-gpu on a machine with an NVIDIA GPU, or use --device cpu"
        )
    check_session_config(config)
    options = session_options(threads, config, optimized_path)
    providers = [provider] if device == "cpu" else [provider, "CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(model_path), options, providers=providers)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"ONNX Runtime cannot load '{model_path}': {msg[:300]}") from None
    if device == "cuda" and provider not in session.get_providers():
        raise BadInput("CUDA was requested but the session fell back to CPU: check the GPU driver and CUDA libraries")
    return Runner(session, device, threads, dict(config or {}))
