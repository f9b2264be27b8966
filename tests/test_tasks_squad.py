"""SQuAD v1.1: loading, HF-style windows, n-best post-processing, official EM/F1."""

import json
import re
import string
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bert2onnxq.errors import BadInput
from bert2onnxq.tasks import SquadExample, get_task, normalize_answer, squad_scores

SHARED = Path(__file__).parents[1].parent / "shared"


# -- independent copy of the official evaluate-v1.1.py (rajpurkar/SQuAD-explorer), kept verbatim in spirit --
def official_normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""
    def remove_articles(text):
        return re.sub(r'\b(a|an|the)\b', ' ', text)

    def white_space_fix(text):
        return ' '.join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return ''.join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def official_f1_score(prediction, ground_truth):
    prediction_tokens = official_normalize_answer(prediction).split()
    ground_truth_tokens = official_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def official_exact_match_score(prediction, ground_truth):
    return (official_normalize_answer(prediction) == official_normalize_answer(ground_truth))


def official_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    scores_for_ground_truths = []
    for ground_truth in ground_truths:
        score = metric_fn(prediction, ground_truth)
        scores_for_ground_truths.append(score)
    return max(scores_for_ground_truths)


def official_evaluate(dataset, predictions):
    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article['paragraphs']:
            for qa in paragraph['qas']:
                total += 1
                if qa['id'] not in predictions:
                    message = 'Unanswered question ' + qa['id'] + ' will receive score 0.'
                    print(message, file=sys.stderr)
                    continue
                ground_truths = list(map(lambda x: x['text'], qa['answers']))
                prediction = predictions[qa['id']]
                exact_match += official_metric_max_over_ground_truths(
                    official_exact_match_score, prediction, ground_truths)
                f1 += official_metric_max_over_ground_truths(
                    official_f1_score, prediction, ground_truths)

    exact_match = 100.0 * exact_match / total
    f1 = 100.0 * f1 / total

    return {'exact_match': exact_match, 'f1': f1}


# -- fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def heldout_path():
    path = SHARED / "data" / "squad" / "dev-v1.1-heldout12.json"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="module")
def heldout(heldout_path):
    return get_task("squad").load_examples(data_file=heldout_path)




THREE = {"version": "1.1", "data": [{"title": "T", "paragraphs": [{
    "context": "The Denver Broncos won Super Bowl 50 in Santa Clara, California, for its golden anniversary.",
    "qas": [
        {"id": "q1", "question": "Who won?", "answers": [{"answer_start": 4, "text": "Denver Broncos"},
                                                         {"answer_start": 0, "text": "The Denver Broncos"}]},
        {"id": "q2", "question": "Where?", "answers": [{"answer_start": 40, "text": "Santa Clara, California"}]},
        {"id": "q3", "question": "Which?", "answers": [{"answer_start": 73, "text": "golden anniversary"},
                                                       {"answer_start": 73, "text": "gold"}]},
    ]}]}]}


# -- scoring -----------------------------------------------------------------------------------------------
def test_normalize_answer():
    assert normalize_answer("The  Quick, brown-fox ate an apple!") == "quick brownfox ate apple"
    assert normalize_answer("Theory") == "theory"  # articles only as whole words


def test_three_questions_by_hand():
    # q1: exact after normalisation -> EM 1, F1 1
    # q2: {santa, clara} vs {santa, clara, california}: P=1, R=2/3 -> F1 0.8
    # q3: "anniversary party" vs "golden anniversary": P=R=1/2 -> F1 0.5 (vs "gold": 0)
    predictions = {"q1": "the Denver Broncos!", "q2": "Santa Clara", "q3": "an anniversary party"}
    scores = squad_scores(THREE, predictions)
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * 2.3 / 3)
    assert scores == official_evaluate(THREE["data"], predictions)
    del predictions["q3"]  # unanswered questions score 0 but still count
    assert squad_scores(THREE, predictions)["f1"] == pytest.approx(60.0)


def test_task_metrics_match_squad_scores():
    task = get_task("squad")
    examples = [SquadExample(qa["id"], qa["question"], "", [a["text"] for a in qa["answers"]])
                for qa in THREE["data"][0]["paragraphs"][0]["qas"]]
    predictions = ["Denver Broncos", "California", "gold"]
    expected = squad_scores(THREE, dict(zip(["q1", "q2", "q3"], predictions)))
    assert task.metrics(examples, predictions) == expected
    assert task.reference(examples)[2] == ["golden anniversary", "gold"]


def test_shipped_predictions_equal_official_script(heldout_path):
    predictions_path = SHARED / "models" / "minilm-l6-squad" / "heldout12_predictions.json"
    if not predictions_path.is_file():
        pytest.skip(f"{predictions_path} not present")
    dataset = json.loads(heldout_path.read_text(encoding="utf-8"))
    predictions = json.loads(predictions_path.read_text(encoding="utf-8"))
    ours = squad_scores(dataset, predictions)
    assert ours == official_evaluate(dataset["data"], predictions)  # exactly, not approximately
    assert ours["exact_match"] == pytest.approx(48.957907642010625)  # MODELS.md / eval_results.json


# -- loading -----------------------------------------------------------------------------------------------
def test_heldout_rows(heldout):
    assert len(heldout) == 2447
    assert sum(len(e.answers) for e in heldout) == 8622
    assert len({e.id for e in heldout}) == 2447
    first = heldout[0]
    assert first.title == "Yuan_dynasty" and first.id == "57285ed5ff5b5019007da1b6"
    assert all(e.context[s: s + len(t)] == t for e in heldout for t, s in zip(e.answers, e.answer_starts))


def test_limit_and_errors(heldout_path, tmp_path, monkeypatch):
    task = get_task("squad")
    assert [e.id for e in task.load_examples(data_file=heldout_path, limit=3)] == [
        "57285ed5ff5b5019007da1b6", "57285ed5ff5b5019007da1b7", "57285ed5ff5b5019007da1b8"]
    with pytest.raises(BadInput, match="does not exist"):
        task.load_examples(data_file=tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BadInput, match="not valid JSON"):
        task.load_examples(data_file=tmp_path / "bad.json")
    (tmp_path / "shape.json").write_text('{"data": [{"title": "x"}]}')
    with pytest.raises(BadInput, match="not SQuAD v1.1 JSON.*paragraphs"):
        task.load_examples(data_file=tmp_path / "shape.json")
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline")))
    with pytest.raises(BadInput, match="rajpurkar/squad.*--data-file"):
        task.load_examples()


# -- encoding ------------------------------------------------------------------------------------------------
def test_encode_heldout_windows_map_back(heldout, tokenizer):
    task = get_task("squad")
    enc = task.encode(heldout, tokenizer)  # max_length 384, doc stride 128
    assert len(enc.features) >= 2447 and len(enc.features) == len(enc.example_ids)
    assert sorted(set(enc.example_ids)) == list(range(2447)) and enc.example_ids == sorted(enc.example_ids)
    assert max(len(f["input_ids"]) for f in enc.features) <= 384
    checked = 0
    for f, ex_id in enumerate(enc.example_ids):
        if ex_id >= 200:
            break
        ex, offsets, ctx = heldout[ex_id], enc.extra["offsets"][f], enc.extra["context_mask"][f]
        assert f_types_ok(enc.features[f], ctx)
        first, last = np.flatnonzero(ctx)[[0, -1]]
        for text, start in zip(ex.answers, ex.answer_starts):
            end = start + len(text)
            if not (offsets[first][0] <= start and end <= offsets[last][1]):
                continue  # the answer is not inside this window
            s = first + np.flatnonzero(offsets[first: last + 1, 1] > start)[0]
            e = first + np.flatnonzero(offsets[first: last + 1, 0] < end)[-1]
            span = ex.context[offsets[s][0]: offsets[e][1]]
            assert span == text, (ex.id, text, span)  # holds for all 597 answers here
            checked += 1
    assert checked > 500


def f_types_ok(feature, ctx) -> bool:
    """Context tokens are the segment-1 tokens minus the final [SEP]."""
    types = feature["token_type_ids"].astype(bool)
    return bool((types[:-1] == ctx[:-1]).all() and not ctx[-1]) and feature["input_ids"].dtype == np.int64


def test_encode_rejects_impossible_stride(tokenizer):
    ex = SquadExample("x", "Who?", "word " * 100, ["word"], [0])
    with pytest.raises(BadInput, match="doc stride"):
        get_task("squad").encode([ex], tokenizer, max_length=32, doc_stride=64)


# -- post-processing on hand-made logits -----------------------------------------------------------------------
CONTEXT = ("Alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
           "quebec romeo sierra tango uniform victor whiskey xray yankee zulu.")


@pytest.fixture(scope="module")
def windows(tokenizer):
    example = SquadExample("w", "Which word?", CONTEXT, ["tango"], [CONTEXT.index("tango")])
    enc = get_task("squad").encode([example], tokenizer, max_length=24, doc_stride=8)
    assert len(enc.features) >= 3 and set(enc.example_ids) == {0}
    return enc


def _token(enc, f, word):
    """Index of the token in window f that starts at `word` in the context."""
    hits = np.flatnonzero((enc.extra["offsets"][f][:, 0] == CONTEXT.index(word)) & enc.extra["context_mask"][f])
    return int(hits[0]) if len(hits) else None


def _flat(enc, value=0.0):
    return {k: [np.full(len(f["input_ids"]), value, np.float32) for f in enc.features]
            for k in ("start_logits", "end_logits")}


def test_best_span_in_second_window(windows):
    # windows: 0 = alpha..oscar, 1 = india..xray, 2 = romeo..zulu (overlaps of 8 tokens)
    out = _flat(windows)
    out["start_logits"][0][_token(windows, 0, "Alpha")] = 3.0
    out["end_logits"][0][_token(windows, 0, "bravo")] = 3.0
    assert _token(windows, 0, "papa") is None
    out["start_logits"][1][_token(windows, 1, "papa")] = 4.0  # only window 1 holds "papa quebec"
    out["end_logits"][1][_token(windows, 1, "quebec")] = 4.0
    assert get_task("squad").predict(windows, out) == ["papa quebec"]
    # "tango" sits in the overlap of windows 1 and 2: the higher-scoring window wins
    out["start_logits"][1][_token(windows, 1, "tango")] = 4.5
    out["end_logits"][1][_token(windows, 1, "tango")] = 4.5
    assert get_task("squad").predict(windows, out) == ["tango"]
    out["start_logits"][2][_token(windows, 2, "tango")] = 5.0
    out["end_logits"][2][_token(windows, 2, "uniform")] = 5.0
    assert get_task("squad").predict(windows, out) == ["tango uniform"]


def test_question_tokens_and_bad_spans_ignored(windows):
    out = _flat(windows, -10.0)
    question_token = 2  # [CLS] which word ? [SEP]: token 2 is "word", a question token
    assert not windows.extra["context_mask"][0][question_token]
    out["start_logits"][0][question_token] = 100.0
    out["end_logits"][0][0] = 100.0  # [CLS] is not context either
    out["start_logits"][0][_token(windows, 0, "charlie")] = 2.0
    out["end_logits"][0][_token(windows, 0, "delta")] = 2.0
    out["end_logits"][0][_token(windows, 0, "bravo")] = 9.0  # ends before the start: invalid
    assert get_task("squad").predict(windows, out) == ["charlie delta"]
    assert get_task("squad").predict(windows, out, max_answer_length=1) != ["charlie delta"]  # 2 tokens > 1


def test_no_valid_span_gives_empty_answer(windows):
    out = _flat(windows, -1.0)
    for x in out["start_logits"]:
        x[0] = 50.0  # only [CLS] in each top-1: nothing valid anywhere
    assert get_task("squad").predict(windows, out, n_best=1) == [""]
