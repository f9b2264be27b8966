"""What every task offers: the Task interface, the Encoded bundle, and shared helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bert2onnxq.errors import BadInput

FEATURE_KEYS = ("input_ids", "attention_mask", "token_type_ids")
SPLITS = ("dev", "train")


@dataclass
class Encoded:
    """Model inputs, one unpadded dict per feature, plus what post-processing needs."""

    features: list[dict[str, np.ndarray]]
    example_ids: list[int]
    extra: dict = field(default_factory=dict)


class Task:
    """One evaluation task: load examples, encode them, turn model outputs into metrics."""

    name: str
    head: str  # "classification" | "regression" | "question-answering"
    num_labels: int | None
    primary_metric: str
    default_max_length: int

    def load_examples(self, data_dir=None, data_file=None, split="dev", limit=None) -> list:
        raise NotImplementedError

    def encode(self, examples, tokenizer, max_length=None, doc_stride=128) -> Encoded:
        raise NotImplementedError

    def predict(self, encoded: Encoded, outputs: dict[str, list[np.ndarray]], n_best=20, max_answer_length=30) -> list:
        raise NotImplementedError

    def metrics(self, examples, predictions) -> dict[str, float]:
        raise NotImplementedError

    def reference(self, examples) -> list:
        raise NotImplementedError

    def predictions_text(self, examples, predictions) -> str:
        """The predictions in the task's submission format (SQuAD: {id: answer} JSON; GLUE: index/prediction TSV)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise BadInput(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")


CALIBRATION_SEED = 0
CALIBRATION_DRAW = f"shuffled train split, seed {CALIBRATION_SEED}"  # recorded in plans: replay draws the same


def calibration_order(n: int) -> list[int]:
    """The order train examples are drawn in for calibration (activation ranges, GPTQ's X^T X): a seeded
    shuffle of the whole split, not its first rows, because task files keep related examples together
    (SQuAD lists a paragraph's questions side by side: 128 in file order cover a handful of paragraphs).
    Accuracy search takes its train sample from the other end of this order, so it never scores what
    calibrated."""
    return np.random.default_rng(CALIBRATION_SEED).permutation(n).tolist()


def check_limit(limit) -> None:
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise BadInput(f"limit must be a positive integer, got {limit!r}")


def existing_file(path, what: str) -> Path:
    """The path as a Path, or a BadInput saying it is missing."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BadInput(f"{what} {path} does not exist or is not a file; check the path")
    return path


def hub_split(path: str, config: str | None, split: str, hint: str):
    """Load a split from the Hugging Face hub; any failure (offline, no `datasets`) becomes BadInput."""
    from bert2onnxq.hub import hub_reachable

    offline = not hub_reachable()  # then only the local datasets cache, without minutes of retries
    try:
        import datasets  # lazy: slow to import and only needed without local data

        if offline:  # the hub libraries read the variable when first imported, maybe before us
            import huggingface_hub.constants

            huggingface_hub.constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
        args = (path, config) if config else (path,)
        return datasets.load_dataset(*args, split=split)
    except Exception as exc:  # offline shows up as many different exception types
        if offline:
            raise BadInput(f"cannot reach the Hugging Face hub and {path} ({config or 'default'}, {split}) is not in "
                           f"the local cache; {hint}") from None
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise BadInput(f"could not load {path} ({config or 'default'}, {split}) from the Hugging Face hub "
                       f"({reason}); {hint}") from exc


def tokenizer_inputs(enc, i: int) -> dict[str, np.ndarray]:
    """Feature i of a batch encoding as int64 arrays; token_type_ids are zeros if the tokenizer has none."""
    ids = np.asarray(enc["input_ids"][i], dtype=np.int64)
    mask = np.asarray(enc["attention_mask"][i], dtype=np.int64) if "attention_mask" in enc else np.ones_like(ids)
    types = (np.asarray(enc["token_type_ids"][i], dtype=np.int64) if "token_type_ids" in enc
             else np.zeros_like(ids))
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def require_fast(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise BadInput(f"{type(tokenizer).__name__} is a slow tokenizer; load one with a tokenizer.json "
                       "(AutoTokenizer.from_pretrained(..., use_fast=True))")


def percent(value) -> float:
    return float(value) * 100.0
