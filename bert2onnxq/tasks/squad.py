"""SQuAD v1.1: load the JSON (or the HF hub), encode HF-style windows, n-best post-processing, official scores."""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from bert2onnxq.errors import BadInput
from bert2onnxq.tasks.base import (
    Encoded,
    Task,
    check_limit,
    check_split,
    existing_file,
    hub_split,
    require_fast,
    tokenizer_inputs,
)


@dataclass
class SquadExample:
    id: str
    question: str
    context: str
    answers: list[str]
    answer_starts: list[int] = field(default_factory=list)
    title: str = ""


class SquadTask(Task):
    """Extractive QA on SQuAD v1.1: one example per question, one or more windows (features) per example."""

    name = "squad"
    head = "question-answering"
    num_labels = None
    primary_metric = "f1"
    default_max_length = 384

    def load_examples(self, data_dir=None, data_file=None, split="dev", limit=None) -> list[SquadExample]:
        """From data_file (SQuAD JSON), else from the hub. data_dir is not used: SQuAD is one file."""
        check_split(split)
        check_limit(limit)
        if data_file is None:
            return self._load_hub(split, limit)
        path = existing_file(data_file, "SQuAD file")
        try:
            with open(path, encoding="utf-8") as f:
                dataset = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadInput(f"{path} is not valid JSON ({exc}); pass a SQuAD v1.1 json file") from None
        examples = examples_from_json(dataset, str(path), limit)
        if not examples:
            raise BadInput(f"{path} holds no questions; pass a SQuAD v1.1 json file")
        unanswered = [e.id for e in examples if not e.answers]
        if unanswered and split == "dev":  # the official v1.1 script cannot score them (SQuAD v2's unanswerable ones)
            raise BadInput(f"{path}: {len(unanswered)} of {len(examples)} questions have no answers (first: id "
                           f"{unanswered[0]}); SQuAD v1.1 scores only answered questions: is this SQuAD v2? Remove them")
        return examples

    def _load_hub(self, split: str, limit: int | None) -> list[SquadExample]:
        hf_split = ("validation" if split == "dev" else "train") + (f"[:{limit}]" if limit else "")
        rows = hub_split("rajpurkar/squad", None, hf_split, "pass --data-file with a SQuAD v1.1 json")
        return [SquadExample(r["id"], r["question"], r["context"], list(r["answers"]["text"]),
                             list(r["answers"]["answer_start"]), r["title"]) for r in rows]

    def encode(self, examples, tokenizer, max_length=None, doc_stride=128) -> Encoded:
        """HF run_qa windows: doc_stride is the token overlap between consecutive windows of a context."""
        require_fast(tokenizer)  # offsets and sequence ids only exist on fast tokenizers
        max_length = max_length or self.default_max_length
        try:
            enc = tokenizer([e.question.lstrip() for e in examples], [e.context for e in examples],
                            truncation="only_second", max_length=max_length, stride=doc_stride,
                            return_overflowing_tokens=True, return_offsets_mapping=True, padding=False)
        except Exception as exc:  # the Rust tokenizer raises plain Exceptions for stride/length conflicts
            raise BadInput(f"cannot split SQuAD contexts into windows of {max_length} tokens with doc stride "
                           f"{doc_stride} ({exc}); use a smaller --doc-stride or a larger --max-length") from None
        n = len(enc["input_ids"])
        features = [tokenizer_inputs(enc, i) for i in range(n)]
        example_ids = [int(k) for k in enc["overflow_to_sample_mapping"]]
        extra = {
            "offsets": [np.asarray(enc["offset_mapping"][i], dtype=np.int64).reshape(-1, 2) for i in range(n)],
            # sequence id 1 marks context tokens: the only ones an answer may start or end on
            "context_mask": [np.array([s == 1 for s in enc.sequence_ids(i)], dtype=bool) for i in range(n)],
            "contexts": [e.context for e in examples],
        }
        return Encoded(features, example_ids, extra)

    def predict(self, encoded: Encoded, outputs, n_best=20, max_answer_length=30) -> list[str]:
        """Best span text per example: top n_best starts x ends per window, highest start+end over all windows."""
        contexts = encoded.extra["contexts"]
        best_score = [None] * len(contexts)
        best_text = [""] * len(contexts)  # no valid span anywhere -> empty answer, as HF does
        for f, ex in enumerate(encoded.example_ids):
            offsets, ctx = encoded.extra["offsets"][f], encoded.extra["context_mask"][f]
            start = np.ravel(outputs["start_logits"][f])[: len(offsets)]
            end = np.ravel(outputs["end_logits"][f])[: len(offsets)]
            # HF picks the top n_best over ALL tokens first, then drops invalid spans
            starts = np.argsort(start)[-1: -n_best - 1: -1]
            ends = np.argsort(end)[-1: -n_best - 1: -1]
            scores = start[starts][:, None] + end[ends][None, :]
            length = ends[None, :] - starts[:, None] + 1
            valid = ctx[starts][:, None] & ctx[ends][None, :] & (length >= 1) & (length <= max_answer_length)
            if not valid.any():
                continue
            # first maximum in start-major order, like HF's stable sort over the same candidate list
            k = int(np.argmax(np.where(valid, scores, -np.inf)))
            s, e = starts[k // len(ends)], ends[k % len(ends)]
            score = scores.flat[k]
            if best_score[ex] is None or score > best_score[ex]:
                best_score[ex] = score
                best_text[ex] = contexts[ex][offsets[s][0]: offsets[e][1]]
        return best_text

    def reference(self, examples) -> list[list[str]]:
        return [list(e.answers) for e in examples]

    def predictions_text(self, examples, predictions) -> str:
        """What the official evaluate-v1.1.py reads: {question id: answer text}."""
        return json.dumps({e.id: p for e, p in zip(examples, predictions)}, ensure_ascii=False, indent=1)

    def metrics(self, examples, predictions) -> dict[str, float]:
        if len(examples) != len(predictions):
            raise ValueError(f"{len(examples)} questions but {len(predictions)} predictions")
        return _aggregate(zip(predictions, self.reference(examples)), len(examples))


def examples_from_json(dataset, where: str, limit: int | None = None) -> list[SquadExample]:
    """Questions of a SQuAD v1.1 dict ({"data": [articles]}) in file order."""
    examples = []
    try:
        for article in dataset["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    answers = qa.get("answers", [])
                    examples.append(SquadExample(qa["id"], qa["question"], paragraph["context"],
                                                 [a["text"] for a in answers],
                                                 [a.get("answer_start", -1) for a in answers],
                                                 article.get("title", "")))
                    if limit is not None and len(examples) >= limit:
                        return examples
    except (KeyError, TypeError) as exc:
        raise BadInput(f"{where} is not SQuAD v1.1 JSON (missing or wrong field near {exc}); "
                       "pass a file shaped {'data': [{'paragraphs': [{'context', 'qas'}]}]}") from None
    return examples


# -- official evaluate-v1.1.py scoring ---------------------------------------------------------------------
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower, drop punctuation, drop articles a/an/the, squeeze whitespace (official v1.1 order)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(prediction: str, ground_truth: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_tokens)
    recall = 1.0 * num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def _aggregate(pairs, total: int) -> dict[str, float]:
    """Sum per question in order, then scale, exactly as the official script does (same floats)."""
    exact_match = f1 = 0
    for prediction, gold in pairs:
        if prediction is None or not gold:  # unanswered (or unanswerable) questions score 0
            continue
        exact_match += max(exact_match_score(prediction, g) for g in gold)
        f1 += max(f1_score(prediction, g) for g in gold)
    if total == 0:
        raise BadInput("no questions to score; pass a non-empty SQuAD file")
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def squad_scores(dataset_json: dict, predictions: dict[str, str]) -> dict[str, float]:
    """Score {question id: answer text} against a SQuAD v1.1 JSON like evaluate-v1.1.py (missing ids score 0)."""
    examples = examples_from_json(dataset_json, "dataset")
    return _aggregate(((predictions.get(e.id), e.answers) for e in examples), len(examples))
