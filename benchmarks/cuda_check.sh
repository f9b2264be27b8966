#!/usr/bin/env bash
# The CUDA check, prepared for a lent GPU machine (the `device` tool), from a bare checkout with no network:
# export the bundled SST-2 demo model, convert LQ-8 and 4-bit group-32 with --target cuda, then
# `validate --device cuda` and `bench --device cuda` against FP32; one results file under $OUT.
#
#   on the GPU machine:   bash benchmarks/cuda_check.sh                 (DEVICE=cuda, full SST-2 dev)
#   CPU-side parts (CI):  DEVICE=cpu LIMIT=64 ROUNDS=2 OUT=/tmp/x bash benchmarks/cuda_check.sh
#
# Needs onnxruntime-gpu there. The machine has the CPU onnxruntime only and no network, so the wheel
# must be carried: WHEELS (default .whl) is pip-installed with --no-index when CUDA's provider is
# missing. The onnxruntime-gpu wheel is 256 MB, over one call's 64 MiB carry: split it here
# (split -b 60M onnxruntime_gpu-*.whl .whl/ortgpu.part.) and reassemble there (cat .whl/ortgpu.part.* > ...).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
LIMIT=${LIMIT:-}
ROUNDS=${ROUNDS:-10}
OUT=${OUT:-out/cuda-check}
WHEELS=${WHEELS:-.whl}
WORK=${WORK:-$(mktemp -d)}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
start=$(date +%s)

if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$WHEELS"/*.whl
  export PYTHONPATH="$WORK/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"   # the package itself, no install step
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
  echo "error: this onnxruntime has no CUDAExecutionProvider: carry the onnxruntime-gpu wheel in $WHEELS (see the header)" >&2
  "$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" > "$OUT/cuda_check.txt" 2>&1 || true
  exit 3
fi

run() { echo "+ bert2onnxq $*" >&2; "$PY" -m bert2onnxq "$@"; }
limit=(); [ -n "$LIMIT" ] && limit=(--limit "$LIMIT")
run export --model models/minilm-l6-sst2-demo -o "$WORK/fp32/model.onnx" >&2
run convert --model "$WORK/fp32/model.onnx" --bits 8 --target cuda -o "$WORK/lq8/model.onnx" >&2
run convert --model "$WORK/fp32/model.onnx" --bits 4 --granularity group --group-size 32 --target cuda \
    -o "$WORK/g4/model.onnx" >&2
for m in lq8 g4; do
  run validate "$WORK/$m/model.onnx" --reference "$WORK/fp32/model.onnx" --task sst2 --data-dir models/data/glue \
      --device "$DEVICE" "${limit[@]}" --json > "$WORK/validate-$m.json"
  run inspect "$WORK/$m/model.onnx" --device "$DEVICE" --json > "$WORK/inspect-$m.json"
done
run bench "$WORK/fp32/model.onnx" --vs "$WORK/lq8/model.onnx" --vs "$WORK/g4/model.onnx" --device "$DEVICE" \
    --batch 1 --batch 8 --seq 128 --rounds "$ROUNDS" --no-memory --json > "$WORK/bench.json"

"$PY" - "$WORK" "$OUT" "$DEVICE" "$(( $(date +%s) - start ))" <<'EOF'
import json, platform, sys
from pathlib import Path
work, out, device, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
import onnxruntime
lines = [f"# CUDA check ({device}), onnxruntime {onnxruntime.__version__}, {platform.node()}, {seconds} s", "",
         "| file | accuracy | FP32 | drop | agreement % | providers | linear kernels after ORT's fusions |", "|---|---:|---:|---:|---:|---|---|"]
record = {"device": device, "onnxruntime": onnxruntime.__version__, "seconds": seconds, "files": {}}
for m in ("lq8", "g4"):
    v = json.loads((work / f"validate-{m}.json").read_text())
    i = json.loads((work / f"inspect-{m}.json").read_text())
    rt = i.get("runtime", {})
    acc, ref = v["model"]["metrics"]["accuracy"], v["reference"]["metrics"]["accuracy"]
    lines.append(f"| {m} | {acc:.2f} | {ref:.2f} | {ref - acc:+.2f} | {v['comparison']['agreement']:.2f} | "
                 f"{', '.join(v['model']['runtime']['providers'])} | {rt.get('linear_kernels')} |")
    record["files"][m] = {"validate": v, "runtime": rt}
bench = json.loads((work / "bench.json").read_text())
bench = bench if isinstance(bench, list) else [bench]
lines += ["", "| batch x seq | model | median ms | x FP32 |", "|---|---|---:|---:|"]
for b in bench:
    s = b["settings"]
    for m in b["models"]:
        lines.append(f"| {s['batch']} x {s['seq']} | {Path(m['path']).parent.name} | {m['median_ms']:.2f} | "
                     f"{m.get('ratio_to_first', m.get('ratio', float('nan'))):.2f} |")
record["bench"] = bench
(out / "cuda_check.md").write_text("\n".join(lines) + "\n")
(out / "cuda_check.json").write_text(json.dumps(record, indent=1, default=str))
print("\n".join(lines))
EOF
