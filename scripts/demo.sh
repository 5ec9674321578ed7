#!/usr/bin/env bash
# The main job of the README, on the built-in synthetic dataset, from a fresh clone (CPU is enough):
#   install -> synthetic MS-like dataset -> nnUNetv2_plan_and_preprocess -> short nnUNetv2_train with a
#   lesion-aware trainer -> nnUNetv2_predict on the fold's validation cases -> lesion-wise evaluation.
# Usage: bash scripts/demo.sh [TRAINER] [DEVICE]      (defaults: nnUNetTrainerCATMIL cpu)
#        bash scripts/demo.sh --compare [--repeats N] [DEVICE]
#                                      nnU-Net's DC+CE vs CATMIL, same budget, each trained N times on the same
#                                      split (default 1: three repeats take 15 min 6 s on 2 cores; docs/compare-demo.md)
# Everything is written under $NNUNET_LESIONLOSS_DEMO_DIR (default ./nnunet_work).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=main
REPEATS=1
if [[ ${1:-} == --compare ]]; then
    MODE=compare
    shift
    if [[ ${1:-} == --repeats ]]; then
        REPEATS=${2:-}
        if ! [[ $REPEATS =~ ^[1-9][0-9]*$ ]]; then
            echo "error: --repeats must be a whole number >= 1, got '${REPEATS}'" >&2
            exit 2
        fi
        shift 2
    fi
fi
TRAINER=${1:-nnUNetTrainerCATMIL}
DEVICE=${2:-cpu}
if [[ $MODE == compare ]]; then
    DEVICE=${1:-cpu}
fi
WORK=${NNUNET_LESIONLOSS_DEMO_DIR:-$PWD/nnunet_work}

python3 -m pip install --quiet -e .
export nnUNet_raw=$WORK/raw nnUNet_preprocessed=$WORK/preprocessed nnUNet_results=$WORK/results
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
eval "$(nnunet-lesionloss env)"
export nnUNet_def_n_proc=${nnUNet_def_n_proc:-2} nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-2} nnUNet_compile=${nnUNet_compile:-false}
nnunet-lesionloss doctor

if [[ $MODE == compare ]]; then
    # nnU-Net's own DC+CE (nnUNetTrainerDiceCE) and CATMIL, each trained REPEATS times with the same short budget
    # on the same split of a synthetic dataset (nnU-Net's training is not seeded: each repeat draws its own
    # initialisation, augmentation and patches), each repeat into its own nnU-Net results root
    # ($nnUNet_results/repeats/repeat_<r>, docs/repeats.md), then nnU-Net's final validation of fold 0 (sliding
    # window, with --npz: the probabilities too), the lesion-wise evaluation and FROC analysis of every repeat
    # (cv-summary of each run over its repeats), and the comparison: the table with two-level intervals, P(better)
    # and verdicts, the lesion-size figure and the FROC curves of both runs.
    DATASET_ID=903
    DATASET=Dataset${DATASET_ID}_SyntheticCompare
    OUT=$WORK/compare
    rm -rf "$nnUNet_raw/$DATASET" "$nnUNet_preprocessed/$DATASET" "$nnUNet_results/$DATASET" "$OUT" \
        "$nnUNet_results/repeats/$DATASET" "$nnUNet_results"/repeats/repeat_*/"$DATASET"
    nnunet-lesionloss synth --dataset-id $DATASET_ID --name SyntheticCompare --cases "${DEMO_CASES:-16}" \
        --shape ${DEMO_SHAPE:-32 32 32} --lesions ${DEMO_LESIONS:-30 60} --contrast ${DEMO_CONTRAST:-0.7} --seed 7
    nnUNetv2_plan_and_preprocess -d $DATASET_ID -c 3d_fullres -np 2 --verify_dataset_integrity
    # fold 0: the first half of the cases trains, the second half is validated (both trainers, every repeat)
    python3 - "$nnUNet_preprocessed/$DATASET/splits_final.json" "${DEMO_CASES:-16}" <<'PY'
import json, sys
path, n = sys.argv[1], int(sys.argv[2])
keys = [f"case_{i:03d}" for i in range(n)]
json.dump([{"train": keys[: n // 2], "val": keys[n // 2 :]}], open(path, "w"), indent=1)
PY
    BUDGET="trainer: {num_epochs: ${DEMO_EPOCHS:-15}, num_iterations_per_epoch: ${DEMO_ITERATIONS:-10}, num_val_iterations_per_epoch: 2}"
    mkdir -p "$OUT"
    echo "$BUDGET" >"$OUT/budget.yaml"
    # CATMIL's warm-up of λ_CAT covers the first third of training, as in its authors' schedule (50 of 150 epochs)
    printf '%s\nterms: {cat: {warmup_epochs: %d}}\n' "$BUDGET" $(((${DEMO_EPOCHS:-15} + 2) / 3)) >"$OUT/catmil.yaml"
    TRAINERS=(nnUNetTrainerDiceCE nnUNetTrainerCATMIL)
    for TR in "${TRAINERS[@]}"; do  # the manifest of each run over its repeats, before the first training
        nnunet-lesionloss record-repeats $DATASET 3d_fullres $TR --repeats "$REPEATS" --folds 0
    done
    # repeat-major, the two trainers alternating: a change of the machine's load affects both alike
    for r in $(seq 1 "$REPEATS"); do
        for TR in "${TRAINERS[@]}"; do
            CONFIG=$OUT/budget.yaml
            [[ $TR == nnUNetTrainerCATMIL ]] && CONFIG=$OUT/catmil.yaml
            LOG=$OUT/${TR}_repeat$r.log
            start=$(date +%s)
            nnUNet_results=$nnUNet_results/repeats/repeat_$r NNUNET_LESIONLOSS_CONFIG=$CONFIG \
                nnUNetv2_train $DATASET_ID 3d_fullres 0 -tr $TR -device "$DEVICE" --npz >"$LOG" 2>&1 \
                || { tail -n 30 "$LOG"; exit 1; }
            echo "$TR repeat $r trained in $(($(date +%s) - start)) s (log: $LOG)"
            grep "Lesions on validation patches" "$LOG" | tail -n 1
        done
    done
    RUNS=()
    for TR in "${TRAINERS[@]}"; do
        RUN=$nnUNet_results/repeats/$DATASET/${TR}__nnUNetPlans__3d_fullres
        # lesion size bins for the synthetic lesions: <= 10 voxels, 10-50 voxels, > 50 voxels (1 mm³ voxels)
        nnunet-lesionloss cv-summary "$RUN" --size-bins 0.01 0.05 --overwrite --quiet
        RUNS+=("$RUN")
    done
    nnunet-lesionloss compare "${RUNS[@]}" --names DiceCE CATMIL -o "$OUT" --overwrite
    cat "$OUT/compare.md"
    python3 - "${RUNS[@]}" <<'PY'
import json, sys
rows = []
for name, run in zip(("DiceCE", "CATMIL"), sys.argv[1:]):
    pooled = json.load(open(f"{run}/lesion_evaluation/cv_summary.json"))["across_cases"]["1"]
    bins = [k[len("pooled_bin"):-len("_lesion_recall")] for k in pooled if k.startswith("pooled_bin") and k.endswith("_lesion_recall")]
    rows.append((name, [(b, pooled[f"pooled_bin{b}_lesion_recall"], pooled[f"pooled_bin{b}_n_ref_lesions"]["mean"]) for b in bins]))
print("\nDetection rate by reference lesion volume (pooled over the validation cases; mean over repeats ± sd between"
      " repeats; detection_by_size.png):\n")
print("| lesion volume | lesions | " + " | ".join(name for name, _ in rows) + " |")
print("|---|---|" + "---|" * len(rows))
def cell(entry):
    if entry["mean"] is None:
        return "-"
    sd = entry["sd_between_repeats"]
    return f"{entry['mean']:.3f}" + ("" if sd is None else f" ± {sd:.3f}")
for k, (b, _, n) in enumerate(rows[0][1]):
    print(f"| {b} | {n:g} | " + " | ".join(cell(r[1][k][1]) for r in rows) + " |")
PY
    echo "compare demo done ($REPEATS repeat(s) per trainer): table (compare.md, compare.csv, compare.json) and figures" \
        "(detection_by_size.png, detection_by_volume.png, volume_agreement.png, froc.png) in $OUT"
    exit 0
fi

DATASET_ID=901
DATASET=Dataset${DATASET_ID}_SyntheticLesions
nnunet-lesionloss synth --dataset-id $DATASET_ID --cases 10 --shape 48 48 48 --overwrite  # the demo owns its workspace
nnUNetv2_plan_and_preprocess -d $DATASET_ID -c 3d_fullres -np 2 --verify_dataset_integrity
# the lesions before training: counts, sizes, what deep supervision erases, the Size Penalty tau
nnunet-lesionloss inspect $DATASET_ID -o "$WORK/demo_inspect" --overwrite --quiet
NNUNET_LESIONLOSS_CONFIG=$PWD/scripts/demo_short.yaml \
    nnUNetv2_train $DATASET_ID 3d_fullres 0 -tr "$TRAINER" -device "$DEVICE"

# predict the validation cases of fold 0 with the standard CLI, then evaluate them lesion-wise
INPUT=$WORK/demo_input; REFERENCE=$WORK/demo_reference; OUTPUT=$WORK/demo_predictions
rm -rf "$INPUT" "$REFERENCE" && mkdir -p "$INPUT" "$REFERENCE"
python3 - "$nnUNet_preprocessed/$DATASET/splits_final.json" "$nnUNet_raw/$DATASET" "$INPUT" "$REFERENCE" <<'PY'
import json, os, shutil, sys
splits, raw, images, labels = sys.argv[1:]
for key in json.load(open(splits))[0]["val"]:
    shutil.copy(os.path.join(raw, "imagesTr", f"{key}_0000.nii.gz"), images)
    shutil.copy(os.path.join(raw, "labelsTr", f"{key}.nii.gz"), labels)
PY
nnUNetv2_predict -i "$INPUT" -o "$OUTPUT" -d $DATASET_ID -c 3d_fullres -f 0 -tr "$TRAINER" -device "$DEVICE" -npp 1 -nps 1
nnunet-lesionloss evaluate --gt "$REFERENCE" --pred "$OUTPUT" --dataset-json "$nnUNet_raw/$DATASET/dataset.json" \
    -o "$WORK/demo_evaluation" --overwrite
cat "$WORK/demo_evaluation/summary.md"
# what removing small components would cost on these predictions (nothing is deleted)
nnunet-lesionloss remove-small "$OUTPUT" "$WORK/demo_min_size_sweep" --sweep --gt "$REFERENCE" \
    --dataset-json "$nnUNet_raw/$DATASET/dataset.json" --overwrite
echo "demo done: predictions in $OUTPUT, lesion-wise evaluation (summary, cases.csv, lesions.csv) in" \
    "$WORK/demo_evaluation, inspection in $WORK/demo_inspect, min-size sweep in $WORK/demo_min_size_sweep"
