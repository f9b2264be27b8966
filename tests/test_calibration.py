"""Which train examples calibrate: a seeded shuffle of the split, and search data from its other end."""

from types import SimpleNamespace

from bert2onnxq.analyse.activations import _calibration_features
from bert2onnxq.tasks.base import calibration_order
from bert2onnxq.validate import Subset


class _Task:
    """A task whose example i is one feature of i % 7 + 1 tokens, each token = i (so features name their example)."""

    default_max_length = 16

    def __init__(self, n):
        self.examples = list(range(n))

    def load_examples(self, data_dir=None, data_file=None, split="dev", limit=None):
        assert split == "train" and limit is None  # the whole split: the draw is over all of it
        return self.examples

    def encode(self, examples, tokenizer, max_length=None):
        return SimpleNamespace(features=[{"input_ids": [i] * (i % 7 + 1)} for i in examples])


def _drawn(features):
    return [f["input_ids"][0] for f in features]


def test_calibration_order_is_a_fixed_shuffle_of_the_whole_split():
    order = calibration_order(500)
    assert sorted(order) == list(range(500)) and order == calibration_order(500)
    assert order[:20] != list(range(20))
    assert max(order[:50]) > 250  # the first draws reach the far half of the file


def test_calibration_takes_examples_in_calibration_order():
    task = _Task(300)
    assert _drawn(_calibration_features(task, None, 40, 0, None, None)) == calibration_order(300)[:40]


def test_calibration_extends_in_the_same_order_until_the_token_target():
    task = _Task(300)
    features = _calibration_features(task, None, 10, 200, None, None)
    drawn = _drawn(features)
    assert drawn == calibration_order(300)[:len(drawn)]
    tokens = [len(f["input_ids"]) for f in features]
    assert sum(tokens) >= 200 and sum(tokens) - tokens[-1] < 200  # stops at the first feature past the target


def test_search_holdout_never_meets_what_calibrated():
    examples = list(range(1000))
    held = Subset(split="train", holdout=True, size=200).select(examples)
    assert len(held) == 200 and not set(held) & set(calibration_order(1000)[:800])
    assert "never calibrated on" in Subset(split="train", holdout=True, size=200).describe()
