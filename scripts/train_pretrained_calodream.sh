#!/usr/bin/env bash
# Rebuilds the model shipped in src/caloforge/pretrained/calodream-ds2-tiny with the
# project's own commands: simulate reference ds2 showers, train the CaloDREAM stages
# (energy, shape, bns, then calibration, the fitted voxel-energy map of
# docs/calibration.md) of the tiny preset, copy the generation weights into the package.
# Every stage is seeded, so a rerun on the same kind of machine gives the same weights.
# The shipped model (2026-12-05, shape tokens 160 wide) was made by this script in one run
# of all four stages, 28.7 minutes on a 2-core CPU (docs/calodream.md).
set -euo pipefail
WORK=${1:-runs/pretrained}
mkdir -p "$WORK"
[ -f "$WORK/ds2_train.h5" ] || caloforge simulate --geometry ds2 -n 30000 --seed 1 -o "$WORK/ds2_train.h5"
caloforge train calodream-ds2-tiny --data "$WORK/ds2_train.h5" --out "$WORK/calodream-ds2-tiny" --no-progress --resume
python scripts/copy_generation_weights.py "$WORK/calodream-ds2-tiny" src/caloforge/pretrained/calodream-ds2-tiny
