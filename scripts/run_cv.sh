#!/usr/bin/env bash
# 5-fold cross-validation of one trainer with nnU-Net v2, then the lesion-wise summary: on local GPUs,
# or as a SLURM job array (one GPU per fold) with a dependent cv-summary job.
set -euo pipefail

usage() {
    cat <<'EOF_USAGE'
Usage: scripts/run_cv.sh DATASET CONFIG TRAINER [--gpus 0,1,...] [--plans PLANS] [--folds "0 1 2 3 4"]
                         [--preset NAME] [-- EXTRA nnUNetv2_train ARGS]
       scripts/run_cv.sh DATASET CONFIG TRAINER --slurm [--partition P] [--time T] [--account A]
                         [--sbatch-arg ARG]... [--job-dir DIR] [--dry-run] [--plans ...] [--folds ...]
                         [--preset NAME] [-- EXTRA nnUNetv2_train ARGS]

Trains folds 0-4 with nnUNetv2_train (with --npz, so nnU-Net keeps the validation outputs), one fold
per listed GPU in parallel (CUDA_VISIBLE_DEVICES), or one after the other without --gpus, then runs
  nnunet-lesionloss cv-summary $nnUNet_results/<Dataset>/<TRAINER>__<PLANS>__<CONFIG>
The trainers of this package evaluate each fold when it ends (fold_X/validation/lesion_evaluation);
cv-summary reuses those evaluations when they were made with its settings.

  DATASET   dataset id or name, e.g. 501 or Dataset501_MSLesSeg
  CONFIG    nnU-Net configuration, e.g. 3d_fullres
  TRAINER   e.g. nnUNetTrainer, nnUNetTrainerDiceCE, nnUNetTrainerCATMIL
  --gpus    comma-separated GPU ids; folds are distributed over them round-robin
  --plans   plans identifier (default nnUNetPlans)
  --preset  evaluation preset for cv-summary (default: default)

  --folds   fold numbers, separated by spaces or commas (default "0 1 2 3 4"); cv-summary then
            summarises these folds only

A fold that fails does not stop the others; the script then names the failed folds, skips cv-summary
and exits with status 1.

SLURM (--slurm): writes two batch scripts to --job-dir (default $LOG_DIR/slurm): a job array with one
task per fold (one GPU each: --gres=gpu:1) and a cv-summary job that starts when every fold has
succeeded (--dependency=afterok), and submits them with sbatch. --partition, --time and --account
are passed to both jobs, each --sbatch-arg (e.g. --sbatch-arg=--qos=high, --sbatch-arg=--mem=64G)
too (values with control characters are refused; every value is quoted in the scripts). The scripts
export the nnU-Net folders, nnUNet_extTrainer, NNUNET_LESIONLOSS_CONFIG (if set; absolute paths) and
the PATH of this shell, so the jobs run with the same installation. --dry-run writes both scripts
(and says where), prints them and the sbatch commands, and submits nothing.

Multi-GPU training of a single fold is nnU-Net's own: pass -- -num_gpus N (DDP).

Needs nnUNet_raw, nnUNet_preprocessed and nnUNet_results; for the trainers of this package also
run  eval "$(nnunet-lesionloss env)"  (it exports nnUNet_extTrainer). Logs go to $LOG_DIR (cv_logs).
Before the first fold, `nnunet-lesionloss config TRAINER DATASET CONFIG -p PLANS --preset PRESET`
checks what every fold would check at start: that nnU-Net finds TRAINER, that the dataset is planned
for CONFIG, that the loss config (with NNUNET_LESIONLOSS_CONFIG, printed with what it changes) is one
TRAINER accepts for it, and that the evaluation preset exists; anything wrong stops the script there.
EOF_USAGE
}

if [[ $# -lt 3 ]]; then
    usage >&2
    exit 2
fi
# a control character (a newline above all) in a value written into a job script would start a line of
# its own there, which the job would run: every argument is refused with one, before anything is written
for arg in "$@"; do
    if [[ $arg == *[[:cntrl:]]* ]]; then
        printf 'error: argument %q contains a control character (newline, tab, ...): refused\n' "$arg" >&2
        exit 2
    fi
done
DATASET=$1 CONFIG=$2 TRAINER=$3
shift 3
if [[ ! $TRAINER =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    echo "error: TRAINER must be a trainer class name (letters, digits, _), got '$TRAINER'" >&2
    exit 2
fi
GPUS="" PLANS="nnUNetPlans" FOLDS="0 1 2 3 4" FOLDS_GIVEN=0 PRESET="default" EXTRA=()
SLURM=0 DRY_RUN=0 JOB_DIR="" SBATCH_ARGS=()
value_of() {  # option value: refuses a missing one (the end of the line, or the next option for all but --sbatch-arg)
    if [[ $# -lt 2 ]] || [[ $1 != --sbatch-arg && $2 == --* ]]; then
        echo "error: $1 needs a value" >&2
        exit 2
    fi
}
while [[ $# -gt 0 ]]; do
    case $1 in
        --gpus) value_of "$@"; GPUS=$2; shift 2 ;;
        --plans) value_of "$@"; PLANS=$2; shift 2 ;;
        --folds) value_of "$@"; FOLDS=$2; FOLDS_GIVEN=1; shift 2 ;;
        --preset) value_of "$@"; PRESET=$2; shift 2 ;;
        --slurm) SLURM=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --partition|--time|--account) value_of "$@"; SBATCH_ARGS+=("$1=$2"); shift 2 ;;
        --partition=*|--time=*|--account=*) SBATCH_ARGS+=("$1"); shift ;;
        --sbatch-arg) value_of "$@"; SBATCH_ARGS+=("$2"); shift 2 ;;
        --sbatch-arg=*) SBATCH_ARGS+=("${1#--sbatch-arg=}"); shift ;;
        --job-dir) value_of "$@"; JOB_DIR=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done
# the folds as a list of fold numbers (never word-split or globbed: a "*" is refused, not expanded)
FOLD_LIST=()
IFS=', ' read -r -a FOLD_WORDS <<<"$FOLDS"
for fold in "${FOLD_WORDS[@]}"; do
    if [[ ! $fold =~ ^[0-9]+$ ]]; then
        echo "error: --folds takes fold numbers separated by spaces or commas (e.g. \"0 1 2 3 4\"), got '$fold'" >&2
        exit 2
    fi
    fold=$((10#$fold))
    for seen in "${FOLD_LIST[@]}"; do
        [[ $seen -eq $fold ]] && { echo "error: fold $fold is listed twice in --folds" >&2; exit 2; }
    done
    FOLD_LIST+=("$fold")
done
if [[ ${#FOLD_LIST[@]} -eq 0 ]]; then
    echo "error: --folds lists no fold" >&2
    exit 2
fi
# cv-summary of the folds asked for (without --folds it checks that every fold of the split was trained)
SUMMARY_FOLDS=()
[[ $FOLDS_GIVEN -eq 1 ]] && SUMMARY_FOLDS=(--folds "${FOLD_LIST[@]}")
if [[ $SLURM -eq 0 && ( $DRY_RUN -eq 1 || ${#SBATCH_ARGS[@]} -gt 0 || -n $JOB_DIR ) ]]; then
    echo "error: --dry-run, --partition, --time, --account, --sbatch-arg and --job-dir need --slurm" >&2
    exit 2
fi
if [[ $SLURM -eq 1 && -n $GPUS ]]; then
    echo "error: --gpus is for local runs; with --slurm every fold gets one GPU of its own" >&2
    exit 2
fi

for var in nnUNet_raw nnUNet_preprocessed nnUNet_results; do
    if [[ -z ${!var:-} ]]; then
        echo "error: environment variable $var is not set (nnU-Net needs it)" >&2
        exit 2
    fi
done
command -v nnUNetv2_train >/dev/null || { echo "error: nnUNetv2_train not found (pip install nnunetv2)" >&2; exit 2; }
command -v nnunet-lesionloss >/dev/null || { echo "error: nnunet-lesionloss not found (pip install -e .)" >&2; exit 2; }

# folders as absolute paths: the job scripts (and the folds) may run in another working directory
absolute() { if [[ $1 == /* ]]; then echo "$1"; else echo "$PWD/$1"; fi; }
for var in nnUNet_raw nnUNet_preprocessed nnUNet_results NNUNET_LESIONLOSS_CONFIG; do
    if [[ -n ${!var:-} ]]; then
        export "$var=$(absolute "${!var}")"
    fi
done

# what every fold checks at start, checked once before the first: the trainer, the dataset's plans for
# CONFIG, the loss config (with the override in use, printed) and the evaluation preset of cv-summary
if [[ -n ${NNUNET_LESIONLOSS_CONFIG:-} ]]; then
    echo "config override in use: NNUNET_LESIONLOSS_CONFIG=$NNUNET_LESIONLOSS_CONFIG"
else
    echo "config override: none (NNUNET_LESIONLOSS_CONFIG is not set; $TRAINER uses its defaults)"
fi
if ! nnunet-lesionloss config "$TRAINER" "$DATASET" "$CONFIG" -p "$PLANS" --preset "$PRESET"; then
    echo "error: $TRAINER would not start on $DATASET $CONFIG (see above); nothing was trained or submitted" >&2
    exit 2
fi

LOG_DIR=$(absolute "${LOG_DIR:-cv_logs}")
mkdir -p "$LOG_DIR"

# nnU-Net names the dataset folder DatasetXXX_Name; resolve an id to it
resolve_run_dir() {
    local dataset_dir
    if [[ $DATASET =~ ^[0-9]+$ ]]; then
        dataset_dir=$(find "$nnUNet_results" -maxdepth 1 -type d -name "Dataset$(printf '%03d' "$DATASET")_*" | head -n 1)
    else
        dataset_dir="$nnUNet_results/$DATASET"
    fi
    echo "$dataset_dir/${TRAINER}__${PLANS}__${CONFIG}"
}

# ------------------------------------------------------------------ SLURM: a job array and a dependent summary
sbatch_word() {  # one #SBATCH argument as sbatch reads it: as it is when plain, else in double quotes
    if [[ $1 =~ ^[A-Za-z0-9_.,:=/@%+-]+$ ]]; then
        printf '%s' "$1"
    else  # sbatch groups a quoted word and takes a backslash-escaped character as it is
        local escaped=${1//\\/\\\\}
        printf '"%s"' "${escaped//\"/\\\"}"
    fi
}

slurm_header() {  # job-name output-pattern [array]
    echo "#!/usr/bin/env bash"
    echo "#SBATCH $(sbatch_word "--job-name=$1")"
    echo "#SBATCH $(sbatch_word "--output=$2")"
    [[ -n ${3:-} ]] && echo "#SBATCH $(sbatch_word "--array=$3")" && echo "#SBATCH --gres=gpu:1"
    local arg
    for arg in "${SBATCH_ARGS[@]}"; do
        echo "#SBATCH $(sbatch_word "$arg")"
    done
    echo "set -euo pipefail"
    local var
    for var in PATH nnUNet_raw nnUNet_preprocessed nnUNet_results nnUNet_extTrainer NNUNET_LESIONLOSS_CONFIG; do
        [[ -n ${!var:-} ]] && printf 'export %s=%q\n' "$var" "${!var}"
    done
    return 0
}

if [[ $SLURM -eq 1 ]]; then
    JOB_DIR=$(absolute "${JOB_DIR:-$LOG_DIR/slurm}")
    mkdir -p "$JOB_DIR"
    LOGS=$LOG_DIR
    NAME="cv_${TRAINER}_${CONFIG}"
    ARRAY=$(IFS=,; echo "${FOLD_LIST[*]}")
    TRAIN_SCRIPT="$JOB_DIR/${NAME}_train.sbatch"
    SUMMARY_SCRIPT="$JOB_DIR/${NAME}_summary.sbatch"
    {
        slurm_header "${NAME}" "$LOGS/${TRAINER}_${CONFIG}_fold%a.log" "$ARRAY"
        printf 'nnUNetv2_train %q %q "$SLURM_ARRAY_TASK_ID" -tr %q -p %q --npz' "$DATASET" "$CONFIG" "$TRAINER" "$PLANS"
        [[ ${#EXTRA[@]} -gt 0 ]] && printf ' %q' "${EXTRA[@]}"
        printf '\n'
    } >"$TRAIN_SCRIPT"
    {
        slurm_header "${NAME}_summary" "$LOGS/${TRAINER}_${CONFIG}_cv_summary.log"
        if [[ $DATASET =~ ^[0-9]+$ ]]; then  # the results folder exists only once a fold has started
            printf 'DATASET_DIR=$(find "$nnUNet_results" -maxdepth 1 -type d -name %q | head -n 1)\n' "Dataset$(printf '%03d' "$DATASET")_*"
        else
            printf 'DATASET_DIR=%q\n' "$nnUNet_results/$DATASET"
        fi
        printf 'nnunet-lesionloss cv-summary "$DATASET_DIR"/%q --preset %q --overwrite --quiet' \
            "${TRAINER}__${PLANS}__${CONFIG}" "$PRESET"
        [[ ${#SUMMARY_FOLDS[@]} -gt 0 ]] && printf ' %q' "${SUMMARY_FOLDS[@]}"
        printf '\n'
        printf 'echo "summary: $DATASET_DIR/"%q"/lesion_evaluation/cv_summary.md"\n' "${TRAINER}__${PLANS}__${CONFIG}"
    } >"$SUMMARY_SCRIPT"
    echo "job scripts written to $JOB_DIR: $(basename "$TRAIN_SCRIPT"), $(basename "$SUMMARY_SCRIPT")"
    if [[ $DRY_RUN -eq 1 ]]; then
        for script in "$TRAIN_SCRIPT" "$SUMMARY_SCRIPT"; do
            echo "===== $script"
            cat "$script"
        done
        echo "===== would run (dry run: nothing submitted)"
        printf 'sbatch --parsable %q\n' "$TRAIN_SCRIPT"
        printf 'sbatch --dependency=afterok:<array job id> %q\n' "$SUMMARY_SCRIPT"
        exit 0
    fi
    command -v sbatch >/dev/null || { echo "error: sbatch not found (is this a SLURM login node?); try --dry-run" >&2; exit 2; }
    ARRAY_JOB=$(sbatch --parsable "$TRAIN_SCRIPT")
    ARRAY_JOB=${ARRAY_JOB%%;*}  # --parsable prints "jobid[;cluster]"
    SUMMARY_JOB=$(sbatch --parsable --dependency="afterok:$ARRAY_JOB" "$SUMMARY_SCRIPT")
    echo "submitted folds ${FOLD_LIST[*]} as array job $ARRAY_JOB and cv-summary as job ${SUMMARY_JOB%%;*} (after all folds succeed)"
    echo "logs: $LOGS"
    exit 0
fi

# ------------------------------------------------------------------ local GPUs (or the CPU)
train_fold() {  # fold [gpu]: trains one fold; a failure is said here, with the fold's log
    local fold=$1 gpu=${2:-} status=0
    local log="$LOG_DIR/${TRAINER}_${CONFIG}_fold${fold}.log"
    echo "fold $fold${gpu:+ on GPU $gpu} -> $log"
    if [[ -n $gpu ]]; then
        CUDA_VISIBLE_DEVICES=$gpu nnUNetv2_train "$DATASET" "$CONFIG" "$fold" -tr "$TRAINER" -p "$PLANS" --npz "${EXTRA[@]}" >"$log" 2>&1 || status=$?
    else
        nnUNetv2_train "$DATASET" "$CONFIG" "$fold" -tr "$TRAINER" -p "$PLANS" --npz "${EXTRA[@]}" >"$log" 2>&1 || status=$?
    fi
    if [[ $status -ne 0 ]]; then
        echo "error: fold $fold failed (nnUNetv2_train exit status $status); last lines of $log:" >&2
        tail -n 5 "$log" | sed 's/^/    /' >&2
    fi
    return "$status"
}

FAILED=()
if [[ -n $GPUS ]]; then
    IFS=',' read -r -a GPU_LIST <<<"$GPUS"
    declare -A RUNNING=()  # gpu -> pid
    declare -A FOLD_OF=()  # pid -> fold
    for fold in "${FOLD_LIST[@]}"; do
        # wait for a free GPU: each GPU trains one fold at a time
        while true; do
            for gpu in "${GPU_LIST[@]}"; do
                pid=${RUNNING[$gpu]:-}
                if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
                    if [[ -n $pid ]]; then wait "$pid" || FAILED+=("${FOLD_OF[$pid]}"); fi
                    train_fold "$fold" "$gpu" &
                    RUNNING[$gpu]=$!
                    FOLD_OF[$!]=$fold
                    continue 3
                fi
            done
            sleep "${POLL_SECONDS:-10}"  # a GPU frees up when its fold ends
        done
    done
    for pid in "${RUNNING[@]}"; do
        wait "$pid" || FAILED+=("${FOLD_OF[$pid]}")
    done
else
    for fold in "${FOLD_LIST[@]}"; do
        train_fold "$fold" || FAILED+=("$fold")
    done
fi
if [[ ${#FAILED[@]} -gt 0 ]]; then
    echo "error: fold(s) ${FAILED[*]} of ${FOLD_LIST[*]} failed (see above and $LOG_DIR); cv-summary was not run" >&2
    exit 1
fi

RUN_DIR=$(resolve_run_dir)
if [[ ! -d $RUN_DIR ]]; then
    echo "error: results folder not found: $RUN_DIR" >&2
    exit 1
fi
nnunet-lesionloss cv-summary "$RUN_DIR" --preset "$PRESET" --overwrite "${SUMMARY_FOLDS[@]}"
if [[ ${#SUMMARY_FOLDS[@]} -gt 0 ]]; then
    echo "note: the summary covers folds ${FOLD_LIST[*]} only (--folds); once every fold is trained:" \
        "nnunet-lesionloss cv-summary $(printf '%q' "$RUN_DIR") --preset $(printf '%q' "$PRESET") --overwrite"
fi
echo "summary: $RUN_DIR/lesion_evaluation/cv_summary.md"
