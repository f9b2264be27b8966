"""GLUE loading (classic glue_data TSVs), encoding, prediction and metrics."""

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bert2onnxq.errors import BadInput
from bert2onnxq.tasks import GLUE_DIR_ENV, TASK_NAMES, Encoded, GlueExample, get_task, glue_metrics

SHARED = Path(__file__).parents[1].parent / "shared"


@pytest.fixture(scope="module")
def glue_dir():
    path = SHARED / "data" / "glue"
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path




@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(GLUE_DIR_ENV, raising=False)


# -- registry ----------------------------------------------------------------------------------------------
def test_task_names_and_attributes():
    assert TASK_NAMES == ("sst2", "mrpc", "cola", "stsb", "qnli", "rte", "wnli", "mnli", "mnli-mm", "qqp", "squad")
    expected = {"sst2": ("classification", 2, "accuracy"), "cola": ("classification", 2, "matthews_correlation"),
                "stsb": ("regression", 1, "pearson"), "mnli": ("classification", 3, "accuracy"),
                "mnli-mm": ("classification", 3, "accuracy"), "squad": ("question-answering", None, "f1")}
    for name, (head, num_labels, metric) in expected.items():
        task = get_task(name)
        assert (task.name, task.head, task.num_labels, task.primary_metric) == (name, head, num_labels, metric)
    assert get_task("sst2").default_max_length == 128 and get_task("squad").default_max_length == 384
    assert get_task("SST-2").name == "sst2" and get_task("STS-B").name == "stsb"


def test_unknown_task_lists_valid_names():
    with pytest.raises(BadInput, match="unknown task 'sst3'.*sst2, mrpc.*squad"):
        get_task("sst3")


# -- loading the shared glue_data ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, rows, balance", [
    ("sst2", 872, {1: 444, 0: 428}),
    ("cola", 1043, {1: 721, 0: 322}),
    ("mrpc", 408, {1: 279, 0: 129}),
    ("qnli", 5463, {1: 2761, 0: 2702}),  # not_entailment=1, entailment=0 (HF glue ids)
    ("wnli", 71, {0: 40, 1: 31}),
])
def test_dev_rows_and_label_balance(glue_dir, name, rows, balance):
    examples = get_task(name).load_examples(data_dir=glue_dir)
    assert len(examples) == rows
    assert Counter(e.label for e in examples) == balance
    assert [e.id for e in examples] == list(range(rows))
    assert all(isinstance(e.label, int) for e in examples)


def test_cola_has_no_header_and_no_final_newline(glue_dir):
    examples = get_task("cola").load_examples(data_dir=glue_dir)
    assert examples[0].text_a == "The sailors rode the breeze clear of the rocks."
    assert examples[-1].text_a == "John talked to Bill about himself."  # last line has no newline
    assert all(e.text_b is None for e in examples)


def test_mrpc_bom_stripped_and_quotes_literal(glue_dir):
    examples = get_task("mrpc").load_examples(data_dir=glue_dir)
    assert not any("\ufeff" in e.text_a or "\ufeff" in e.text_b or "Quality" == e.text_a for e in examples)
    first = examples[0]
    assert first.label == 1 and first.text_a.startswith("He said the foodservice pie business")
    assert first.text_b.startswith('" The foodservice pie business')  # QUOTE_NONE keeps the bare quote


def test_stsb_float_scores(glue_dir):
    examples = get_task("stsb").load_examples(data_dir=glue_dir)
    assert len(examples) == 1500
    assert all(isinstance(e.label, float) and 0.0 <= e.label <= 5.0 for e in examples)
    assert (examples[0].text_a, examples[0].text_b, examples[0].label) == (
        "A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0)


def test_train_split_and_limit(glue_dir):
    task = get_task("sst2")
    assert len(task.load_examples(data_dir=glue_dir, split="train")) == 67349
    first = task.load_examples(data_dir=glue_dir, limit=5)
    assert [e.label for e in first] == [1, 0, 1, 1, 0]
    assert first[0].text_a == "it 's a charming and often affecting journey . "  # trailing space kept


def test_glue_dir_env_task_folder_and_data_file(glue_dir, monkeypatch):
    task = get_task("wnli")
    monkeypatch.setenv(GLUE_DIR_ENV, str(glue_dir))
    assert len(task.load_examples()) == 71
    assert len(task.load_examples(data_dir=glue_dir / "WNLI")) == 71  # the task folder itself
    assert len(task.load_examples(data_file=glue_dir / "WNLI" / "train.tsv")) == 635  # file beats dir


# -- other layouts (RTE / MNLI / QQP are not in shared) -------------------------------------------------------
def _write(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(row) for row in lines) + "\n", encoding="utf-8")
    return path


def test_rte_mnli_qqp_layouts(tmp_path):
    _write(tmp_path / "RTE" / "dev.tsv", [["index", "sentence1", "sentence2", "label"],
                                          ["0", "A dog.", "An animal.", "entailment"],
                                          ["1", "A cat.", "A dog.", "not_entailment"]])
    mnli_head = ["index", "promptID", "pairID", "genre", "s1bp", "s2bp", "s1p", "s2p", "sentence1", "sentence2",
                 "label1", "label2", "label3", "label4", "label5", "gold_label"]
    row = ["0", "1", "1e", "fiction", "(", "(", "(", "(", "Premise.", "Hypothesis."]
    _write(tmp_path / "MNLI" / "dev_matched.tsv", [mnli_head, row + ["neutral"] * 5 + ["contradiction"]])
    _write(tmp_path / "MNLI" / "dev_mismatched.tsv", [mnli_head, row + ["neutral"] * 6])
    _write(tmp_path / "MNLI" / "train.tsv", [mnli_head[:11] + ["gold_label"], row + ["entailment"] * 2])
    _write(tmp_path / "QQP" / "train.tsv", [["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                                            ["0", "1", "2", "Why?", "How come?", "1"],
                                            ["1", "3", "4", "broken row"],
                                            ["2", "5", "6", "Who?", "What?", "0"]])
    rte = get_task("rte").load_examples(data_dir=tmp_path)
    assert [(e.text_a, e.text_b, e.label) for e in rte] == [("A dog.", "An animal.", 0), ("A cat.", "A dog.", 1)]
    assert get_task("mnli").load_examples(data_dir=tmp_path)[0].label == 2  # gold label is the last column
    assert get_task("mnli-mm").load_examples(data_dir=tmp_path)[0].label == 1
    mnli_train = get_task("mnli").load_examples(data_dir=tmp_path, split="train")
    assert (mnli_train[0].text_a, mnli_train[0].text_b, mnli_train[0].label) == ("Premise.", "Hypothesis.", 0)
    qqp = get_task("qqp").load_examples(data_dir=tmp_path, split="train")
    assert [(e.text_a, e.label, e.id) for e in qqp] == [("Why?", 1, 0), ("Who?", 0, 1)]  # malformed row skipped


# -- user errors -------------------------------------------------------------------------------------------
def test_empty_or_missing_data_dir(tmp_path):
    with pytest.raises(BadInput, match=r"no sst2 dev data.*--data-dir"):
        get_task("sst2").load_examples(data_dir=tmp_path)
    with pytest.raises(BadInput, match="does not exist"):
        get_task("sst2").load_examples(data_dir=tmp_path / "nope")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        get_task("mrpc").load_examples(data_file=tmp_path / "dev.tsv")
    short = _write(tmp_path / "short.tsv", [["index", "sentence1", "label"], ["0", "only one sentence", "1"]])
    with pytest.raises(BadInput, match=r"short.tsv:2 has 3 .*fields"):
        get_task("wnli").load_examples(data_file=short)
    bad = _write(tmp_path / "bad.tsv", [["index", "question", "sentence", "label"], ["0", "q", "s", "maybe"]])
    with pytest.raises(BadInput, match=r"bad.tsv:2: label 'maybe'.*entailment, not_entailment"):
        get_task("qnli").load_examples(data_file=bad)
    empty = _write(tmp_path / "empty.tsv", [["sentence", "label"]])
    with pytest.raises(BadInput, match="no sst2 examples"):
        get_task("sst2").load_examples(data_file=empty)


def test_bad_split_and_limit(glue_dir):
    with pytest.raises(BadInput, match="unknown split 'test'"):
        get_task("sst2").load_examples(data_dir=glue_dir, split="test")
    with pytest.raises(BadInput, match="positive integer"):
        get_task("sst2").load_examples(data_dir=glue_dir, limit=0)


def test_offline_hub_gives_one_line_hint(no_env, monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(BadInput) as info:
        get_task("mnli-mm").load_examples()
    message = str(info.value)
    assert "\n" not in message and "--data-dir" in message and GLUE_DIR_ENV in message
    assert "validation_mismatched" in message


def test_hub_rows_are_mapped(no_env, monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake(path, config, split):
        calls.append((path, config, split))
        return [{"premise": "P", "hypothesis": "H", "label": 2, "idx": 0}]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    examples = get_task("mnli").load_examples(limit=1)
    assert calls == [("nyu-mll/glue", "mnli", "validation_matched[:1]")]
    assert (examples[0].text_a, examples[0].text_b, examples[0].label) == ("P", "H", 2)


# -- encode / predict ------------------------------------------------------------------------------------
def test_encode_single_and_pairs_unpadded(glue_dir, tokenizer):
    task = get_task("mrpc")
    examples = task.load_examples(data_dir=glue_dir, limit=8)
    enc = task.encode(examples, tokenizer)
    assert isinstance(enc, Encoded) and enc.example_ids == list(range(8))
    lengths = {len(f["input_ids"]) for f in enc.features}
    assert len(lengths) > 1  # no padding
    for f, ex in zip(enc.features, examples):
        assert set(f) == {"input_ids", "attention_mask", "token_type_ids"}
        assert all(v.dtype == np.int64 and v.ndim == 1 and len(v) == len(f["input_ids"]) for v in f.values())
        assert f["attention_mask"].all() and f["token_type_ids"].max() == 1
        assert list(f["input_ids"]) == tokenizer(ex.text_a, ex.text_b)["input_ids"]
    single = get_task("sst2").encode(get_task("sst2").load_examples(data_dir=glue_dir, limit=3), tokenizer)
    assert all(f["token_type_ids"].max() == 0 for f in single.features)


def test_encode_truncates_longest_first(tokenizer):
    task = get_task("rte")
    long_a, short_b = "word " * 200, "a short hypothesis"
    f = task.encode([GlueExample(long_a, short_b, 0, 0)], tokenizer, max_length=32).features[0]
    assert len(f["input_ids"]) == 32
    assert (f["token_type_ids"] == 1).sum() == len(tokenizer(short_b)["input_ids"]) - 1  # b kept whole + [SEP]


def test_predict_classification_and_regression():
    enc = Encoded([], [0, 1, 2], {})
    logits = [np.array([0.1, 2.0], np.float32), np.array([3.0, -1.0], np.float32), np.array([0.0, 0.5])]
    assert get_task("sst2").predict(enc, {"logits": logits}) == [1, 0, 1]
    assert get_task("mnli").predict(enc, {"logits": [np.array([0.1, 0.2, 0.9])]}) == [2]
    preds = get_task("stsb").predict(enc, {"output_0": [np.array([3.25], np.float32), np.array([-0.5])]})
    assert preds == [3.25, -0.5] and all(type(p) is float for p in preds)
    with pytest.raises(BadInput, match="no 'logits'"):
        get_task("sst2").predict(enc, {"a": logits, "b": logits})


# -- metrics on hand-computed values ------------------------------------------------------------------------
LABELS, PREDS = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]  # TP=2, TN=1, FP=1, FN=1


def test_accuracy_and_f1():
    assert glue_metrics("sst2", [1, 0, 1, 1], [1, 0, 0, 1]) == {"accuracy": 75.0}
    m = glue_metrics("mrpc", LABELS, PREDS)
    assert m["accuracy"] == pytest.approx(60.0)
    assert m["f1"] == pytest.approx(100 * 2 / 3)  # precision = recall = 2/3


def test_matthews_correlation():
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3*3*2*2) = 1/6
    m = get_task("cola").metrics([GlueExample(f"s{i}", None, y, i) for i, y in enumerate(LABELS)], PREDS)
    assert m == {"matthews_correlation": pytest.approx(100 / 6)}


def test_pearson_and_spearman():
    # x = 1,2,3; y = 1,2,4: cov sum 3, var sums 2 and 14/3 -> r = 3 / sqrt(28/3)
    m = glue_metrics("stsb", [1.0, 2.0, 4.0], [1.0, 2.0, 3.0])
    assert m["pearson"] == pytest.approx(100 * 3 / math.sqrt(28 / 3))
    assert m["spearmanr"] == pytest.approx(100.0)
    assert all(type(v) is float for v in m.values())


def test_metrics_length_mismatch():
    with pytest.raises(ValueError):
        glue_metrics("sst2", [1, 0], [1])
