#!/usr/bin/env bash
# The caution experiment of docs/journal/results.md ("Knowing when it is guessing"): cpu-small with
# model.uncertainty, beside the L1-only and pix2pix baselines, all at 64 px, 5 epochs, batch 16,
# trained on anime/train (validated on anime/val); `colorgan evaluate` scores each last.pt on
# anime/unseen, anime/val and photos/val (the uncertainty model at every caution of CAUTIONS).
#
#   experiments/caution.sh NAME [NAME ...]       e.g. experiments/caution.sh unc-s0 l1only-s0
#   python experiments/caution_table.py runs/caution      the tables and docs/caution.png
#
# NAME is VARIANT-sSEED, VARIANT one of unc (cpu-small + model.uncertainty; at caution 0 its
# colors are exactly plain cpu-small's, the head never changes them), plain (cpu-small),
# l1only (configs/l1-only.yaml) and pix2pix (configs/pix2pix-baseline.yaml); the from-scratch
# U-Nets use depth 6 (64 px is not a multiple of 2**7). The runs of docs/journal/results.md used a copy
# of the code and one torch thread, as experiments/decoder.sh says:
#   mkdir /tmp/caution-src && cp -r colorgan /tmp/caution-src/
#   OMP_NUM_THREADS=1 PYTHONPATH=/tmp/caution-src experiments/caution.sh l1only-s0 pix2pix-s0
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/caution}
BIN=${BIN:-.venv/bin}
CAUTIONS=${CAUTIONS:-0,0.05,0.1,0.25,0.5,0.75,1}
source experiments/stride1.sh  # cpu-small's decoder as these runs had it

args() {  # VARIANT -> --config and --set overrides
  case $1 in
    unc) echo --config configs/cpu-small.yaml "${STRIDE1[@]}" --set model.hints=false \
      --set model.uncertainty=true ;;
    plain) echo --config configs/cpu-small.yaml "${STRIDE1[@]}" --set model.hints=false ;;
    l1only) echo --config configs/l1-only.yaml --set model.depth=6 ;;
    pix2pix) echo --config configs/pix2pix-baseline.yaml --set model.depth=6 ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

for name in "$@"; do
  variant=${name%-s*} seed=${name##*-s}
  read -r -a extra <<< "$(args "$variant")"
  "$BIN/colorgan" train "${extra[@]}" \
    --set data.image_size=64 --set train.epochs=5 --set train.seed="$seed" \
    --data "$DATA/anime/train" --val-data "$DATA/anime/val" --run-dir "$OUT/$name" --quiet --overwrite
  for set in anime/unseen anime/val photos/val; do
    caution=(); [[ $variant == unc ]] && caution=(--caution "$CAUTIONS")
    "$BIN/colorgan" evaluate "$OUT/$name/checkpoints/last.pt" --data "$DATA/$set" \
      "${caution[@]}" --json "$OUT/$name/eval-${set/\//-}.json" --quiet > /dev/null
  done
done
