#!/usr/bin/env bash
# Bilinear resampling (d = 1.5 px) under every threat model that applies: oblivious, BPDA and adaptive
# (exact-gradient) AutoAttack at Linf 8/255, and HopSkipJump (Linf, 1000 queries per image), on CIFAR-10
# test images 0..499 with the bundled ResNet-20. The oblivious examples are shared with
# run_resampling_oblivious.sh through the cache.
set -euo pipefail
art-purifiers evaluate --data-root ../shared/data/cifar10 --n 500 --seed 0 \
  --threat clean oblivious bpda adaptive decision --attack autoattack --norm inf --eps 8/255 --queries 1000 \
  --defence resampling:interpolation=bilinear,sampler=invariant,magnitude=1.5 \
  --format markdown --output docs/results/resampling_adaptive.md --json docs/results/resampling_adaptive.json --quiet
