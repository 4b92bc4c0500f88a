#!/usr/bin/env bash
# IRAD with the shipped CIFAR-10 weights (small preset, trained against ResNet-32) and its Table 8 variants
# (no sampling; implicit reconstruction with the naive samplers) under oblivious AutoAttack (L-inf 8/255, crafted on
# the bare ResNet-20), on CIFAR-10 test images 0..499. The oblivious examples are shared with
# run_resampling_oblivious.sh through the cache.
set -euo pipefail
art-purifiers evaluate --data-root ../shared/data/cifar10 --n 500 --seed 0 \
  --threat clean oblivious --attack autoattack --norm inf --eps 8/255 \
  --defence irad \
  --defence irad:sampler=none \
  --defence irad:sampler=invariant,magnitude=1.5 \
  --defence irad:sampler=variant,magnitude=1.5,seed=0 \
  --format markdown --output docs/results/irad_oblivious.md --json docs/results/irad_oblivious.json --quiet
