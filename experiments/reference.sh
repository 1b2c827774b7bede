#!/usr/bin/env bash
# The reference-image experiment of docs/journal/results.md ("Colors from a reference image"):
# cpu-small with model.reference at experiments' budget (64 px, 5 epochs, batch 16), trained
# on anime/train (validated on anime/val) or photos/train (photos/val), then scored by
# experiments/reference_pairs.py: no reference, each image's own colors (self), another image
# of the same character (same) and an image of another character (other).
#
#   experiments/reference.sh NAME [NAME ...]     NAME is {anime,photos}-{ref,plain}-sSEED
#   python experiments/reference_table.py runs/reference      the tables
#
# The runs of docs/journal/results.md used a copy of the code and one torch thread, as
# experiments/decoder.sh says:
#   mkdir /tmp/reference-src && cp -r colorgan /tmp/reference-src/
#   OMP_NUM_THREADS=1 PYTHONPATH=/tmp/reference-src experiments/reference.sh anime-ref-s0
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/reference}
BIN=${BIN:-.venv/bin}
EPOCHS=${EPOCHS:-5}
source experiments/stride1.sh  # cpu-small's decoder as these runs had it

for name in "$@"; do
  IFS=- read -r domain variant seed <<< "$name"
  seed=${seed#s}
  reference=false; [[ $variant == ref ]] && reference=true
  "$BIN/colorgan" train --config configs/cpu-small.yaml "${STRIDE1[@]}" --set model.hints=false \
    --set model.reference=$reference \
    --set data.image_size=64 --set train.epochs="$EPOCHS" --set train.seed="$seed" \
    --data "$DATA/$domain/train" --val-data "$DATA/$domain/val" --run-dir "$OUT/$name" --quiet --overwrite
  sets=("$DATA/photos/val"); [[ $domain == anime ]] && sets=("$DATA/anime/unseen" "$DATA/anime/val")
  "$BIN/python" experiments/reference_pairs.py "$OUT/$name/checkpoints/last.pt" "${sets[@]}" \
    --json "$OUT/$name/pairs.json"
done
