#!/usr/bin/env bash
# The first GPU check, prepared to run in one short call when a GPU machine is lent:
#
#   bash benchmarks/gpu_check.sh fetch      # here (internet to the package registry): wheels
#                                           # the GPU image lacks, into .whl/ (git-ignored)
#   bash benchmarks/gpu_check.sh            # there (no internet), from the repository root,
#                                           # with .whl carried; results under $OUT (or runs/)
#
# On the GPU it installs the carried wheels and this project (no dependencies: the image has
# torch, torchvision, Lightning, timm, torchmetrics), then runs `distill run` on the DAMO-YOLO
# quick start (DAMO-YOLO-Nm teacher, CrossKD into damo_yolo_pico, the embedded data generated on
# first use) in bf16 through Lightning's DDP strategy, and writes gpu_check.json: per stage the
# mAP by the same evaluation path as on CPU, the train seconds and the images per second.
# STEPS (default 300) caps each stage's optimizer steps (the teacher's too); DEVICES (default 1)
# the GPUs. The same path on this machine's CPU, for the numbers beside it:
#   ACCELERATOR=cpu PRECISION=32-true PYTHON=.venv/bin/python INSTALL=0 bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "fetch" ]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    for package in omegaconf==2.4.0 pycocotools==2.0.11; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d .whl "$package"
    done
    ls -l .whl
    exit 0
fi

OUT=${OUT:-runs/gpu_check}
STEPS=${STEPS:-300}
DEVICES=${DEVICES:-1}
ACCELERATOR=${ACCELERATOR:-gpu}
PRECISION=${PRECISION:-bf16-mixed}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
if [ -d .whl ] && [ "$ACCELERATOR" = gpu ]; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
if [ "${INSTALL:-1}" = 1 ]; then  # plug-ins (students, teachers) are found by entry points
    $PYTHON -m pip install -q --no-index --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null \
    || echo "no GPU: $ACCELERATOR"; } | tee "$OUT/device.txt"
export PYTHONUNBUFFERED=1
start=$(date +%s)
$PYTHON -m distill.cli run recipes/damo_quickstart.yaml \
    trainer.accelerator="$ACCELERATOR" trainer.devices="$DEVICES" trainer.strategy=ddp \
    trainer.precision="$PRECISION" trainer.max_steps="$STEPS" \
    logger=csv trainer.progress_bar=false \
    output_dir="$OUT/runs" name=gpu_check 2>&1 | tee "$OUT/run.log"
echo "wall seconds: $(( $(date +%s) - start ))" | tee -a "$OUT/run.log"
$PYTHON - "$OUT" "$DEVICES" <<'EOF'
"""Per stage: mAP, train seconds and training images per second, from the run's files."""
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

out, devices = Path(sys.argv[1]), int(sys.argv[2])
run = out / "runs" / "gpu_check"
batch = int(OmegaConf.load(run / "recipe.yaml").data.batch_size) * devices
rows = {}
for stage in ("baseline", "distilled"):
    metrics = json.loads((run / stage / "metrics.json").read_text())
    steps = json.loads((run / stage / "history.json").read_text())["epochs"][-1]["step"]
    seconds = metrics["train_seconds"]
    rows[stage] = {"map": metrics["map"], "map_50": metrics["map_50"], "steps": steps,
                   "train_seconds": seconds, "images_per_second": round(steps * batch / seconds, 1)}
(out / "gpu_check.json").write_text(json.dumps(rows, indent=2) + "\n")
print(json.dumps(rows, indent=2))
EOF
