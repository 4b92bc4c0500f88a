#!/usr/bin/env bash
# Bilinear resampling (d = 1.5 px) under the oblivious and adaptive (exact-gradient) AutoAttack at Linf 8/255
# and HopSkipJump (Linf 8/255, 1000 queries per image), CIFAR-10 test images 0..499, bundled ResNet-20.
# (The BPDA row is produced by run_resampling_adaptive.sh, which runs every threat model.)
set -euo pipefail
art-purifiers evaluate --data-root ../shared/data/cifar10 --n 500 --seed 0 \
  --threat clean oblivious adaptive decision --attack autoattack --norm inf --eps 8/255 --queries 1000 \
  --defence resampling:interpolation=bilinear,sampler=invariant,magnitude=1.5 \
  --format markdown --output docs/results/resampling_threats.md --json docs/results/resampling_threats.json --quiet
