#!/usr/bin/env bash
# model.decoder=separable and model.upsample=guided were removed (#32; they lost): the variants
# that set them run at the commits docs/journal/results.md names, e.g. git checkout 716b729.
# The lighter-decoder experiments of docs/journal/results.md ("A lighter decoder (output_stride)", its
# "second round" and "third round"): cpu-small at SIZE px (default 64) for EPOCHS epochs
# (default 5; batch 16, 450 steps), with model.output_stride 1 (the full-resolution decoder),
# 2 and 4, model.decoder and model.upsample as the variant says; trained on anime/train
# (validated on anime/val) with the same seed and data order, then `colorgan evaluate` scores
# its last.pt at SIZE on anime/unseen, anime/val and photos/val.
#
#   experiments/decoder.sh NAME [NAME ...]      e.g. experiments/decoder.sh stride1-s0 stride4-s0
#   SIZE=128 EPOCHS=3 OUT=runs/decoder128 experiments/decoder.sh stride1-s0 stride4sep-s0
#   EPOCHS=6 OUT=runs/decoder-time experiments/decoder.sh stride2sepw24-s0   # ~ stride 1's time
#
# NAME is VARIANT-sSEED, VARIANT one of stride1, stride2, stride4, stride4w16 (decoder width
# 16), stride4sep (model.decoder=separable), stride4g (model.upsample=guided), stride4sepg
# (both), stride2sep and stride2sepw24 (width 24); stride4sepa, stride4w16a and stride2sepw24a
# are those with model.upsample=affine. The runs of docs/journal/results.md used a copy of
# the code (so that other edits of the tree could not change a run midway) and one torch
# thread (two stalled beside another session's tests on 2 cores):
#   mkdir /tmp/dec-src && cp -r colorgan /tmp/dec-src/
#   OMP_NUM_THREADS=1 PYTHONPATH=/tmp/dec-src experiments/decoder.sh stride1-s0 stride4sep-s0
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/decoder}
BIN=${BIN:-.venv/bin}
SIZE=${SIZE:-64}  # the training (and evaluation) size
EPOCHS=${EPOCHS:-5}

source experiments/stride1.sh  # cpu-small's former decoder; each variant overrides it

args() {  # VARIANT -> --set overrides
  case $1 in
    stride1) echo --set model.output_stride=1 ;;
    stride2) echo --set model.output_stride=2 ;;
    stride4) echo --set model.output_stride=4 ;;
    stride4w16) echo --set model.output_stride=4 --set model.base_channels=16 ;;
    stride4sep) echo --set model.output_stride=4 --set model.decoder=separable ;;
    stride4sepg) echo --set model.output_stride=4 --set model.decoder=separable \
      --set model.upsample=guided ;;
    stride2sep) echo --set model.output_stride=2 --set model.decoder=separable ;;
    stride2sepw24) echo --set model.output_stride=2 --set model.decoder=separable \
      --set model.base_channels=24 ;;
    stride4g) echo --set model.output_stride=4 --set model.upsample=guided ;;
    stride4sepa) echo --set model.output_stride=4 --set model.decoder=separable \
      --set model.upsample=affine ;;
    stride4w16a) echo --set model.output_stride=4 --set model.base_channels=16 \
      --set model.upsample=affine ;;
    stride2sepw24a) echo --set model.output_stride=2 --set model.decoder=separable \
      --set model.base_channels=24 --set model.upsample=affine ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

for name in "$@"; do
  variant=${name%-s*} seed=${name##*-s}
  read -r -a extra <<< "$(args "$variant")"
  "$BIN/colorgan" train --config configs/cpu-small.yaml --set model.hints=false "${STRIDE1[@]}" \
    "${extra[@]}" \
    --set data.image_size="$SIZE" --set train.epochs="$EPOCHS" --set train.seed="$seed" \
    --data "$DATA/anime/train" --val-data "$DATA/anime/val" --run-dir "$OUT/$name" --quiet --overwrite
  for set in anime/unseen anime/val photos/val; do
    "$BIN/colorgan" evaluate "$OUT/$name/checkpoints/last.pt" --data "$DATA/$set" \
      --size "$SIZE" --json "$OUT/$name/eval-${set/\//-}.json" --quiet > /dev/null
  done
done
