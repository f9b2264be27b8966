"""GLUE tasks: read classic `glue_data` TSVs (or the HF hub), encode, predict, score."""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bert2onnxq.errors import BadInput
from bert2onnxq.tasks.base import (
    Encoded,
    Task,
    check_limit,
    check_split,
    existing_file,
    hub_split,
    percent,
    tokenizer_inputs,
)

GLUE_DIR_ENV = "GLUE_DIR"
NLI2 = {"entailment": 0, "not_entailment": 1}
NLI3 = {"entailment": 0, "neutral": 1, "contradiction": 2}


@dataclass(frozen=True)
class GlueSpec:
    """Where a task's data lives and how its columns read. Column indices may be negative (from the end)."""

    folder: str
    dev_file: str
    hf_config: str
    hf_dev_split: str
    hf_columns: tuple[str, str | None]
    header: bool
    text_a: int
    text_b: int | None
    label: int
    labels: dict | None  # string label -> id; None: the file holds the id (or a float for stsb)
    num_labels: int
    metric: str
    skip_malformed: bool = False  # QQP train has rows with missing fields; HF skips them too
    label_names: tuple[str, ...] = ()  # the names of ids 0, 1, ... (HF glue dataset features)


SPECS = {
    "sst2": GlueSpec("SST-2", "dev.tsv", "sst2", "validation", ("sentence", None), True, 0, None, 1, None, 2,
                     "accuracy", label_names=("negative", "positive")),
    "cola": GlueSpec("CoLA", "dev.tsv", "cola", "validation", ("sentence", None), False, 3, None, 1, None, 2,
                     "matthews_correlation", label_names=("unacceptable", "acceptable")),
    "mrpc": GlueSpec("MRPC", "dev.tsv", "mrpc", "validation", ("sentence1", "sentence2"), True, 3, 4, 0, None, 2,
                     "f1", label_names=("not_equivalent", "equivalent")),
    "stsb": GlueSpec("STS-B", "dev.tsv", "stsb", "validation", ("sentence1", "sentence2"), True, 7, 8, -1, None, 1,
                     "pearson"),
    "qnli": GlueSpec("QNLI", "dev.tsv", "qnli", "validation", ("question", "sentence"), True, 1, 2, -1, NLI2, 2,
                     "accuracy", label_names=("entailment", "not_entailment")),
    "rte": GlueSpec("RTE", "dev.tsv", "rte", "validation", ("sentence1", "sentence2"), True, 1, 2, -1, NLI2, 2,
                    "accuracy", label_names=("entailment", "not_entailment")),
    "wnli": GlueSpec("WNLI", "dev.tsv", "wnli", "validation", ("sentence1", "sentence2"), True, 1, 2, -1, None, 2,
                     "accuracy", label_names=("not_entailment", "entailment")),
    "mnli": GlueSpec("MNLI", "dev_matched.tsv", "mnli", "validation_matched", ("premise", "hypothesis"), True, 8, 9,
                     -1, NLI3, 3, "accuracy", label_names=("entailment", "neutral", "contradiction")),
    "mnli-mm": GlueSpec("MNLI", "dev_mismatched.tsv", "mnli", "validation_mismatched", ("premise", "hypothesis"),
                        True, 8, 9, -1, NLI3, 3, "accuracy", label_names=("entailment", "neutral", "contradiction")),
    "qqp": GlueSpec("QQP", "dev.tsv", "qqp", "validation", ("question1", "question2"), True, 3, 4, 5, None, 2, "f1",
                    skip_malformed=True, label_names=("not_duplicate", "duplicate")),
}


@dataclass
class GlueExample:
    text_a: str
    text_b: str | None
    label: int | float
    id: int


class GlueTask(Task):
    """A GLUE task (classification, or regression for stsb) described by a GlueSpec."""

    default_max_length = 128

    def __init__(self, name: str):
        self.name = name
        self.spec = SPECS[name]
        self.head = "regression" if name == "stsb" else "classification"
        self.num_labels = self.spec.num_labels
        self.primary_metric = self.spec.metric

    # -- loading -----------------------------------------------------------------------------------------
    def load_examples(self, data_dir=None, data_file=None, split="dev", limit=None) -> list[GlueExample]:
        check_split(split)
        check_limit(limit)
        if data_file is not None:
            examples = self._read_tsv(existing_file(data_file, "data file"), limit)
        elif data_dir is not None or os.environ.get(GLUE_DIR_ENV):
            examples = self._read_tsv(self._find_file(Path(data_dir or os.environ[GLUE_DIR_ENV]), split), limit)
        else:
            examples = self._load_hub(split, limit)
        if not examples:
            raise BadInput(f"no {self.name} examples found in the {split} data; check the file is not empty")
        return examples

    def _find_file(self, data_dir: Path, split: str) -> Path:
        """The task's TSV under a glue_data root, or directly in the task folder itself."""
        name = self.spec.dev_file if split == "dev" else "train.tsv"
        data_dir = data_dir.expanduser()
        if not data_dir.is_dir():
            raise BadInput(f"data dir {data_dir} does not exist; pass --data-dir pointing to a glue_data folder")
        candidates = [data_dir / self.spec.folder / name]
        if data_dir.name.lower() == self.spec.folder.lower():  # the task folder was given directly
            candidates.append(data_dir / name)
        for path in candidates:
            if path.is_file():
                return path
        raise BadInput(f"{candidates[0]} not found: {data_dir} has no {self.name} {split} data; pass --data-dir "
                       f"pointing to a glue_data folder (with {self.spec.folder}/{name}) or --data-file")

    def _read_tsv(self, path: Path, limit: int | None) -> list[GlueExample]:
        s = self.spec
        # a label counted from the end (-1) must still sit after the text columns
        need = max(c for c in (s.text_a, s.text_b, s.label) if c is not None) + 1 + (s.label < 0)
        examples = []
        # utf-8-sig drops MRPC's BOM; QUOTE_NONE because sentences hold bare '"' characters
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            for lineno, row in enumerate(rows, start=1):
                if lineno == 1 and s.header:
                    continue
                if len(row) < need:
                    if s.skip_malformed or not any(row):  # blank lines carry nothing
                        continue
                    raise BadInput(f"{path}:{lineno} has {len(row)} tab-separated fields, {self.name} needs at "
                                   f"least {need}; is this the {self.name} file?")
                label = self._parse_label(row[s.label], f"{path}:{lineno}")
                text_b = row[s.text_b] if s.text_b is not None else None
                examples.append(GlueExample(row[s.text_a], text_b, label, len(examples)))
                if limit is not None and len(examples) >= limit:
                    break
        return examples

    def _parse_label(self, raw: str, where: str):
        s = self.spec
        try:
            if self.head == "regression":
                return float(raw)
            label = s.labels[raw] if s.labels is not None else int(raw)
            if not 0 <= label < s.num_labels:
                raise ValueError(raw)
            return label
        except (KeyError, ValueError):
            if self.head == "regression":
                valid = "a number"
            else:
                valid = ", ".join(s.labels) if s.labels else f"0..{s.num_labels - 1}"
            raise BadInput(f"{where}: label {raw!r} is not valid for {self.name} (expected {valid}); "
                           f"is this the {self.name} file?") from None

    def _load_hub(self, split: str, limit: int | None) -> list[GlueExample]:
        s = self.spec
        hf_split = s.hf_dev_split if split == "dev" else "train"
        if limit is not None:
            hf_split += f"[:{limit}]"
        rows = hub_split("nyu-mll/glue", s.hf_config, hf_split,
                         f"pass --data-dir (a glue_data folder) or set {GLUE_DIR_ENV}")
        a_key, b_key = s.hf_columns
        cast = float if self.head == "regression" else int
        return [GlueExample(r[a_key], r[b_key] if b_key else None, cast(r["label"]), i) for i, r in enumerate(rows)]

    # -- model side --------------------------------------------------------------------------------------
    def encode(self, examples, tokenizer, max_length=None, doc_stride=128) -> Encoded:
        """One unpadded feature per example; pairs are encoded as pairs. doc_stride is unused for GLUE."""
        max_length = max_length or self.default_max_length
        texts_a = [e.text_a for e in examples]
        texts_b = [e.text_b for e in examples] if self.spec.text_b is not None else None
        enc = tokenizer(texts_a, texts_b, truncation="longest_first", max_length=max_length, padding=False)
        features = [tokenizer_inputs(enc, i) for i in range(len(examples))]
        return Encoded(features, list(range(len(examples))), {})

    def predict(self, encoded: Encoded, outputs, n_best=20, max_answer_length=30) -> list:
        logits = _logits(outputs)
        if self.head == "regression":
            return [float(np.ravel(x)[0]) for x in logits]
        return [int(np.argmax(np.ravel(x))) for x in logits]

    def reference(self, examples) -> list:
        return [e.label for e in examples]

    def predictions_text(self, examples, predictions) -> str:
        """The GLUE submission TSV: `index<TAB>prediction`, labels written as the task's files write them."""
        names = {i: name for name, i in self.spec.labels.items()} if self.spec.labels else None
        rows = ["index\tprediction"]
        for e, p in zip(examples, predictions):
            rows.append(f"{e.id}\t{names[p] if names else (f'{p:.3f}' if self.head == 'regression' else p)}")
        return "\n".join(rows) + "\n"

    def metrics(self, examples, predictions) -> dict[str, float]:
        return glue_metrics(self.name, self.reference(examples), predictions)


SYNONYMS = {"neg": "negative", "pos": "positive", "not_paraphrase": "not_equivalent", "paraphrase": "equivalent",
            "contradictory": "contradiction", "entails": "entailment", "non_entailment": "not_entailment",
            "not_acceptable": "unacceptable", "duplicate_question": "duplicate"}


def _canonical(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    return SYNONYMS.get(key, key)


def label_mapping(task: GlueTask, id2label: dict) -> tuple[dict[int, int] | None, str]:
    """Model id -> task id, matched by the model's label names; (None, why) when the names are not the task's.

    Unnamed labels (LABEL_0, 0, ...) cannot be checked and are taken in the task's order."""
    names = {int(k): v for k, v in id2label.items()}
    task_ids = {n: i for i, n in enumerate(task.spec.label_names)}
    if all(re.fullmatch(r"(label_)?\d+", str(v).strip().lower()) for v in names.values()):
        return {i: i for i in names}, "by position (the model's labels are unnamed)"
    mapped = {i: task_ids.get(_canonical(v)) for i, v in names.items()}
    if None in mapped.values() or len(set(mapped.values())) != len(task_ids):
        return None, (f"the model's labels ({', '.join(str(names[i]) for i in sorted(names))}) are not task "
                      f"{task.name}'s ({', '.join(task.spec.label_names)})")
    identity = all(i == j for i, j in mapped.items())
    return mapped, "by name" + ("" if identity else " (the model's label order differs from the task's: remapped)")


def _logits(outputs) -> list:
    """outputs['logits'], or the only output when the model names it differently."""
    if "logits" in outputs:
        return outputs["logits"]
    if len(outputs) == 1:
        return next(iter(outputs.values()))
    raise BadInput(f"model outputs {sorted(outputs)} have no 'logits'; export a sequence-classification head")


def glue_metrics(name: str, labels, predictions) -> dict[str, float]:
    """GLUE metrics in percent, as the HF `glue` metric computes them."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    if name == "stsb":
        from scipy.stats import pearsonr, spearmanr

        return {"pearson": percent(pearsonr(predictions, labels)[0]),
                "spearmanr": percent(spearmanr(predictions, labels)[0])}
    if name == "cola":
        from sklearn.metrics import matthews_corrcoef

        return {"matthews_correlation": percent(matthews_corrcoef(labels, predictions))}
    result = {"accuracy": percent(np.mean(np.asarray(labels) == np.asarray(predictions)))}
    if name in ("mrpc", "qqp"):
        from sklearn.metrics import f1_score

        result["f1"] = percent(f1_score(labels, predictions, pos_label=1))
    return result
