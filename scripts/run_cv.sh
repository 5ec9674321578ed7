#!/usr/bin/env bash
# 5-fold cross-validation of one trainer with nnU-Net v2, then the lesion-wise summary: on local GPUs,
# or as a SLURM job array (one GPU per fold) with a dependent cv-summary job; with --repeats N, every fold
# N times, each repeat in an nnU-Net results root of its own (docs/repeats.md).
set -euo pipefail

usage() {
    cat <<'EOF_USAGE'
Usage: scripts/run_cv.sh DATASET CONFIG TRAINER [--gpus 0,1,...] [--plans PLANS] [--folds "0 1 2 3 4"]
                         [--repeats N [--repeat-ids "1 2"]] [--preset NAME] [-- EXTRA nnUNetv2_train ARGS]
       scripts/run_cv.sh DATASET CONFIG TRAINER --slurm [--partition P] [--time T] [--account A]
                         [--sbatch-arg ARG]... [--job-dir DIR] [--dry-run] [--plans ...] [--folds ...]
                         [--repeats N [--repeat-ids ...]] [--preset NAME] [-- EXTRA nnUNetv2_train ARGS]

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

  --folds   fold numbers, separated by spaces or commas (default "0 1 2 3 4"); each must be a fold of
            the dataset's split (its splits_final.json, else nnU-Net's 5); cv-summary then
            summarises these folds only

  --repeats N   trains every fold N times (training repeats: nnU-Net's training is not deterministic, and
            a difference between losses smaller than the spread between retrainings is no property of
            the loss). Repeat r is trained into its own nnU-Net results root,
                $nnUNet_results/repeats/repeat_<r>/<Dataset>/TRAINER__PLANS__CONFIG/fold_<f>
            which nnU-Net's CLI uses as it is (nnUNet_results=$nnUNet_results/repeats/repeat_<r>
            nnUNetv2_predict ...); the run over its repeats is $nnUNet_results/repeats/<Dataset>/
            TRAINER__PLANS__CONFIG, whose repeats.json names them (written before the first training).
            cv-summary then summarises every repeat trained. See docs/repeats.md.
  --repeat-ids  which of the repeats 1..N to train now (numbers separated by spaces or commas; default
            all): e.g. --repeats 5 --repeat-ids 4,5 adds two repeats to a run trained with --repeats 3

A fold that fails does not stop the others; the script then names the failed folds (with --repeats:
each failed repeat and fold), skips cv-summary and exits with status 1. To resume, pass nnU-Net's
--c (-- --c): every fold (of every repeat) continues from its own latest checkpoint.

SLURM (--slurm): writes two batch scripts to --job-dir (default $LOG_DIR/slurm): a job array with one
task per fold (with --repeats: per repeat and fold, repeat-major; one GPU each: --gres=gpu:1) and a
cv-summary job that starts when every task has succeeded (--dependency=afterok), and submits them with
sbatch. --partition, --time and --account are passed to both jobs, each --sbatch-arg (e.g.
--sbatch-arg=--qos=high, --sbatch-arg=--mem=64G) too (values with control characters are refused; every
value is quoted in the scripts). The scripts
export the nnU-Net folders, nnUNet_extTrainer, NNUNET_LESIONLOSS_CONFIG (if set; absolute paths) and
the PATH of this shell, so the jobs run with the same installation. --dry-run writes both scripts
(and says where), prints them and the sbatch commands, and submits nothing.

Multi-GPU training of a single fold is nnU-Net's own: pass -- -num_gpus N (DDP).

Needs nnUNet_raw, nnUNet_preprocessed and nnUNet_results; for the trainers of this package also
run  eval "$(nnunet-lesionloss env)"  (it exports nnUNet_extTrainer). Logs go to $LOG_DIR (cv_logs).
Before the first fold (of the first repeat), `nnunet-lesionloss config TRAINER DATASET CONFIG -p PLANS
--preset PRESET --folds FOLDS` checks what every fold would check at start: that nnU-Net finds TRAINER,
that the dataset is planned for CONFIG, that the folds are folds of its split, that the loss config (with
NNUNET_LESIONLOSS_CONFIG, printed with what it changes) is one TRAINER accepts for it, and that the
evaluation preset exists; anything wrong stops the script there.
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
# a dataset id is a decimal number (010 is dataset 10, as nnU-Net reads it: never octal); a name is
# nnU-Net's folder name DatasetXXX_Name
if [[ ! $DATASET =~ ^[0-9]+$ && ! $DATASET =~ ^Dataset[0-9]{3,}_[^/]+$ ]]; then
    echo "error: DATASET must be a dataset id (e.g. 501) or nnU-Net's dataset name (e.g. Dataset501_MSLesSeg), got '$DATASET'" >&2
    exit 2
fi
GPUS="" PLANS="nnUNetPlans" FOLDS="0 1 2 3 4" FOLDS_GIVEN=0 PRESET="default" EXTRA=()
SLURM=0 DRY_RUN=0 JOB_DIR="" SBATCH_ARGS=() REPEATS="" REPEAT_IDS=""
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
        --repeats) value_of "$@"; REPEATS=$2; shift 2 ;;
        --repeat-ids) value_of "$@"; REPEAT_IDS=$2; shift 2 ;;
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
number_list() {  # option noun example text: the numbers of a list separated by spaces or commas (decimal,
    # never globbed), into NUMBERS; refuses anything else and a number listed twice
    local option=$1 noun=$2 example=$3 text=$4 word seen
    NUMBERS=()
    IFS=', ' read -r -a WORDS <<<"$text"
    for word in "${WORDS[@]}"; do
        if [[ ! $word =~ ^[0-9]+$ ]]; then
            echo "error: $option takes $noun numbers separated by spaces or commas (e.g. \"$example\"), got '$word'" >&2
            exit 2
        fi
        word=$((10#$word))
        for seen in "${NUMBERS[@]}"; do
            [[ $seen -eq $word ]] && { echo "error: $noun $word is listed twice in $option" >&2; exit 2; }
        done
        NUMBERS+=("$word")
    done
    if [[ ${#NUMBERS[@]} -eq 0 ]]; then
        echo "error: $option lists no $noun" >&2
        exit 2
    fi
}
# the folds as a list of fold numbers (never word-split or globbed: a "*" is refused, not expanded)
number_list --folds fold "0 1 2 3 4" "$FOLDS"
FOLD_LIST=("${NUMBERS[@]}")
# the repeats: REPEAT_LIST holds the repeats to train now (1..N, or --repeat-ids); empty without --repeats
REPEAT_LIST=()
if [[ -n $REPEATS ]]; then
    if [[ ! $REPEATS =~ ^[0-9]+$ ]] || [[ $((10#$REPEATS)) -lt 1 ]]; then
        echo "error: --repeats takes the number of repeats, an integer >= 1, got '$REPEATS'" >&2
        exit 2
    fi
    REPEATS=$((10#$REPEATS))
    if [[ -n $REPEAT_IDS ]]; then
        number_list --repeat-ids repeat "4 5" "$REPEAT_IDS"
        for repeat in "${NUMBERS[@]}"; do
            if [[ $repeat -lt 1 || $repeat -gt $REPEATS ]]; then
                echo "error: --repeat-ids takes repeats 1 to $REPEATS (--repeats $REPEATS), got $repeat" >&2
                exit 2
            fi
        done
        REPEAT_LIST=("${NUMBERS[@]}")
    else
        for ((repeat = 1; repeat <= REPEATS; repeat++)); do REPEAT_LIST+=("$repeat"); done
    fi
elif [[ -n $REPEAT_IDS ]]; then
    echo "error: --repeat-ids needs --repeats (the run's number of repeats)" >&2
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
# CONFIG, the folds of its split, the loss config (with the override in use, printed) and the evaluation
# preset of cv-summary
if [[ -n ${NNUNET_LESIONLOSS_CONFIG:-} ]]; then
    echo "config override in use: NNUNET_LESIONLOSS_CONFIG=$NNUNET_LESIONLOSS_CONFIG"
else
    echo "config override: none (NNUNET_LESIONLOSS_CONFIG is not set; $TRAINER uses its defaults)"
fi
if ! nnunet-lesionloss config "$TRAINER" "$DATASET" "$CONFIG" -p "$PLANS" --preset "$PRESET" --folds "${FOLD_LIST[@]}"; then
    echo "error: $TRAINER would not start on $DATASET $CONFIG (see above); nothing was trained or submitted" >&2
    exit 2
fi

# nnU-Net's name of the dataset (its folder DatasetXXX_Name), as nnU-Net resolves the id: the check above
# found it planned in nnUNet_preprocessed
if [[ $DATASET =~ ^[0-9]+$ ]]; then
    DATASET_PREFIX=$(printf 'Dataset%03d_' "$((10#$DATASET))")
    shopt -s nullglob
    NAMES=("$nnUNet_preprocessed/$DATASET_PREFIX"*/)
    shopt -u nullglob
    if [[ ${#NAMES[@]} -ne 1 ]]; then
        echo "error: dataset $DATASET: ${#NAMES[@]} folders ${DATASET_PREFIX}* in $nnUNet_preprocessed (one expected)" >&2
        exit 2
    fi
    DATASET_NAME=$(basename "${NAMES[0]}")
else
    DATASET_NAME=$DATASET
fi
IDENTIFIER="${TRAINER}__${PLANS}__${CONFIG}"

LOG_DIR=$(absolute "${LOG_DIR:-cv_logs}")
mkdir -p "$LOG_DIR"

# the trainings: "REPEAT FOLD" pairs (REPEAT "-" without --repeats), repeat by repeat; each repeat's
# nnU-Net results root; its name in messages and logs
JOBS=()
if [[ ${#REPEAT_LIST[@]} -gt 0 ]]; then
    for repeat in "${REPEAT_LIST[@]}"; do
        for fold in "${FOLD_LIST[@]}"; do JOBS+=("$repeat $fold"); done
    done
else
    for fold in "${FOLD_LIST[@]}"; do JOBS+=("- $fold"); done
fi
REPEATS_ROOT="$nnUNet_results/repeats"
results_root() { if [[ $1 == - ]]; then echo "$nnUNet_results"; else echo "$REPEATS_ROOT/repeat_$1"; fi; }
job_name() { if [[ $1 == - ]]; then echo "fold $2"; else echo "repeat $1 fold $2"; fi; }
log_file() {
    if [[ $1 == - ]]; then echo "$LOG_DIR/${TRAINER}_${CONFIG}_fold$2.log"; else echo "$LOG_DIR/${TRAINER}_${CONFIG}_repeat$1_fold$2.log"; fi
}
# the run folders cv-summary summarises: the run, or each repeat trained now
SUMMARY_RUNS=()
if [[ ${#REPEAT_LIST[@]} -gt 0 ]]; then
    for repeat in "${REPEAT_LIST[@]}"; do SUMMARY_RUNS+=("$(results_root "$repeat")/$DATASET_NAME/$IDENTIFIER"); done
else
    SUMMARY_RUNS=("$nnUNet_results/$DATASET_NAME/$IDENTIFIER")
fi
record_repeats() {  # the manifest of the run over its repeats, before the first training
    [[ ${#REPEAT_LIST[@]} -gt 0 ]] || return 0
    local folds=()
    [[ $FOLDS_GIVEN -eq 1 ]] && folds=(--folds "${FOLD_LIST[@]}")
    nnunet-lesionloss record-repeats "$DATASET_NAME" "$CONFIG" "$TRAINER" -p "$PLANS" --repeats "$REPEATS" "${folds[@]}" || {
        echo "error: the repeats of this run could not be recorded (see above); nothing was trained or submitted" >&2
        exit 2
    }
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
    TRAIN_SCRIPT="$JOB_DIR/${NAME}_train.sbatch"
    SUMMARY_SCRIPT="$JOB_DIR/${NAME}_summary.sbatch"
    {
        if [[ ${#REPEAT_LIST[@]} -gt 0 ]]; then
            # one task per (repeat, fold): task k is repeat REPEAT_IDS[k / folds], fold FOLDS[k % folds]
            slurm_header "${NAME}" "$LOGS/${TRAINER}_${CONFIG}_repeats_task%a.log" "0-$((${#JOBS[@]} - 1))"
            printf 'REPEAT_IDS=(%s)\nFOLDS=(%s)\n' "${REPEAT_LIST[*]}" "${FOLD_LIST[*]}"
            printf 'REPEAT=${REPEAT_IDS[SLURM_ARRAY_TASK_ID / ${#FOLDS[@]}]} FOLD=${FOLDS[SLURM_ARRAY_TASK_ID %% ${#FOLDS[@]}]}\n'
            printf 'export nnUNet_results=%q/repeat_"$REPEAT"\n' "$REPEATS_ROOT"
            printf 'echo "array task $SLURM_ARRAY_TASK_ID: repeat $REPEAT fold $FOLD (nnUNet_results=$nnUNet_results)"\n'
            printf 'nnUNetv2_train %q %q "$FOLD" -tr %q -p %q --npz' "$DATASET" "$CONFIG" "$TRAINER" "$PLANS"
        else
            slurm_header "${NAME}" "$LOGS/${TRAINER}_${CONFIG}_fold%a.log" "$(IFS=,; echo "${FOLD_LIST[*]}")"
            printf 'nnUNetv2_train %q %q "$SLURM_ARRAY_TASK_ID" -tr %q -p %q --npz' "$DATASET" "$CONFIG" "$TRAINER" "$PLANS"
        fi
        [[ ${#EXTRA[@]} -gt 0 ]] && printf ' %q' "${EXTRA[@]}"
        printf '\n'
    } >"$TRAIN_SCRIPT"
    {
        slurm_header "${NAME}_summary" "$LOGS/${TRAINER}_${CONFIG}_cv_summary.log"
        # every run folder is summarised, a failing one named; the job fails if any did
        printf 'status=0\n'
        for run in "${SUMMARY_RUNS[@]}"; do
            printf 'nnunet-lesionloss cv-summary %q --preset %q --overwrite --quiet' "$run" "$PRESET"
            [[ ${#SUMMARY_FOLDS[@]} -gt 0 ]] && printf ' %q' "${SUMMARY_FOLDS[@]}"
            printf ' || { status=$?; echo %q >&2; }\n' "error: cv-summary of $run failed"
            printf 'echo %q\n' "summary: $run/lesion_evaluation/cv_summary.md"
        done
        printf 'exit "$status"\n'
    } >"$SUMMARY_SCRIPT"
    echo "job scripts written to $JOB_DIR: $(basename "$TRAIN_SCRIPT"), $(basename "$SUMMARY_SCRIPT")"
    if [[ ${#REPEAT_LIST[@]} -gt 0 ]]; then
        echo "array tasks (repeat, fold): $(for k in "${!JOBS[@]}"; do read -r repeat fold <<<"${JOBS[$k]}"; printf '%s=repeat %s fold %s; ' "$k" "$repeat" "$fold"; done)"
    fi
    if [[ $DRY_RUN -eq 1 ]]; then
        for script in "$TRAIN_SCRIPT" "$SUMMARY_SCRIPT"; do
            echo "===== $script"
            cat "$script"
        done
        echo "===== would run (dry run: nothing submitted)"
        [[ ${#REPEAT_LIST[@]} -gt 0 ]] && printf 'nnunet-lesionloss record-repeats %q %q %q -p %q --repeats %q\n' \
            "$DATASET_NAME" "$CONFIG" "$TRAINER" "$PLANS" "$REPEATS"
        printf 'sbatch --parsable %q\n' "$TRAIN_SCRIPT"
        printf 'sbatch --dependency=afterok:<array job id> %q\n' "$SUMMARY_SCRIPT"
        exit 0
    fi
    command -v sbatch >/dev/null || { echo "error: sbatch not found (is this a SLURM login node?); try --dry-run" >&2; exit 2; }
    record_repeats
    ARRAY_JOB=$(sbatch --parsable "$TRAIN_SCRIPT")
    ARRAY_JOB=${ARRAY_JOB%%;*}  # --parsable prints "jobid[;cluster]"
    SUMMARY_JOB=$(sbatch --parsable --dependency="afterok:$ARRAY_JOB" "$SUMMARY_SCRIPT")
    if [[ ${#REPEAT_LIST[@]} -gt 0 ]]; then
        echo "submitted repeats ${REPEAT_LIST[*]} of folds ${FOLD_LIST[*]} as array job $ARRAY_JOB (${#JOBS[@]} tasks) and cv-summary as job ${SUMMARY_JOB%%;*} (after all tasks succeed)"
    else
        echo "submitted folds ${FOLD_LIST[*]} as array job $ARRAY_JOB and cv-summary as job ${SUMMARY_JOB%%;*} (after all folds succeed)"
    fi
    echo "logs: $LOGS"
    exit 0
fi

# ------------------------------------------------------------------ local GPUs (or the CPU)
record_repeats
train_job() {  # "repeat fold" [gpu]: trains one fold (of one repeat); a failure is said here, with its log
    local repeat fold gpu=${2:-} status=0
    read -r repeat fold <<<"$1"
    local log name root
    log=$(log_file "$repeat" "$fold") name=$(job_name "$repeat" "$fold") root=$(results_root "$repeat")
    echo "$name${gpu:+ on GPU $gpu} -> $log"
    if [[ -n $gpu ]]; then
        CUDA_VISIBLE_DEVICES=$gpu nnUNet_results=$root nnUNetv2_train "$DATASET" "$CONFIG" "$fold" -tr "$TRAINER" -p "$PLANS" --npz "${EXTRA[@]}" >"$log" 2>&1 || status=$?
    else
        nnUNet_results=$root nnUNetv2_train "$DATASET" "$CONFIG" "$fold" -tr "$TRAINER" -p "$PLANS" --npz "${EXTRA[@]}" >"$log" 2>&1 || status=$?
    fi
    if [[ $status -ne 0 ]]; then
        echo "error: $name failed (nnUNetv2_train exit status $status); last lines of $log:" >&2
        tail -n 5 "$log" | sed 's/^/    /' >&2
    fi
    return "$status"
}

FAILED=()  # "repeat fold" of each failed training
if [[ -n $GPUS ]]; then
    IFS=',' read -r -a GPU_LIST <<<"$GPUS"
    declare -A RUNNING=()  # gpu -> pid
    declare -A JOB_OF=()  # pid -> "repeat fold"
    for job in "${JOBS[@]}"; do
        # wait for a free GPU: each GPU trains one fold at a time
        while true; do
            for gpu in "${GPU_LIST[@]}"; do
                pid=${RUNNING[$gpu]:-}
                if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
                    if [[ -n $pid ]]; then wait "$pid" || FAILED+=("${JOB_OF[$pid]}"); fi
                    train_job "$job" "$gpu" &
                    RUNNING[$gpu]=$!
                    JOB_OF[$!]=$job
                    continue 3
                fi
            done
            sleep "${POLL_SECONDS:-10}"  # a GPU frees up when its fold ends
        done
    done
    for pid in "${RUNNING[@]}"; do
        wait "$pid" || FAILED+=("${JOB_OF[$pid]}")
    done
else
    for job in "${JOBS[@]}"; do
        train_job "$job" || FAILED+=("$job")
    done
fi
if [[ ${#FAILED[@]} -gt 0 ]]; then
    if [[ ${#REPEAT_LIST[@]} -gt 0 ]]; then
        names=()
        for job in "${FAILED[@]}"; do read -r repeat fold <<<"$job"; names+=("$(job_name "$repeat" "$fold")"); done
        failed=$(printf '%s, ' "${names[@]}")
        echo "error: ${#FAILED[@]} of ${#JOBS[@]} trainings failed: ${failed%, } (repeats ${REPEAT_LIST[*]} x folds ${FOLD_LIST[*]}; see above and $LOG_DIR); cv-summary was not run" >&2
    else
        failed=()
        for job in "${FAILED[@]}"; do failed+=("${job#- }"); done
        echo "error: fold(s) ${failed[*]} of ${FOLD_LIST[*]} failed (see above and $LOG_DIR); cv-summary was not run" >&2
    fi
    exit 1
fi

SUMMARY_STATUS=0
for RUN_DIR in "${SUMMARY_RUNS[@]}"; do
    if [[ ! -d $RUN_DIR ]]; then
        echo "error: results folder not found: $RUN_DIR" >&2
        SUMMARY_STATUS=1
        continue
    fi
    nnunet-lesionloss cv-summary "$RUN_DIR" --preset "$PRESET" --overwrite "${SUMMARY_FOLDS[@]}" || {
        SUMMARY_STATUS=$?
        echo "error: cv-summary of $RUN_DIR exited with status $SUMMARY_STATUS (see above)" >&2
    }
    if [[ ${#SUMMARY_FOLDS[@]} -gt 0 ]]; then
        echo "note: the summary covers folds ${FOLD_LIST[*]} only (--folds); once every fold is trained:" \
            "nnunet-lesionloss cv-summary $(printf '%q' "$RUN_DIR") --preset $(printf '%q' "$PRESET") --overwrite"
    fi
    echo "summary: $RUN_DIR/lesion_evaluation/cv_summary.md"
done
if [[ ${#REPEAT_LIST[@]} -gt 0 ]]; then
    echo "the repeats of this run: $REPEATS_ROOT/$DATASET_NAME/$IDENTIFIER/repeats.json"
fi
exit "$SUMMARY_STATUS"
