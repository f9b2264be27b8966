"""The click group and what every command shares: one-line errors, progress bars, consoles."""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import contextmanager

import click
import cloup
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from .. import __version__
from ..errors import BadInput

# Outside a terminal (CI logs, redirects) rich would wrap at 80 columns and animate nothing: print whole
# lines instead, and progress as plain lines.
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200, soft_wrap=not sys.stderr.isatty())
out = Console(width=None if sys.stdout.isatty() else 200, soft_wrap=not sys.stdout.isatty())
TASKS = ("sst2", "mrpc", "cola", "stsb", "qnli", "rte", "wnli", "mnli", "mnli-mm", "qqp", "squad")


class Command(cloup.Command):
    """Turns BadInput (and a few OS errors) into a one-line message and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BadInput as exc:
            # escape: messages may hold brackets (pip extras, lists) that rich would take as markup
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt as exc:
            err.print(f"[bold red]{'terminated' if isinstance(exc, Terminated) else 'interrupted'}[/]: "
                      "no output was written (temporary files removed)")
            sys.exit(143 if isinstance(exc, Terminated) else 130)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every temporary file is removed on the way out."""


def _terminate(signum, frame):
    raise Terminated()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bert2onnxq")
def main():
    """Export a fine-tuned BERT to ONNX, quantize it, and validate it on GLUE / SQuAD.

    \b
    Pipeline:  export -> (convert) -> validate, and inspect / bench any file
      bert2onnxq export --model models/minilm-l6-sst2-demo -o out/fp32/model.onnx
      bert2onnxq validate out/fp32/model.onnx --task sst2 --data-dir ../shared/data/glue
      bert2onnxq inspect out/lq8/model.onnx
      bert2onnxq bench out/lq8/model.onnx --vs out/fp32/model.onnx --threads 2
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    signal.signal(signal.SIGTERM, _terminate)


@contextmanager
def progress_bars(enabled: bool):
    """A factory of per-step callbacks, `factory(label, total) -> advance(n)`, drawn on stderr: rich bars in
    a terminal, a plain line at every tenth of the work (and at the end) in a log."""
    if not enabled:
        yield None
        return
    if not err.is_terminal:
        yield _log_progress
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as bars:
        def factory(label: str, total: int):
            task_id = bars.add_task(label, total=total)
            return lambda n: bars.advance(task_id, n)
        yield factory


def log_progress():
    """Plain progress lines for a log (None in a terminal, where a spinner or bar is already shown)."""
    return None if err.is_terminal else _log_progress


def _log_progress(label: str, total: int):
    state = {"done": 0, "shown": 0, "start": time.monotonic()}

    def advance(n: int) -> None:
        state["done"] += n
        tenth = 10 * state["done"] // max(total, 1)
        if tenth > state["shown"] or state["done"] >= total:
            state["shown"] = tenth
            err.print(f"{label}: {state['done']}/{total} ({time.monotonic() - state['start']:.0f} s)", highlight=False)
    return advance


@contextmanager
def status(text: str):
    """A spinner in a terminal; in a log, one line when done, with how long it took. Yields `update(text)`."""
    if err.is_terminal:
        with err.status(text) as spinner:
            yield spinner.update
        return
    start = time.monotonic()  # printed when done, so that a failing step still ends in one error line
    yield lambda text: None
    err.print(f"{text.rstrip(' .')}: done in {time.monotonic() - start:.0f} s", highlight=False)


def calibrator(task: str | None, calib_samples: int, data_dir, calib_file):
    """The calibration callback of convert and sensitivity, on train samples of `task` (None without one)."""
    if not task:
        return None
    from ..analyse.activations import observe_activations

    def calibrate(fp32_path, names, samples=None, moments=False, min_tokens=0, weights=None):
        n = samples or calib_samples
        what = "inputs (X^T X) of " if moments else ""
        tokens = f" (at least {min_tokens} tokens)" if min_tokens else ""
        with status(f"calibrating {what}{len(names)} activations on {n} {task} train samples{tokens} ..."):
            return observe_activations(fp32_path, names, task, samples=n, data_dir=data_dir, data_file=calib_file,
                                       moments=moments, min_tokens=min_tokens, progress=log_progress(), weights=weights)
    return calibrate


def quiet_transformers():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()




def key_value(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise BadInput(f"--session-config '{item}' must be KEY=VALUE")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()
