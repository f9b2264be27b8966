"""The bad inputs of docs/bad-inputs.md, one row each: what the user typed and what they get.

`{cls}` / `{qa}`: tiny FP32 exports (classification with unnamed labels, question answering);
`{named}`: a classification export whose labels are negative/positive; `{q8}`: a quantized file;
`{tmp}`: a fresh folder; `{glue}`: a GLUE folder with SST-2 dev; `{squad}`: a SQuAD file with one
unanswered question; `{binary}`: a binary file; `{dir}`: an existing folder.
Each row: (id, what is wrong, command, expected exit, text the one error line must hold).
Exit 2 with a needle: one `error:` line on stderr, no traceback, nothing written. Usage errors of the
command line parser (click) are 3 lines (usage, hint, error) and also exit 2: `needle` then starts with "Usage".
"""

from __future__ import annotations

CASES = [
    ("export-missing-folder", "a model folder that does not exist",
     "export --model ./no-such-model -o {tmp}/m.onnx", 2, "does not exist"),
    ("export-offline-hub-id", "a hub id with no network (HF_HUB_OFFLINE=1): no retries",
     "export --model bert-base-uncased -o {tmp}/m.onnx", 2, "cannot reach the Hugging Face hub"),
    ("export-not-onnx", "-o without .onnx", "export --model {cls_hf} -o {tmp}/m.txt", 2, "must end in .onnx"),
    ("export-two-outputs", "both -o and --save-dir", "export --model {cls_hf} -o {tmp}/m.onnx --save-dir {tmp}/s", 2,
     "exactly one"),
    ("convert-missing-input", "an input .onnx that does not exist", "convert --model {tmp}/nope.onnx -o {tmp}/q.onnx", 2,
     "does not exist"),
    ("convert-output-is-folder", "-o naming an existing folder", "convert --model {cls} -o {dir}", 2, "must end in .onnx"),
    ("convert-output-is-onnx-folder", "-o naming an existing folder called x.onnx", "convert --model {cls} -o {onnxdir}",
     2, "is a folder"),
    ("convert-two-outputs", "both -o and --save-dir", "convert --model {cls} -o {tmp}/q.onnx --save-dir {tmp}/s", 2,
     "exactly one"),
    ("convert-binary-plan", "--plan given a binary file", "convert --model {cls} --plan {binary} -o {tmp}/q.onnx", 2,
     "plan"),
    ("convert-unwritable-plan-out", "--plan-out in an unwritable place",
     "convert --model {cls} --plan-out /proc/no/plan.json -o {tmp}/q.onnx", 2, "cannot write --plan-out"),
    ("convert-ocs-ratio-on-lq", "an OCS option with --method lq",
     "convert --model {cls} --method lq --ocs-ratio 0.05 -o {tmp}/q.onnx", 2, "applies to --method ocs"),
    ("convert-clip-on-lq", "--clip with --method lq", "convert --model {cls} --method lq --clip aciq -o {tmp}/q.onnx", 2,
     "--clip applies to --method"),
    ("convert-avg-bits-on-lq", "a Q-BERT option with --method lq",
     "convert --model {cls} --method lq --avg-bits 3 -o {tmp}/q.onnx", 2, "applies to --method qbert"),
    ("convert-group-size-48", "a group size MatMulNBits cannot run (48; also 2, 100)",
     "convert --model {cls} --bits 4 --granularity group --group-size 48 -o {tmp}/new/q.onnx", 2,
     "cannot run on ONNX Runtime's MatMulNBits"),
    ("convert-bits-9", "--bits out of range", "convert --model {cls} --bits 9 -o {tmp}/q.onnx", 2, "--bits 9 is outside 2..8"),
    ("convert-quantized-input", "a quantized file as the FP32 input", "convert --model {q8} -o {tmp}/q.onnx", 2,
     "already quantized"),
    ("convert-max-drop-no-task", "--max-drop without --task", "convert --model {cls} --max-drop 1 -o {tmp}/q.onnx", 2,
     "needs --task"),
    ("convert-max-drop-with-bits", "--max-drop with --bits (it searches bits itself)",
     "convert --model {cls} --max-drop 1 --bits 4 --task sst2 -o {tmp}/q.onnx", 2, "--search-bits"),
    ("convert-save-dir-with-max-drop", "--save-dir with --max-drop",
     "convert --model {cls} --max-drop 1 --task sst2 --save-dir {tmp}/s", 2, "use -o with it"),
    ("validate-corrupt-onnx", "a file that is not ONNX", "validate {binary_onnx} --task sst2 --data-dir {glue}", 2,
     "not a readable ONNX"),
    ("validate-head-mismatch", "a QA model on a GLUE task", "validate {qa} --task sst2 --data-dir {glue}", 2,
     "question-answering head"),
    ("validate-label-count", "a 3-label model on a 2-label task", "validate {cls} --task sst2 --data-dir {glue}", 2,
     "predicts 3 labels"),
    ("validate-label-names", "an SST-2 model (negative/positive) on RTE", "validate {named} --task rte --data-dir {glue}",
     2, "are not task rte's"),
    ("validate-offline-no-data", "no --data-dir and no network (the hub's GLUE copy): no retries",
     "validate {named} --task sst2", 2, "cannot reach the Hugging Face hub"),
    ("validate-no-task-data", "--data-dir without the task's folder", "validate {cls} --task mnli --data-dir {glue}", 2,
     "MNLI"),
    ("validate-unanswered-squad", "SQuAD questions without answers (SQuAD v2 style)",
     "validate {qa} --task squad --data-file {squad}", 2, "have no answers"),
    ("validate-squad-not-json", "a SQuAD file that is not JSON", "validate {qa} --task squad --data-file {binary}", 2,
     "not valid JSON"),
    ("validate-unknown-session-key", "an --session-config key ONNX Runtime does not know (it would ignore it)",
     "validate {named} --task sst2 --data-dir {glue} --session-config session.qdq_matmulnbit_accuracy_level=4", 2,
     "did you mean 'session.qdq_matmulnbits_accuracy_level'"),
    ("validate-session-config-form", "--session-config without =", "validate {cls} --task mnli --session-config x", 2,
     "must be KEY=VALUE"),
    ("validate-negative-threads", "--threads -1", "validate {cls} --task mnli --threads -1", 2, "Usage"),
    ("validate-bad-batch", "--batch-size 0", "validate {cls} --task mnli --data-dir {glue} --batch-size 0", 2,
     "must be positive integers"),
    ("validate-predictions-folder", "--predictions naming a folder",
     "validate {named} --task sst2 --data-dir {glue} --predictions {dir}", 2, "is a folder"),
    ("validate-predictions-two-batches", "--predictions with several batches",
     "validate {named} --task sst2 --data-dir {glue} --predictions {tmp}/p.tsv --batch-size 1,8", 2,
     "one run's predictions"),
    ("inspect-no-plan", "inspect --plan on an FP32 export", "inspect {cls} --plan", 2, "holds no bert2onnxq plan"),
    ("inspect-not-onnx", "inspect a non-.onnx file", "inspect {binary}", 2, "not an .onnx file"),
    ("sweep-unknown-set", "sweep --set of an unknown option",
     "sweep --model {cls} --task sst2 --set nope=1 -o {tmp}/sweep", 2, "not a convert option"),
    ("sensitivity-plan-and-bits", "sensitivity --plan with --bits",
     "sensitivity --model {cls} --task sst2 --plan {q8} --bits 3 -o {tmp}/sens", 2, "--plan gives the plan"),
    ("sensitivity-too-many-kept", "sensitivity --keep-worst more than the units",
     "sensitivity --model {cls} --task mnli --data-dir {glue} --keep-worst 9 -o {tmp}/sens", 2, "more than the plan's"),
]

# Behaviours that are not one-line errors, each with its own test (see docs/bad-inputs.md)
BEHAVIOURS = {
    "max-drop-missed": "tests/test_handoff.py::test_max_drop_outside_budget_exits_3",
    "sigterm": "tests/test_handoff.py::test_sigterm_leaves_no_temporary_files",
    "failed-convert-folder": "tests/test_bad_inputs.py::test_failed_convert_leaves_no_new_folder",
    "force-labels": "tests/test_handoff.py::test_labels_mapped_by_name_and_forced",
    "card-atomic": "tests/test_handoff.py::test_failing_card_keeps_the_old_output",
    "sweep-ctrl-c": "tests/test_sweep.py::test_interrupted_local_pool_stops_at_once",
}
