# Sourced by the experiment scripts: cpu-small's decoder as it was until 2026-12-05 (the
# full-resolution conv decoder of width 32), which every figure in docs/journal/results.md before "A
# lighter decoder, third round" was measured with. The scripts pass "${STRIDE1[@]}" after
# --config configs/cpu-small.yaml, so they reproduce those figures whatever cpu-small ships
# now; experiments/decoder.sh's variants override it.
# shellcheck shell=bash disable=SC2034
STRIDE1=(--set model.output_stride=1 --set model.upsample=bilinear --set model.base_channels=32)
