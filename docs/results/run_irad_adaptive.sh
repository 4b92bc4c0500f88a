#!/usr/bin/env bash
# IRAD (shipped CIFAR-10 weights) under the white-box threat models: BPDA (identity backward) and adaptive
# (exact gradient through the encoder, the implicit decoder and SampleNet) AutoAttack, L-inf 8/255, on CIFAR-10
# test images 0..499 with the bundled ResNet-20. The oblivious row is in irad_oblivious.md.
# On 2 CPU cores each threat takes hours, so the images run as 5 shards of 100 (each cached when done; the
# shards of one threat can run as separate processes, e.g. `--threat bpda` and `--threat adaptive` side by side),
# merged at the end. AutoAttack also checkpoints after every component inside a shard.
set -euo pipefail
for i in 0 1 2 3 4; do
  art-purifiers evaluate --data-root ../shared/data/cifar10 --n 500 --seed 0 --shard "$i/5" \
    --threat clean bpda adaptive --attack autoattack --norm inf --eps 8/255 \
    --defence irad --quiet --json "docs/results/irad_shards/irad_adaptive_shard$i.json"
done
art-purifiers merge docs/results/irad_shards/irad_adaptive_shard{0,1,2,3,4}.json \
  --format markdown --output docs/results/irad_adaptive.md --json docs/results/irad_adaptive.json
