"""Shared fixtures: a tiny random BERT (any head) with its own WordPiece tokenizer, and ../shared paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_MODELS = SHARED / "models"
GLUE_DIR = SHARED / "data" / "glue"
SQUAD_HELDOUT = SHARED / "data" / "squad" / "dev-v1.1-heldout12.json"

WORDS = ("the a an is was movie film good bad great boring fun not very who what when where wrote "
         "written book novel author city river year in of by and to it this that , . ? !").split()


def tiny_feeds(batch=2, seq=11, vocab=60, seed=0) -> dict:
    """Random token ids for the tiny BERT; the last sequence is padded at its end."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(batch, seq))
    mask = np.ones_like(ids)
    mask[-1, seq - 3:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def make_tiny_bert(folder: Path, head: str = "classification", num_layers: int = 2, seed: int = 0,
                   labels: tuple[str, ...] | None = None) -> Path:
    """Save a random 2-layer BERT (hidden 32, 4 heads) and a fast tokenizer into `folder`
    (classification: 3 unnamed labels, or `labels`)."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz",
             *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz")]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    num_labels = len(labels) if labels else {"classification": 3, "regression": 1, "question-answering": 2}[head]
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=num_layers, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, num_labels=num_labels)
    if labels:
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
    if head == "regression":
        config.problem_type = "regression"
    torch.manual_seed(seed)
    cls = BertForQuestionAnswering if head == "question-answering" else BertForSequenceClassification
    model = cls(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {head: make_tiny_bert(root / head, head) for head in ("classification", "regression", "question-answering")}


@pytest.fixture(scope="session")
def tiny_onnx(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """The tiny models exported once per session."""
    from bert2onnxq.export import export

    root = tmp_path_factory.mktemp("tiny_onnx")
    return {head: Path(export(str(src), root / head / "model.onnx")["output"]) for head, src in tiny_models.items()}


@pytest.fixture(scope="module")
def stsb(tiny_onnx, tmp_path_factory) -> dict:
    """A synthetic STS-B task (train and dev TSVs) for the tiny regression model, once per test module."""
    from stsb_data import make_stsb

    return make_stsb(tiny_onnx["regression"], tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="session")
def tokenizer():
    """The shared models' uncased WordPiece tokenizer (fast, offline)."""
    path = SHARED_MODELS / "minilm-l6-sst2"
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def needs_shared(*paths: Path):
    missing = [p for p in paths if not p.exists()]
    return pytest.mark.skipif(bool(missing), reason=f"../shared is missing {missing}")


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m bert2onnxq ARGS` in a subprocess (what a user's shell sees)."""
    return subprocess.run([sys.executable, "-m", "bert2onnxq", *args], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    """Bad input: exit 2, one `error:` line on stderr that mentions `needle`, no traceback."""
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert needle in lines[0], lines[0]
