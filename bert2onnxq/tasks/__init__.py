"""Evaluation tasks (GLUE, SQuAD v1.1): loading, encoding, post-processing and official metrics.

No onnx / onnxruntime / torch here: a task sees token ids going in and numpy arrays coming out.
"""

from __future__ import annotations

from bert2onnxq.errors import BadInput
from bert2onnxq.tasks.base import Encoded, Task
from bert2onnxq.tasks.glue import GLUE_DIR_ENV, GlueExample, GlueTask, glue_metrics
from bert2onnxq.tasks.squad import (
    SquadExample,
    SquadTask,
    normalize_answer,
    squad_scores,
)

TASK_NAMES: tuple[str, ...] = ("sst2", "mrpc", "cola", "stsb", "qnli", "rte", "wnli", "mnli", "mnli-mm", "qqp",
                               "squad")

# spellings people type from the GLUE folder names or HF configs
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli_matched": "mnli", "mnli_mismatched": "mnli-mm",
            "mnli-mismatched": "mnli-mm", "squad1.1": "squad", "squad-v1.1": "squad"}


def get_task(name: str) -> Task:
    """A fresh Task for a name in TASK_NAMES (case-insensitive; GLUE folder spellings like SST-2 work too)."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in TASK_NAMES:
        raise BadInput(f"unknown task {name!r}; use one of: {', '.join(TASK_NAMES)}")
    return SquadTask() if key == "squad" else GlueTask(key)


__all__ = ["TASK_NAMES", "GLUE_DIR_ENV", "BadInput", "Encoded", "Task", "GlueTask", "GlueExample", "SquadTask",
           "SquadExample", "get_task", "glue_metrics", "normalize_answer", "squad_scores"]
