#!/usr/bin/env bash
# IDFR (shipped CIFAR-10 weights) under the threat models the paper never ran, on CIFAR-10 test images 0..499 with
# the bundled ResNet-20: BPDA (identity backward through both parts) and adaptive (exact gradient through the
# denoiser, the encoder, the restorer and the head) AutoAttack, L-inf 8/255, for IDFR and its denoiser alone, in
# shards of 100 (a shard's JSON is skipped when it exists; AutoAttack checkpoints after every component). Then
# HopSkipJump with 1000 queries on the first N_HSJ images (default 0; about 8 s per image on one CPU thread).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data/cifar10}
SHARDS=${SHARDS-"0 1 2 3 4"}
OUT=docs/results/idfr_shards
mkdir -p $OUT
for i in $SHARDS; do
  [ -f $OUT/adaptive_$i.json ] || art-purifiers evaluate --data-root "$DATA" --n 500 --seed 0 --shard "$i/5" \
    --threat clean bpda adaptive --attack autoattack --norm inf --eps 8/255 \
    --defence idfr --defence idfr:restorer=False --quiet --json $OUT/adaptive_$i.json
done
if [ "$(ls $OUT/adaptive_*.json | wc -l)" = 5 ]; then
  art-purifiers merge $OUT/adaptive_{0,1,2,3,4}.json --format markdown --output docs/results/idfr_adaptive.md \
    --json docs/results/idfr_adaptive.json
fi
N_HSJ=${N_HSJ:-0}
if [ "$N_HSJ" -gt 0 ]; then
  art-purifiers evaluate --data-root "$DATA" --n "$N_HSJ" --seed 0 --threat clean decision --queries 1000 \
    --eps 8/255 --defence idfr --quiet --format markdown --output docs/results/idfr_hsj.md \
    --json docs/results/idfr_hsj.json
fi
