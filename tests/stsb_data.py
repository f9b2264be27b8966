"""Test data for sweep / --max-drop / the reference cache: the tiny regression BERT with an STS-B-shaped
data set whose labels are the FP32 model's own scores (FP32 Pearson = 100, so every quantized model
has a meaningful, deterministic drop), and the CLI helpers."""

from __future__ import annotations

import random
from pathlib import Path

from conftest import WORDS

HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS[:-6]) for _ in range(rng.randint(4, 14)))


def _write_stsb(folder: Path, rows: dict[str, list[tuple[str, str, float]]]) -> None:
    (folder / "STS-B").mkdir(parents=True, exist_ok=True)
    for split, items in rows.items():
        lines = [HEADER] + [f"{i}\tmain\tx\t2012\t{i}\tnone\tnone\t{a}\t{b}\t{s!r}" for i, (a, b, s) in enumerate(items)]
        (folder / "STS-B" / f"{split}.tsv").write_text("\n".join(lines) + "\n")


def make_stsb(fp32: Path, folder: Path, dev: int = 48, train: int = 300) -> dict:
    """A GLUE folder (STS-B dev and train) labelled by the FP32 export `fp32`."""
    from bert2onnxq.runtime import make_runner
    from bert2onnxq.tasks import get_task
    from bert2onnxq.validate import load_tokenizer, model_metadata

    rng = random.Random(0)
    pairs = {"dev": [(_sentence(rng), _sentence(rng)) for _ in range(dev)],
             "train": [(_sentence(rng), _sentence(rng)) for _ in range(train)]}
    _write_stsb(folder, {k: [(a, b, 0.0) for a, b in v] for k, v in pairs.items()})
    task = get_task("stsb")
    tokenizer = load_tokenizer(fp32, model_metadata(fp32))
    runner = make_runner(fp32, threads=1)
    labelled = {}
    for split in pairs:
        examples = task.load_examples(data_dir=folder, split=split)
        encoded = task.encode(examples, tokenizer)
        scores = task.predict(encoded, runner.run_features(encoded.features))
        labelled[split] = [(a, b, s) for (a, b), s in zip(pairs[split], scores)]
    _write_stsb(folder, labelled)
    return {"fp32": fp32, "glue": folder}


def stsb_calibrate(stsb: dict):
    """convert's `calibrate` on the synthetic STS-B train split of `make_stsb` (GPTQ's inputs, static ranges)."""
    from bert2onnxq.analyse.activations import task_calibrator

    return task_calibrator("stsb", default_samples=64, data_dir=stsb["glue"])
