#!/usr/bin/env bash
# IRAD (shipped CIFAR-10 weights) under the white-box threat models: BPDA (identity backward) and adaptive
# (exact gradient through the encoder, the implicit decoder and SampleNet) AutoAttack, L-inf 8/255, on CIFAR-10
# test images 0..499 with the bundled ResNet-20. Clean and oblivious rows come from the cache of
# run_irad_oblivious.sh. AutoAttack checkpoints after every component, so a rerun resumes an interrupted run.
set -euo pipefail
art-purifiers evaluate --data-root ../shared/data/cifar10 --n 500 --seed 0 \
  --threat clean oblivious bpda adaptive --attack autoattack --norm inf --eps 8/255 \
  --defence irad \
  --format markdown --output docs/results/irad_adaptive.md --json docs/results/irad_adaptive.json --quiet
