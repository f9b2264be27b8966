"""Loading and saving ONNX files safely: clear errors for bad files, atomic writes, external data."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import BadInput


def load_onnx(path: Path, load_external_data: bool = True):
    """onnx.load with a one-line BadInput for a missing, unreadable or corrupt file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"'{path}' does not exist or is not a file: pass the path of an .onnx model")
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # protobuf raises DecodeError, onnx raises several types
        raise BadInput(f"'{path}' is not a readable ONNX model ({type(exc).__name__}): re-export it with 'bert2onnxq export'") from None


def save_onnx(model, path: Path, external_data_threshold: int = 1 << 30) -> None:
    """Save `model`; tensors go to `<name>.data` beside it when the model is over the threshold.

    Protobuf caps a file at 2 GiB, so large models (BERT-large and up with FP32 weights) need
    external data; the threshold is a parameter so tests can exercise the path on small models.
    """
    import onnx

    path = Path(path)
    size = model.ByteSize()
    if size > external_data_threshold:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save(model, str(path))


@contextmanager
def atomic_output(target: Path):
    """Yield a temporary folder beside `target`; on success its files replace their namesakes.

    Nothing is written under the final names until the work succeeded, so a failed run never
    leaves a half-written model and never clobbers an existing one. The .onnx file moves last.
    """
    target = Path(target)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise BadInput(f"cannot write to '{parent}' ({exc.strerror}): choose a writable output path") from None
    try:
        yield tmp
        files = sorted(tmp.iterdir(), key=lambda f: f.name == target.name)
        for f in files:
            os.replace(f, parent / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
