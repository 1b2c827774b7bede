#!/usr/bin/env bash
# The manga-input experiment of docs/RESULTS.md ("Manga pages"): cpu-small at 128 px on
# anime/train (validated on anime/val, as runs/cpu-small, the gray-trained model), its inputs made
# into manga pages (manga) or half of them (mixed), with hatching kept out of training so the
# evaluation has a tone kind the models never saw.
#
#   [SEED=N] [PHOTOS=1] experiments/manga.sh manga|mixed|gray
#   python experiments/manga_pages.py runs/cpu-small/checkpoints/last.pt runs/cpu-small-manga/...
#
# SEED: train.seed, run name -sN (default 0). PHOTOS=1: train on anime/train and photos/train
# together (a folder of links to both, runs/anime-photos-train), run name -photos.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
BIN=${BIN:-.venv/bin}
style=$1
seed=${SEED:-0}
train=$DATA/anime/train
run=runs/cpu-small-$style${SEED:+-s$SEED}
if [[ -n ${PHOTOS:-} ]]; then
  train=runs/anime-photos-train
  for set in anime photos; do  # links to files: the folder walk does not follow linked folders
    mkdir -p "$train/$set"
    for f in "$DATA/$set/train"/*; do ln -sf "$(realpath "$f")" "$train/$set/"; done
  done
  run=$run-photos
fi
"$BIN/colorgan" train --config configs/cpu-small.yaml --data "$train" \
  --val-data "$DATA/anime/val" --run-dir "$run" --resume auto \
  --set data.input_style="$style" --set data.tones=dots,lines,gradient,stipple --set train.seed="$seed"
