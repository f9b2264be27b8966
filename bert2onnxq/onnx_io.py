"""Loading and saving ONNX files safely: clear errors for bad files, atomic writes, external data."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BadInput

if TYPE_CHECKING:
    import numpy as np
    import onnx_ir as ir


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
    made = [p for p in (parent, *parent.parents) if not p.exists()]  # folders to remove again if the run fails
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise BadInput(f"cannot write to '{parent}' ({exc.strerror}): choose a writable output path") from None
    done = False
    try:
        yield tmp
        files = sorted(tmp.iterdir(), key=lambda f: f.name == target.name)
        for f in files:
            os.replace(f, parent / f.name)
        done = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            for folder in made:
                try:
                    folder.rmdir()  # only if still empty
                except OSError:
                    break


def load_ir(path: Path) -> "ir.Model":
    import onnx_ir as ir

    return ir.from_proto(load_onnx(path))


def weight_array(model: "ir.Model", name: str) -> "np.ndarray":
    """An initializer of an onnx-ir model as float32."""
    import numpy as np

    return np.asarray(model.graph.initializers[name].const_value.numpy(), dtype=np.float32)


def model_metadata(path: Path) -> dict:
    """The bert2onnxq metadata of an ONNX file (without loading its weights)."""
    model = load_onnx(path, load_external_data=False)
    return {p.key.removeprefix("bert2onnxq."): p.value for p in model.metadata_props if p.key.startswith("bert2onnxq.")}


def load_tokenizer(model_path: Path, meta: dict, tokenizer_dir: Path | None = None):
    """The tokenizer written beside an export (or in `tokenizer_dir`)."""
    from transformers import AutoTokenizer

    folder = Path(tokenizer_dir) if tokenizer_dir else Path(model_path).parent / meta.get("tokenizer", ".")
    if not (folder / "tokenizer.json").is_file() and not (folder / "vocab.txt").is_file():
        raise BadInput(f"no tokenizer files in '{folder}': pass --tokenizer DIR (the model folder it was exported from)")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot load the tokenizer in '{folder}': {str(exc).splitlines()[0]}") from None


def file_bytes(path: Path) -> int:
    """The model's bytes on disk, external data included."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write under a temporary name beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def check_writable_file(path: Path, option: str) -> None:
    """BadInput unless `path` can be written (its folder exists or can be made, and is writable; it is no folder)."""
    if path.is_dir():
        raise BadInput(f"{option} '{path}' is a folder: name a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.parent / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BadInput(f"cannot write {option} '{path}' ({exc.strerror or exc}): choose a writable path") from None


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BadInput(f"cannot write to '{out}' ({exc.strerror or exc}): choose a writable -o") from None
