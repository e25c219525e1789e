#!/usr/bin/env bash
# One call on a lent GPU machine (the `device` tool): train the demo model end to end.
#   run(command="bash training/device_train.sh 8", carry=[".whl"], timeout_s=600)
# .whl holds mobilesam-mirror's wheel (DEVELOPERS.md, "Training on a GPU"); torch, torchvision, timm,
# numpy and Pillow are already there. The resumable state stays on the machine (/tmp/edgesam-train,
# too large to come back), so a second call while it is warm continues the run; the fp16 weights and
# the log come back under $OUT. Argument: minutes of training in this call (default 8).
set -euo pipefail
MINUTES=${1:-8}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi -L
mkdir -p /tmp/edgesam-train
RESUME=()
if [ -f /tmp/edgesam-train/demo_full.pt.state ]; then RESUME=(--resume /tmp/edgesam-train/demo_full.pt.state); fi
python3 training/train_full.py --device cuda --minutes "$MINUTES" --batch 16 --prompts 16 --log-every 50 \
    --save-minutes 2 "${RESUME[@]}" --out /tmp/edgesam-train/demo_full.pt
cp /tmp/edgesam-train/demo_full.pt /tmp/edgesam-train/demo_full.pt.log "$OUT"/
