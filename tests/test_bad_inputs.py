"""Every row of docs/bad-inputs.md: one line on stderr (what is wrong, how to fix it), exit 2, no
traceback, nothing written; and the table lists exactly these cases."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from bad_inputs import BEHAVIOURS, CASES
from conftest import REPO, assert_one_line_error, make_tiny_bert

SST2_DEV = "sentence\tlabel\na good film .\t1\na boring film .\t0\n"


@pytest.fixture(scope="module")
def places(tiny_models, tiny_onnx, tmp_path_factory):
    from bert2onnxq.convert import convert
    from bert2onnxq.export import export
    from bert2onnxq.methods import convert_options

    root = tmp_path_factory.mktemp("bad_inputs")
    named_hf = make_tiny_bert(root / "named-hf", labels=("negative", "positive"))
    named = export(str(named_hf), root / "named" / "model.onnx")["output"]
    orphan_hf = make_tiny_bert(root / "orphan-hf", labels=("negative", "positive"))
    orphan = export(str(orphan_hf), root / "orphan" / "model.onnx")["output"]
    shutil.rmtree(orphan_hf)  # the model it was exported from is gone
    q8 = root / "q8" / "model.onnx"
    convert(str(tiny_onnx["classification"]), q8, convert_options(bits=8))
    (root / "glue" / "SST-2").mkdir(parents=True)
    (root / "glue" / "SST-2" / "dev.tsv").write_text(SST2_DEV)
    squad = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "The novel was written in 1851.", "qas": [
        {"id": "a", "question": "When was it written?", "answers": [{"text": "1851", "answer_start": 25}]},
        {"id": "b", "question": "Who read it?", "answers": []}]}]}]}
    import json

    (root / "squad.json").write_text(json.dumps(squad))
    (root / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (root / "binary.onnx").write_bytes(b"\x08\x07this is not protobuf" * 10)
    (root / "folder").mkdir()
    (root / "folder.onnx").mkdir()
    return {"cls": tiny_onnx["classification"], "qa": tiny_onnx["question-answering"],
            "cls_hf": tiny_models["classification"], "named": named, "orphan": orphan, "q8": q8, "glue": root / "glue",
            "squad": root / "squad.json", "binary": root / "binary.bin", "binary_onnx": root / "binary.onnx",
            "dir": root / "folder", "onnxdir": root / "folder.onnx"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, places, tmp_path):
    case_id, _, command, code, needle = case
    args = shlex.split(command.format(tmp=tmp_path, **places))
    env = {k: v for k, v in os.environ.items() if k != "GLUE_DIR"} | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "bert2onnxq", *args], capture_output=True, text=True, timeout=600,
                          env=env, cwd=tmp_path)
    if needle == "Usage":  # click's own usage error
        assert proc.returncode == code and "Error:" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    else:
        assert proc.returncode == code
        assert_one_line_error(proc, needle)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not written, written  # nothing half-written, no side file
    assert not (tmp_path / "new").exists()  # no empty folder left by a failed run


def test_failed_convert_leaves_no_new_folder(places, tmp_path):
    out = tmp_path / "a" / "b" / "q.onnx"
    proc = subprocess.run([sys.executable, "-m", "bert2onnxq", "convert", "--model", str(places["cls"]), "--bits", "4",
                           "--granularity", "group", "--group-size", "100", "-o", str(out)], capture_output=True, text=True)
    assert_one_line_error(proc, "group size 100")
    assert not (tmp_path / "a").exists()


def test_the_table_lists_every_case():
    text = (REPO / "docs" / "bad-inputs.md").read_text()
    rows = set(re.findall(r"^\| `([a-z0-9-]+)` \|", text, flags=re.M))
    assert rows == {c[0] for c in CASES} | set(BEHAVIOURS)
    for test in BEHAVIOURS.values():
        path, name = test.split("::")
        assert f"def {name}(" in (REPO / path).read_text(), test
