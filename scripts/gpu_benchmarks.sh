#!/usr/bin/env bash
# The benchmark tables of docs/benchmarks.md on a CUDA machine, in one run (about 3-6 minutes on one GPU and a
# recent CPU):
#   1. loss terms, forward + backward at 128³ (batch 2, 2 foreground classes) against nnU-Net's
#      DC+CE, under float16 autocast as nnU-Net's trainer runs them, then under bfloat16;
#   2. peak extra GPU memory of DC+CE + each term over DC+CE alone, K = 1, 100, 1000;
#   3. the loader per sample (CPU, one augmentation worker): Voronoi cells against scipy, and the
#      component maps next to nnU-Net's own 3d_fullres training transforms;
#   4. one whole training iteration (forward + loss + backward + optimizer step) of every trainer family
#      against nnUNetTrainer, at the demo's patch (48³) and at 128³.
# Tables go to stdout and, when $OUT is set, one Markdown file per table under $OUT.
#
# Usage: bash scripts/gpu_benchmarks.sh            (needs CUDA and this package installed)
#        bash scripts/gpu_benchmarks.sh --smoke    (the same commands at a tiny size, CPU allowed)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT_DIR=${OUT:-}

if [[ ${1:-} == --smoke ]]; then
    DEVICE=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
    SIZE=(--device "$DEVICE" --size 24 --threads 1)
    TIME=(--lesions 1 8 --repeats 2 --warmup 1)
    MEMORY=(--lesions 1 8)
    LOADER=(--sizes 24 --lesions 1 4 --repeats 2 --samples 2)
    STEP_SMALL=(--device "$DEVICE" --patch 16 --threads 1 --lesions 3 --repeats 1)
    STEP_LARGE=(--device "$DEVICE" --patch 16 --threads 1 --lesions 3 --repeats 1 --trainers nnUNetTrainerBlob)
else
    python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --smoke on a CPU')"
    SIZE=(--device cuda --size 128)
    TIME=(--lesions 1 10 100 1000 --repeats 20 --warmup 5)
    MEMORY=(--lesions 1 100 1000)
    LOADER=(--sizes 96 128 --lesions 1 40 400 --repeats 7 --samples 20 --clock wall)
    STEP_SMALL=(--device cuda --patch 48 --repeats 10 --warmup 2)
    STEP_LARGE=(--device cuda --patch 128 --repeats 10 --warmup 2)
fi

table() {  # table NAME ARGS...: python3 ARGS, to stdout and to $OUT/NAME.md
    local name=$1
    shift
    echo
    echo "## $name: python3 $*"
    if [[ -n $OUT_DIR ]]; then
        mkdir -p "$OUT_DIR"
        python3 "$@" | tee "$OUT_DIR/$name.md"
    else
        python3 "$@"
    fi
}

python3 - <<'PY'
import os, platform, torch
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
print(f"Python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), {gpu}, {os.cpu_count()} CPU cores")
PY
table losses_time_fp16 scripts/bench_losses.py "${SIZE[@]}" "${TIME[@]}" --autocast fp16 --check-cost
table losses_time_bf16 scripts/bench_losses.py "${SIZE[@]}" "${TIME[@]}" --autocast bf16
table losses_memory scripts/bench_losses.py "${SIZE[@]}" "${MEMORY[@]}" --autocast fp16 --memory
table loader scripts/bench_loader.py "${LOADER[@]}"
table training_step_demo_patch scripts/bench_training_step.py "${STEP_SMALL[@]}"
table training_step_128 scripts/bench_training_step.py "${STEP_LARGE[@]}"
