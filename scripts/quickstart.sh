#!/usr/bin/env bash
# From a fresh clone to a trained GAN segmenter on the CPU in a few minutes:
# install, write the synthetic demo dataset, train, segment a folder, score it, write the report.
# Re-running it replaces weights/demo (that is what --overwrite says; without it segan refuses).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate 2>/dev/null || true

segan data demo demo_data --n-train 240 --n-val 60 --size 128 --seed 0
segan train --data demo_data --out weights/demo --size 128 --epochs 5 --batch-size 8 \
  --encoder resnet18 --augment light --adv-weight 0.01 --warmup-epochs 1 --seed 0 --overwrite

segan predict --model weights/demo --input demo_data/validation/images --output weights/demo/predictions \
  --overlay --no-progress --overwrite
segan evaluate --pred weights/demo/predictions --gt demo_data/validation --out weights/demo/evaluation --overwrite
segan report weights/demo --no-progress --overwrite

echo
echo "Done. weights/demo holds the run (config.yaml, checkpoints/, generator/, metrics.csv),"
echo "predictions/ (masks/, overlays/, manifest.csv), evaluation/ (metrics.json, per_image.csv),"
echo "progress.png (the training curves) and report/index.html (open it in a browser: the run, its curves,"
echo "its worst and best images, every image's scores)."
echo "Reload the generator without segan:  python -c \"import segmentation_models_pytorch as smp; print(smp.from_pretrained('weights/demo/generator'))\""
