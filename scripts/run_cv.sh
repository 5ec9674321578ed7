#!/usr/bin/env bash
# 5-fold cross-validation of one trainer with nnU-Net v2, then the lesion-wise summary.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/run_cv.sh DATASET CONFIG TRAINER [--gpus 0,1,...] [--plans PLANS] [--folds "0 1 2 3 4"]
                         [--preset NAME] [-- EXTRA nnUNetv2_train ARGS]

Trains folds 0-4 with nnUNetv2_train (with --npz, so nnU-Net keeps the validation outputs), one fold
per listed GPU in parallel (CUDA_VISIBLE_DEVICES), or one after the other without --gpus, then runs
  nnunet-lesionloss cv-summary $nnUNet_results/<Dataset>/<TRAINER>__<PLANS>__<CONFIG>

  DATASET   dataset id or name, e.g. 501 or Dataset501_MSLesSeg
  CONFIG    nnU-Net configuration, e.g. 3d_fullres
  TRAINER   e.g. nnUNetTrainer, nnUNetTrainerCATMIL
  --gpus    comma-separated GPU ids; folds are distributed over them round-robin
  --plans   plans identifier (default nnUNetPlans)
  --preset  evaluation preset for cv-summary (default: default)

Needs nnUNet_raw, nnUNet_preprocessed and nnUNet_results; for the trainers of this package also
run  eval "$(nnunet-lesionloss env)"  (it exports nnUNet_extTrainer). Logs go to $LOG_DIR (cv_logs).
A loss config override (NNUNET_LESIONLOSS_CONFIG) is printed with what it changes, and a file that does
not fit TRAINER stops the script before the first fold.
EOF
}

if [[ $# -lt 3 ]]; then
    usage >&2
    exit 2
fi
DATASET=$1 CONFIG=$2 TRAINER=$3
shift 3
GPUS="" PLANS="nnUNetPlans" FOLDS="0 1 2 3 4" PRESET="default" EXTRA=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --gpus) GPUS=$2; shift 2 ;;
        --plans) PLANS=$2; shift 2 ;;
        --folds) FOLDS=$2; shift 2 ;;
        --preset) PRESET=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

for var in nnUNet_raw nnUNet_preprocessed nnUNet_results; do
    if [[ -z ${!var:-} ]]; then
        echo "error: environment variable $var is not set (nnU-Net needs it)" >&2
        exit 2
    fi
done
command -v nnUNetv2_train >/dev/null || { echo "error: nnUNetv2_train not found (pip install nnunetv2)" >&2; exit 2; }
command -v nnunet-lesionloss >/dev/null || { echo "error: nnunet-lesionloss not found (pip install -e .)" >&2; exit 2; }

# the loss config override in use, if any: printed, and checked against this trainer before any fold starts
if [[ -n ${NNUNET_LESIONLOSS_CONFIG:-} ]]; then
    echo "config override in use: NNUNET_LESIONLOSS_CONFIG=$NNUNET_LESIONLOSS_CONFIG"
    nnunet-lesionloss config "$TRAINER" || { echo "error: the override does not fit $TRAINER (see above)" >&2; exit 2; }
else
    echo "config override: none (NNUNET_LESIONLOSS_CONFIG is not set; $TRAINER uses its defaults)"
fi

LOG_DIR=${LOG_DIR:-cv_logs}
mkdir -p "$LOG_DIR"

train_fold() {  # fold [gpu]
    local fold=$1 gpu=${2:-}
    local log="$LOG_DIR/${TRAINER}_${CONFIG}_fold${fold}.log"
    echo "fold $fold${gpu:+ on GPU $gpu} -> $log"
    if [[ -n $gpu ]]; then
        CUDA_VISIBLE_DEVICES=$gpu nnUNetv2_train "$DATASET" "$CONFIG" "$fold" -tr "$TRAINER" -p "$PLANS" --npz "${EXTRA[@]}" >"$log" 2>&1
    else
        nnUNetv2_train "$DATASET" "$CONFIG" "$fold" -tr "$TRAINER" -p "$PLANS" --npz "${EXTRA[@]}" >"$log" 2>&1
    fi
}

if [[ -n $GPUS ]]; then
    IFS=',' read -r -a GPU_LIST <<<"$GPUS"
    declare -A RUNNING=()  # gpu -> pid
    failed=0
    for fold in $FOLDS; do
        # wait for a free GPU: each GPU trains one fold at a time
        while true; do
            for gpu in "${GPU_LIST[@]}"; do
                pid=${RUNNING[$gpu]:-}
                if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
                    if [[ -n $pid ]]; then wait "$pid" || failed=1; fi
                    train_fold "$fold" "$gpu" &
                    RUNNING[$gpu]=$!
                    continue 3
                fi
            done
            sleep "${POLL_SECONDS:-10}"  # a GPU frees up when its fold ends
        done
    done
    for pid in "${RUNNING[@]}"; do
        wait "$pid" || failed=1
    done
    if [[ $failed -ne 0 ]]; then
        echo "error: at least one fold failed; see $LOG_DIR" >&2
        exit 1
    fi
else
    for fold in $FOLDS; do
        train_fold "$fold"
    done
fi

# nnU-Net names the dataset folder DatasetXXX_Name; resolve an id to it
if [[ $DATASET =~ ^[0-9]+$ ]]; then
    DATASET_DIR=$(find "$nnUNet_results" -maxdepth 1 -type d -name "Dataset$(printf '%03d' "$DATASET")_*" | head -n 1)
else
    DATASET_DIR="$nnUNet_results/$DATASET"
fi
RUN_DIR="$DATASET_DIR/${TRAINER}__${PLANS}__${CONFIG}"
if [[ ! -d $RUN_DIR ]]; then
    echo "error: results folder not found: $RUN_DIR" >&2
    exit 1
fi
nnunet-lesionloss cv-summary "$RUN_DIR" --preset "$PRESET" --overwrite
echo "summary: $RUN_DIR/lesion_evaluation/cv_summary.md"
