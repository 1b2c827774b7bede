#!/usr/bin/env bash
# loss.real_label, loss.instance_noise and loss.rebalance were removed (#32; they lost): the
# smooth, noise and rebal variants run at the commits docs/journal/results.md names (716b729).
# The recipe experiments of docs/journal/results.md: each variant trains 5 epochs at 64 px on
# anime/train with the same seed and data order, then `colorgan evaluate` scores its last.pt on
# anime/val and photos/val.
#
#   experiments/recipe.sh NAME [NAME ...]       e.g. experiments/recipe.sh p2p-s0 base-s0
#   python experiments/table.py runs/recipe NAME [NAME ...]
#
# NAME is VARIANT-sSEED. The variants (base = the founding recipe at cpu-small's width: U-Net
# width 32, PatchGAN, vanilla GAN + 100 L1, AdamW 2e-4 with weight decay 0.01, cosine to 0,
# batch 16, no perceptual term; each other variant changes one thing):
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/recipe}
BIN=${BIN:-.venv/bin}
source experiments/stride1.sh  # cpu-small's decoder as these runs had it

args() {  # VARIANT -> config file and --set overrides
  local unet=(--set model.encoder=unet --set model.depth=6) lite0=(--set model.encoder=efficientnet_lite0 --set model.depth=5)
  local base=(configs/l1-only.yaml --set loss.adversarial_weight=1 "${unet[@]}")
  case $1 in
    p2p) echo configs/pix2pix-baseline.yaml "${unet[@]}" ;;            # Adam, constant lr, dropout
    l1only) echo configs/l1-only.yaml "${unet[@]}" ;;                  # no discriminator
    base) echo "${base[@]}" ;;
    ema) echo "${base[@]}" --set train.ema_decay=0.995 ;;
    pre) echo "${base[@]}" --set train.pretrain_epochs=1 ;;            # 1 warm-up epoch on L1
    sn) echo "${base[@]}" --set model.spectral_norm=true ;;
    smooth) echo "${base[@]}" --set loss.real_label=0.9 ;;
    noise) echo "${base[@]}" --set loss.instance_noise=0.1 ;;
    lrd) echo "${base[@]}" --set optim.lr_d=1e-4 ;;
    lsgan) echo "${base[@]}" --set loss.gan_mode=lsgan ;;
    rebal) echo "${base[@]}" --set loss.rebalance=0.5 ;;              # chroma re-balancing
    lite0perc) echo "${base[@]}" --set loss.perceptual_network=efficientnet_lite0 \
      --set loss.perceptual_weight=1.0 ;;
    lite0enc) echo "${base[@]}" "${lite0[@]}" ;;
    lite0both) echo "${base[@]}" "${lite0[@]}" --set loss.perceptual_network=efficientnet_lite0 \
      --set loss.perceptual_weight=1.0 ;;
    cpu-small) echo configs/cpu-small.yaml "${STRIDE1[@]}" --set model.hints=false ;;  # as then
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

for name in "$@"; do
  variant=${name%-s*} seed=${name##*-s}
  read -r -a spec <<< "$(args "$variant")"
  "$BIN/colorgan" train --config "${spec[0]}" "${spec[@]:1}" \
    --set data.image_size=64 --set train.epochs=5 --set train.seed="$seed" \
    --data "$DATA/anime/train" --val-data "$DATA/anime/val" --run-dir "$OUT/$name" --quiet --overwrite
  for set in anime photos; do
    "$BIN/colorgan" evaluate "$OUT/$name/checkpoints/last.pt" --data "$DATA/$set/val" \
      --json "$OUT/$name/eval-$set.json" --quiet
  done
done
