#!/usr/bin/env bash
# The manga-input experiment of docs/RESULTS.md ("Manga pages"): cpu-small at 128 px on
# anime/train (validated on anime/val, as runs/cpu-small, the gray-trained model), its inputs made
# into manga pages (manga) or half of them (mixed), with hatching kept out of training so the
# evaluation has a tone kind the models never saw.
#
#   [SEED=N] experiments/manga.sh manga|mixed|gray     (SEED: train.seed, run name -sN; default 0)
#   python experiments/manga_pages.py runs/cpu-small/checkpoints/last.pt runs/cpu-small-manga/...
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
BIN=${BIN:-.venv/bin}
style=$1
seed=${SEED:-0}
run=runs/cpu-small-$style${SEED:+-s$SEED}
"$BIN/colorgan" train --config configs/cpu-small.yaml --data "$DATA/anime/train" \
  --val-data "$DATA/anime/val" --run-dir "$run" --resume auto \
  --set data.input_style="$style" --set data.tones=dots,lines,gradient,stipple --set train.seed="$seed"
