"""Do `export --save-dir` / `convert --save-dir` folders load in Hugging Face Optimum, with the same logits
as a plain ONNX Runtime session? Run with Optimum's own environment (it pins its transformers), e.g.

    python -m venv /tmp/optvenv && /tmp/optvenv/bin/pip install torch==2.13.0 'optimum-onnx[onnxruntime]==0.1.0'
    /tmp/optvenv/bin/python benchmarks/optimum_check.py out/sst2-q4-ort out/squad-q4-ort

Needs only optimum, onnxruntime and transformers (not bert2onnxq). Prints one line per folder and exits
non-zero when a folder fails to load or its logits differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SENTENCES = [("Who wrote the novel?", "The novel was written by an author from Boston in 1851."),
             ("A charming, funny and moving film.", "It was fun to watch."),
             ("The service was slow.", "Nobody should eat here, which is a pity because the view is great.")]


def check(folder: Path) -> tuple[bool, str]:
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForQuestionAnswering, ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    config = json.loads((folder / "config.json").read_text())
    qa = any(a.endswith("ForQuestionAnswering") for a in config.get("architectures", []))
    cls = ORTModelForQuestionAnswering if qa else ORTModelForSequenceClassification
    model = cls.from_pretrained(folder, provider="CPUExecutionProvider")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    enc = tokenizer([a for a, _ in SENTENCES], [b for _, b in SENTENCES], padding=True, return_tensors="np")
    got = model(**enc)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    ref = session.run(None, {n: enc[n].astype(np.int64) for n in names})
    outputs = ("start_logits", "end_logits") if qa else ("logits",)
    diff = max(float(np.abs(np.asarray(getattr(got, name)) - r).max()) for name, r in zip(outputs, ref))
    kind = cls.__name__
    quantized = any(n.op_type in ("DequantizeLinear", "MatMulNBits") for n in _nodes(folder / "model.onnx"))
    return diff == 0.0, (f"{folder}: {kind} loads it ({'quantized' if quantized else 'FP32'} graph); "
                         f"max |Optimum - ONNX Runtime| = {diff:.3g} over {', '.join(outputs)}")


def _nodes(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.node


def main(folders: list[str]) -> int:
    import optimum.version

    print(f"optimum {optimum.version.__version__}")
    ok = True
    for f in folders:
        try:
            passed, line = check(Path(f))
        except Exception as exc:  # a folder Optimum cannot load is the finding, not a crash
            passed, line = False, f"{f}: Optimum cannot load it: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        ok &= passed
        print(("PASS " if passed else "FAIL ") + line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
