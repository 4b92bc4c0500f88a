#!/usr/bin/env bash
# Foundation II spot check: recorded rows reproduced through the new deployment and cache code.
set -euo pipefail
export OMP_NUM_THREADS=1
D=../shared/data/cifar10
C=runs/spotcheck/cache
art-purifiers evaluate --data-root $D --n 500 --seed 0 --shard 0/5 --threat clean adaptive --attack autoattack \
  --norm inf --eps 8/255 --defence irad --cache-dir $C --quiet --format markdown \
  --json runs/spotcheck/irad_adaptive_shard0.json
art-purifiers evaluate --data-root $D --n 500 --seed 0 --threat clean oblivious --attack autoattack --norm inf \
  --eps 8/255 --defence resampling:interpolation=bilinear,sampler=invariant,magnitude=1.5 --cache-dir $C --quiet \
  --format markdown --json runs/spotcheck/resampling_oblivious.json
