#!/usr/bin/env bash
# Victim clean accuracy and the four naive resampling variants of IRAD Table 1 under oblivious AutoAttack
# (Linf, eps 8/255) on CIFAR-10 test images 0..499 with the bundled ResNet-20.
set -euo pipefail
art-purifiers evaluate --data-root ../shared/data/cifar10 --n 500 --seed 0 \
  --threat clean oblivious --attack autoattack --norm inf --eps 8/255 \
  --defence resampling:interpolation=bilinear,sampler=invariant,magnitude=1.5 \
  --defence resampling:interpolation=bilinear,sampler=variant,magnitude=1.5,seed=0 \
  --defence resampling:interpolation=nearest,sampler=invariant,magnitude=1.5 \
  --defence resampling:interpolation=nearest,sampler=variant,magnitude=1.5,seed=0 \
  --format markdown --output docs/results/resampling_oblivious.md --json docs/results/resampling_oblivious.json --quiet
