#!/usr/bin/env bash
# The color-point experiment of docs/journal/results.md ("Color points"): cpu-small with and without
# model.hints at equal budget (64 px, 5 epochs, batch 16), trained on anime/train (scored on
# anime/val and anime/unseen) and on photos/train (scored on photos/val), each scored with
# 0, 1, 2, 5, 10 and 20 test points per image.
#
#   experiments/hints.sh NAME [NAME ...]     NAME is {anime,photos}-{hint,nohint}-sSEED
#   python experiments/hints_table.py runs/hints      the tables and docs/hints.png
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/hints}
BIN=${BIN:-.venv/bin}
COUNTS=0,1,2,5,10,20
EPOCHS=${EPOCHS:-5}  # the budget; names of longer runs end in -eEPOCHS
source experiments/stride1.sh
# DECODER=stride1 (default): cpu-small's decoder as the runs before 2026-12-05 had it;
# DECODER=recipe: the one cpu-small ships now (docs/journal/results.md, "A lighter decoder, third round")
decoder=("${STRIDE1[@]}"); [[ ${DECODER:-stride1} == recipe ]] && decoder=()

for name in "$@"; do
  IFS=- read -r domain variant seed <<< "$name"
  seed=${seed#s}; seed=${seed%-e*}
  hints=false; [[ $variant == hint ]] && hints=true
  "$BIN/colorgan" train --config configs/cpu-small.yaml "${decoder[@]}" --set model.hints=$hints \
    --set data.image_size=64 --set train.epochs="$EPOCHS" --set train.seed="$seed" \
    --data "$DATA/$domain/train" --val-data "$DATA/$domain/val" --run-dir "$OUT/$name" --quiet --overwrite
  sets=(val); [[ $domain == anime ]] && sets=(val unseen)
  for set in "${sets[@]}"; do
    extra=(); [[ $hints == true ]] && extra=(--hints "$COUNTS")
    "$BIN/colorgan" evaluate "$OUT/$name/checkpoints/last.pt" --data "$DATA/$domain/$set" \
      "${extra[@]}" --json "$OUT/$name/eval-$set.json" --quiet > /dev/null
  done
done
