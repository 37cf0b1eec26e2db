#!/usr/bin/env bash
# Rebuilds the model shipped in src/caloforge/pretrained/caloclouds2-ild-tiny with the
# project's own commands: simulate reference point clouds of the ILD-like ECAL (GFlash,
# photons uniform in 10-90 GeV), train the five CaloClouds II stages (showerflow,
# diffusion, calibrate, distill, calibrate_distilled) and copy the generation weights into
# the package.
set -euo pipefail
WORK=${1:-runs/pretrained}
THREADS=${THREADS:-2}
mkdir -p "$WORK"
[ -f "$WORK/ild_train.h5" ] || caloforge simulate --points -n 30000 --seed 1 -o "$WORK/ild_train.h5"
caloforge train caloclouds2-ild-tiny --data "$WORK/ild_train.h5" --out "$WORK/caloclouds2-ild-tiny" \
    --threads "$THREADS" --no-progress
python scripts/copy_generation_weights.py "$WORK/caloclouds2-ild-tiny" \
    src/caloforge/pretrained/caloclouds2-ild-tiny
