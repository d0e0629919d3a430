#!/usr/bin/env bash
# The CUDA checks and GPU numbers of docs/benchmarks.md ("GPU"), in one call:
#
#   bash tools/benchmark/run_cuda_checks.sh OUT_DIR
#
# Each step is its own process (a segfault or hang stops one step, not the call) with its
# own time limit; the steps' output goes to OUT_DIR/checks.log, the benchmarks' medians
# and ratios to OUT_DIR/bench.jsonl. On the project's lent GPU machine, run it after
# `source .gpu/setup.sh` (../shared/gpu/README.md).
set -u
OUT=${1:?usage: run_cuda_checks.sh OUT_DIR}
mkdir -p "$OUT"
LOG="$OUT/checks.log"
JSON="$OUT/bench.jsonl"
: > "$LOG"
WORK=${WORK:-/tmp/tst_cuda_checks}
mkdir -p "$WORK"

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    echo "=== $name: $*" >> "$LOG"
    timeout "$limit" "$@" >> "$LOG" 2>&1
    rc=$?
    echo "=== $name: exit $rc in $(( $(date +%s) - start )) s" >> "$LOG"
    echo "[cuda] $name: exit $rc in $(( $(date +%s) - start )) s"
}

bench() {  # bench NAME SECONDS ARGS... (bench_distiller.py, its JSON appended)
    local name=$1 limit=$2
    shift 2
    step "$name" "$limit" python3 tools/benchmark/bench_distiller.py --device cuda \
        --json "$WORK/$name.json" "$@"
    [ -f "$WORK/$name.json" ] && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["name"]=sys.argv[2]; print(json.dumps(d))' "$WORK/$name.json" "$name" >> "$JSON"
}

git log --oneline -1 >> "$LOG" 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >> "$LOG" 2>&1
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "tf32 matmul", torch.backends.cuda.matmul.allow_tf32, "cudnn tf32", torch.backends.cudnn.allow_tf32)' >> "$LOG" 2>&1

# 1. The distiller's steps: COCO size and the demo's size, fp32 and AMP.
bench coco_fp32 100 --height 800 --width 1216 --batch 2 --iters 10
bench coco_amp 100 --height 800 --width 1216 --batch 2 --iters 10 --amp
bench demo_fp32 100 --height 128 --width 128 --batch 8 --iters 10 --profile
bench demo_amp 100 --height 128 --width 128 --batch 8 --iters 10 --amp
# 2. A shipped config at its real resolution through tools/train.py, AMP and fp32.
step train_amp 150 python3 tools/benchmark/cuda_train_check.py --work-dir "$WORK/train" --amp
step train_fp32 120 python3 tools/benchmark/cuda_train_check.py --work-dir "$WORK/train"
# 3. Why a benchmark step went non-finite on CUDA: its rounds at the student's real rate,
#    with TF32 (the default for cuDNN convolutions) and without.
step trace_tf32 80 python3 tools/benchmark/bench_distiller.py --device cuda --height 800 \
    --width 1216 --batch 2 --trace 6 --student-lr 0.01
step trace_no_tf32 80 python3 tools/benchmark/bench_distiller.py --device cuda \
    --height 800 --width 1216 --batch 2 --trace 6 --student-lr 0.01 --no-tf32
# 4. The augmenter alone on the GPU, and RetinaNet-R50 beside it.
step augmenter 100 python3 tools/benchmark/bench_augmenter.py --device cuda --retinanet
echo "[cuda] done: $LOG, $JSON"
