#!/usr/bin/env bash
# The GPU figures in docs/PERFORMANCE.md: run from the repository root on a CUDA machine with
# torch and kornia installed; results go to ${OUT:-gpu-results}/.
set -uo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, kornia; print('torch', torch.__version__, 'kornia', kornia.__version__)" | tee -a "$OUT/gpu.txt"
python3 benchmarks/seed_recipe.py --steps 20 --json "$OUT/seed_recipe.json"
python3 benchmarks/memory.py --json "$OUT/memory.json"
tt="python3 benchmarks/train_throughput.py --size 512 --batch 8 --steps 20 --warmup 3"
$tt --json "$OUT/tt_fp32.json"
$tt --colorgan-set train.amp=bf16 --json "$OUT/tt_bf16.json"
$tt --colorgan-set train.amp=bf16 --colorgan-set train.channels_last=true --json "$OUT/tt_bf16_cl.json"
$tt --colorgan-set train.amp=bf16 --colorgan-set train.channels_last=true \
    --colorgan-set train.compile=true --warmup 5 --json "$OUT/tt_bf16_cl_compile.json"
python3 benchmarks/inference_latency.py --sizes 256 512 1024 --devices cuda --json "$OUT/inference.json"
# torchrun + NCCL + SyncBatchNorm + AMP through the CLI, on generated images.
python3 -c "import sys; sys.path.insert(0, '.'); from tests.conftest import write_color_folder; \
from pathlib import Path; write_color_folder(Path('/tmp/gen'), 64, (160, 144))"
python3 -m torch.distributed.run --standalone --nproc_per_node 1 -m colorgan train \
    --config configs/tiny.yaml --data /tmp/gen --run-dir /tmp/ddp --quiet --overwrite \
    --set data.image_size=128 --set model.depth=7 --set train.device=cuda \
    --set train.sync_batchnorm=true --set train.amp=auto --set train.epochs=2
echo "torchrun exit $?"
tail -n 3 /tmp/ddp/train.log | cut -c1-400 | tee "$OUT/ddp.txt"
