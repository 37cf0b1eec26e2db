#!/usr/bin/env bash
# Rebuilds the model shipped in src/caloforge/pretrained/calolatent-ds2-tiny with the
# project's own commands: simulate reference ds2 showers (GFlash, the same training file
# as the shipped Calo-VQ model), train the CaloLatent stages (layer, vae, latent, then
# decoder_noise, the fitted width of the decoder's Gaussian, and calibration, the fitted
# voxel-energy map of docs/calibration.md), copy the generation weights into the package.
# The shipped model's first three stages were trained before the decoder_noise and
# calibration stages existed; each was added to the same run directory when it appeared
# with
#   caloforge train calolatent-ds2-tiny --data "$WORK/ds2_train.h5" --out "$WORK/calolatent-ds2-tiny" --stage decoder_noise
#   caloforge train calolatent-ds2-tiny --data "$WORK/ds2_train.h5" --out "$WORK/calolatent-ds2-tiny" --stage calibration
# (and the same for the baseline), which is what the command below runs last. With
# WITH_BASELINE=1 it also trains the paper's baseline VAE (KL weight 1, z ~ N(0, I))
# beside it for the comparison in docs/calolatent.md; the baseline is not shipped.
set -euo pipefail
WORK=${1:-runs/pretrained}
THREADS=${THREADS:-2}
mkdir -p "$WORK"
[ -f "$WORK/ds2_train.h5" ] || caloforge simulate --geometry ds2 -n 30000 --seed 1 -o "$WORK/ds2_train.h5"
caloforge train calolatent-ds2-tiny --data "$WORK/ds2_train.h5" --out "$WORK/calolatent-ds2-tiny" \
    --threads "$THREADS" --no-progress
python scripts/copy_generation_weights.py "$WORK/calolatent-ds2-tiny" src/caloforge/pretrained/calolatent-ds2-tiny
if [ "${WITH_BASELINE:-0}" = "1" ]; then
    caloforge train calolatent-ds2-vae-baseline-tiny --data "$WORK/ds2_train.h5" \
        --out "$WORK/calolatent-ds2-vae-baseline-tiny" --threads "$THREADS" --no-progress
fi
