#!/usr/bin/env bash
# Same bytes out after a refactor: convert five reference plans on the three shared models with the
# code at REV (a git worktree) and with the working tree, and compare the .onnx files byte for byte.
#   bash benchmarks/same_bytes.sh REV [SHARED]      e.g. bash benchmarks/same_bytes.sh HEAD~3
# Cells: LQ-8, ACIQ-3 group-32, OCS-3 + ACIQ, OCS-8 with activation splits, Q-BERT avg 3 (--hessian-from a
# plan whose small Hessian the old code computes once). ~2.5 min per side on 2 cores.
set -euo pipefail
REV=${1:?usage: same_bytes.sh REV [SHARED]}
SHARED=$(realpath "${2:-$(dirname "$0")/../../shared}")
ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
WORK=$(mktemp -d /tmp/same-bytes.XXXX)
git -C "$ROOT" worktree add -q --detach "$WORK/old-src" "$REV"
trap 'git -C "$ROOT" worktree remove --force "$WORK/old-src"' EXIT
# the old sources, imported ahead of the editable install
cat > "$WORK/old" <<PY
#!$(command -v python)
import sys
sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__name__.lower()]
sys.path.insert(0, "$WORK/old-src")
from bert2onnxq.cli import main
sys.argv[0] = "bert2onnxq"
main()
PY
chmod +x "$WORK/old"
cells() {  # $1: command, $2: output folder
  for m in sst2 mrpc squad; do
    f=$WORK/fp32/$m/model.onnx
    [ -f "$f" ] || bert2onnxq export --model "$SHARED/models/minilm-l6-$m" -o "$f" >/dev/null
    if [ $m = squad ]; then data="--task squad --calib-file $SHARED/data/squad/dev-v1.1-train36.json"
    else data="--task $m --data-dir $SHARED/data/glue"; fi
    o=$2/$m; mkdir -p "$o"
    $1 convert --model "$f" --method lq --bits 8 -o "$o/lq8.onnx" --json >/dev/null
    $1 convert --model "$f" --method aciq --bits 3 --granularity group --group-size 32 -o "$o/aciq3g32.onnx" --json >/dev/null
    $1 convert --model "$f" --method ocs --bits 3 --clip aciq -o "$o/ocs3aciq.onnx" --json >/dev/null
    $1 convert --model "$f" --method ocs --bits 8 --ocs-activations $data -o "$o/ocs8act.onnx" --json >/dev/null
    h=$WORK/hessian-$m.json
    [ -f "$h" ] || $1 convert --model "$f" --method qbert $data --hessian-batches 1 --hessian-batch-size 2 \
        --hessian-iters 5 --plan-out "$h" -o "$WORK/hessian-$m.onnx" --json >/dev/null 2>&1
    $1 convert --model "$f" --method qbert --hessian-from "$h" --avg-bits 3 -o "$o/qbert3.onnx" --json >/dev/null
  done
}
cells "$WORK/old" "$WORK/before"
cells bert2onnxq "$WORK/after"
status=0
for f in "$WORK"/before/*/*.onnx; do
  g=$WORK/after/${f#"$WORK"/before/}
  if cmp -s "$f" "$g"; then echo "same  ${f#"$WORK"/before/}"; else echo "DIFF  ${f#"$WORK"/before/}"; status=1; fi
done
exit $status
