"""HF BERT (local folder or hub id) -> FP32 ONNX with dynamic batch/sequence axes and metadata.

We use the TorchScript exporter (`dynamo=False`) with eager attention: it is the graph shape that
`onnxruntime.transformers`' optimizer fuses into Attention / SkipLayerNormalization / BiasGelu
(the dynamo exporter's SDPA graph fused no Attention; see README "Export").
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .errors import BadInput
from .hub import hub_reachable
from .onnx_io import atomic_output, load_onnx, save_onnx

OPSET = 21  # INT4 and blocked DequantizeLinear need 21; passes that write INT2 raise it to 25
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
HEADS = {
    "classification": ("ForSequenceClassification", ("logits",)),
    "regression": ("ForSequenceClassification", ("logits",)),
    "question-answering": ("ForQuestionAnswering", ("start_logits", "end_logits")),
}
BERT_FAMILY = {"bert"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@dataclass
class LoadedModel:
    model: object  # transformers PreTrainedModel, eager attention, fp32, eval mode
    tokenizer: object
    head: str
    source: str


def resolve_head(config, head: str | None) -> str:
    """The model's head from its config (architectures, num_labels), unless the user overrides it."""
    if head is not None:
        if head not in HEADS:
            raise BadInput(f"unknown head '{head}': choose one of {', '.join(HEADS)}")
        return head
    arch = (getattr(config, "architectures", None) or [""])[0]
    if arch.endswith("ForQuestionAnswering"):
        return "question-answering"
    if arch.endswith("ForSequenceClassification"):
        if config.num_labels == 1 or getattr(config, "problem_type", None) == "regression":
            return "regression"
        return "classification"
    raise BadInput(
        f"cannot tell the task head from architecture '{arch or 'none'}': "
        "pass --head classification|regression|question-answering"
    )


def load_hf_model(source: str, head: str | None = None) -> LoadedModel:
    """Load config, weights (fp32, eager attention) and fast tokenizer from a folder or hub id."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    path = Path(source)
    local = {}
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise BadInput(f"'{source}' is not a Hugging Face model folder (no config.json): pass a folder saved by save_pretrained")
        source = str(path.resolve())
    elif _looks_like_path(source):
        raise BadInput(f"'{source}' does not exist: pass a Hugging Face model folder (or a hub id such as bert-base-uncased)")
    elif not hub_reachable():  # offline: only the local hub cache, without minutes of retries
        local = {"local_files_only": True}
    try:
        config = AutoConfig.from_pretrained(source, **local)
    except OSError as exc:
        if path.exists():
            raise BadInput(f"'{source}' has an unreadable config.json ({_first_line(exc)})") from None
        if local:
            raise BadInput(f"cannot reach the Hugging Face hub and '{source}' is not in the local cache: "
                           "pass a local model folder (or run where huggingface.co is reachable)") from None
        raise BadInput(f"'{source}' is not a model on the Hugging Face hub: check the id, or pass a local model folder") from None
    except ValueError as exc:
        raise BadInput(f"'{source}': {_first_line(exc)}") from None
    if config.model_type not in BERT_FAMILY:
        raise BadInput(f"'{source}' is a '{config.model_type}' model; bert2onnxq exports BERT-family models (model_type bert)")
    head = resolve_head(config, head)
    auto = AutoModelForQuestionAnswering if head == "question-answering" else AutoModelForSequenceClassification
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = auto.from_pretrained(source, dtype=torch.float32, attn_implementation="eager", **local)
        tokenizer = AutoTokenizer.from_pretrained(source, **local)
    except (OSError, ValueError) as exc:
        raise BadInput(f"could not load model or tokenizer from '{source}': {_first_line(exc)}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise BadInput(f"'{source}' has no fast tokenizer (tokenizer.json): save one with transformers' AutoTokenizer")
    return LoadedModel(model.eval(), tokenizer, head, source)


def export(
    source: str,
    output: Path | None = None,
    *,
    save_dir: Path | None = None,
    head: str | None = None,
    opset: int = OPSET,
    external_data_threshold: int = 1 << 30,
    check: bool = True,
) -> dict:
    """Export `source` to ONNX and return a summary (paths, head, max |ONNX - PyTorch| logit diff).

    `output` writes model.onnx plus the tokenizer files beside it; `save_dir` writes a folder that
    Optimum's ORTModelFor* classes load (model.onnx, config.json, tokenizer). Both are atomic.
    """
    if (output is None) == (save_dir is None):
        raise BadInput("give exactly one of -o/--output FILE.onnx or --save-dir DIR")
    if output is not None and Path(output).suffix != ".onnx":
        raise BadInput(f"output '{output}' must end in .onnx")
    loaded = load_hf_model(source, head)
    target = Path(output) if output is not None else Path(save_dir) / "model.onnx"

    with atomic_output(target) as tmp_dir:
        tmp_model = tmp_dir / target.name
        _torch_export(loaded, tmp_model, opset)
        model = load_onnx(tmp_model)
        _name_weights_after_torch(model, loaded.model)
        _set_metadata(model, loaded)
        tmp_model.unlink()
        save_onnx(model, tmp_model, external_data_threshold=external_data_threshold)
        loaded.tokenizer.save_pretrained(tmp_dir)
        if save_dir is not None:
            loaded.model.config.save_pretrained(tmp_dir)
        max_diff = check_against_torch(tmp_model, loaded) if check else None
    return {
        "output": str(target),
        "source": loaded.source,
        "head": loaded.head,
        "labels": _labels(loaded.model.config, loaded.head),
        "opset": opset,
        "max_abs_diff_vs_torch": max_diff,
        "external_data": (target.parent / (target.name + ".data")).exists(),
    }


def _torch_export(loaded: LoadedModel, path: Path, opset: int) -> None:
    import torch

    outputs = HEADS[loaded.head][1]
    sample = loaded.tokenizer(["a short sample", "and a longer second sample sentence"], ["pair", "text"],
                              padding=True, return_tensors="pt")
    args = tuple(sample[name] for name in INPUT_NAMES)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes.update({name: ({0: "batch"} if name == "logits" else {0: "batch", 1: "sequence"}) for name in outputs})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(loaded.model, args, str(path), input_names=list(INPUT_NAMES), output_names=list(outputs),
                          dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True)


def _name_weights_after_torch(model, torch_model) -> None:
    """Give the exporter's anonymous MatMul weights (`onnx::MatMul_123`) their PyTorch names.

    The exporter stores each Linear weight transposed under a generated name; later passes find
    BERT weights (layer, role) by name, so we match the bytes of W.T back to the state dict.
    """
    from onnx import numpy_helper

    by_bytes = {}
    for name, param in torch_model.state_dict().items():
        if name.endswith(".weight") and param.ndim == 2:
            by_bytes[np.ascontiguousarray(param.detach().numpy().T).tobytes()] = name
    renames = {}
    for init in model.graph.initializer:
        if init.name.startswith("onnx::"):
            name = by_bytes.get(numpy_helper.to_array(init).tobytes())
            if name is not None:
                renames[init.name] = name
                init.name = name
    for node in model.graph.node:
        node.input[:] = [renames.get(i, i) for i in node.input]


def _labels(config, head: str) -> dict | None:
    if head == "question-answering":
        return None
    return {int(k): v for k, v in config.id2label.items()}


def _set_metadata(model, loaded: LoadedModel) -> None:
    import torch
    import transformers

    config = loaded.model.config
    meta = {
        "bert2onnxq.version": __version__,
        "bert2onnxq.source_model": loaded.source,
        "bert2onnxq.source_commit": str(getattr(config, "_commit_hash", None) or ""),
        "bert2onnxq.head": loaded.head,
        "bert2onnxq.labels": json.dumps(_labels(config, loaded.head)),
        "bert2onnxq.tokenizer": ".",  # relative to the .onnx file's folder
        "bert2onnxq.architecture": (config.architectures or [""])[0],
        "bert2onnxq.num_layers": str(config.num_hidden_layers),
        "bert2onnxq.hidden_size": str(config.hidden_size),
        "bert2onnxq.num_heads": str(config.num_attention_heads),
        "bert2onnxq.exporter": f"torch.onnx (TorchScript) torch {torch.__version__}, transformers {transformers.__version__}",
    }
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "bert2onnxq"
    model.producer_version = __version__


def check_against_torch(onnx_path: Path, loaded: LoadedModel, texts=None) -> float:
    """Max |ONNX Runtime - PyTorch| over a padded batch of real sentences (sentence pairs)."""
    import onnxruntime as ort
    import torch

    texts = texts or [
        ("The film is a charming, funny and moving portrait.", "It was fun to watch."),
        ("A tedious mess.", "Nobody should see this movie, which drags on for two and a half hours."),
        ("Who wrote the novel?", "The novel was written by an author from Boston in 1851."),
    ]
    enc = loaded.tokenizer([a for a, _ in texts], [b for _, b in texts], padding=True, return_tensors="np")
    feeds = {name: enc[name].astype(np.int64) for name in INPUT_NAMES}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)
    with torch.no_grad():
        ref = loaded.model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    diffs = []
    for name, value in zip(HEADS[loaded.head][1], got):
        expected = ref[name].numpy()
        if loaded.head == "question-answering":  # padded positions are irrelevant and masked
            mask = feeds["attention_mask"].astype(bool)
            value, expected = value[mask], expected[mask]
        diffs.append(float(np.abs(value - expected).max()))
    return max(diffs)


def _looks_like_path(source: str) -> bool:
    """A hub id is `name` or `owner/name`; anything else the user typed is a path."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source or source.endswith(".onnx")


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def read_metadata(model) -> dict:
    """The bert2onnxq.* metadata of an ONNX ModelProto as a dict (keys without the prefix)."""
    return {p.key.removeprefix("bert2onnxq."): p.value for p in model.metadata_props if p.key.startswith("bert2onnxq.")}


__all__ = ["export", "load_hf_model", "read_metadata", "check_against_torch", "OPSET", "INPUT_NAMES", "HEADS"]
