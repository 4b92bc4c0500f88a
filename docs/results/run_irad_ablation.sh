#!/usr/bin/env bash
# IRAD Table 7: the implicit representation trained on different stage-1 tasks (adversarial denoising = the shipped
# weights; Gaussian denoising; clean-to-clean), each queried at the pixel grid (sampler=none, so the task alone is
# compared), under oblivious AutoAttack (L-inf 8/255) on CIFAR-10 test images 0..499 with the bundled ResNet-20.
# The Gaussian and clean-to-clean weights come from
#   art-purifiers train irad --preset small --task gaussian --stage2-iterations 0 --data-root ../shared/data/cifar10 \
#     --out runs/irad-small-gaussian --export runs/irad-small-gaussian/irad_cifar10_gaussian.safetensors
#   art-purifiers train irad --preset small --task clean --stage2-iterations 0 --data-root ../shared/data/cifar10 \
#     --out runs/irad-small-clean --export runs/irad-small-clean/irad_cifar10_clean.safetensors
set -euo pipefail
art-purifiers evaluate --data-root ../shared/data/cifar10 --n 500 --seed 0 \
  --threat clean oblivious --attack autoattack --norm inf --eps 8/255 \
  --defence irad:sampler=none \
  --defence irad:weights=cifar10_gaussian,sampler=none \
  --defence irad:weights=cifar10_clean,sampler=none \
  --format markdown --output docs/results/irad_ablation.md --json docs/results/irad_ablation.json --quiet
