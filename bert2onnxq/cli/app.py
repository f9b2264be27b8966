"""The click group and what every command shares: one-line errors, progress bars, consoles."""

from __future__ import annotations

import os
import sys
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

err = Console(stderr=True)
out = Console()
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
        except KeyboardInterrupt:
            err.print("[bold red]interrupted[/]: no output was written")
            sys.exit(130)


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


@contextmanager
def progress_bars(enabled: bool):
    """A factory of per-batch callbacks backed by one rich progress display (on stderr)."""
    if not enabled:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as bars:
        def factory(label: str, total: int):
            task_id = bars.add_task(label, total=total)
            return lambda n: bars.advance(task_id, n)
        yield factory


def quiet_transformers():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()




def key_value(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise BadInput(f"--session-config '{item}' must be KEY=VALUE")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()
