#!/usr/bin/env bash
# Foundation II spot check: recorded rows reproduced through the new deployment and cache code (docs/results.md,
# "Recorded rows reproduced after the deployment rewrite"; the tables it wrote are beside this script).
# Usage: bash studies/foundation/run_spotcheck.sh DATA_ROOT (the CIFAR-10 python-layout folder).
set -euo pipefail
export OMP_NUM_THREADS=1
D=${1:?usage: run_spotcheck.sh DATA_ROOT}
C=runs/spotcheck/cache
art-purifiers evaluate --data-root $D --n 500 --seed 0 --shard 0/5 --threat clean adaptive --attack autoattack \
  --norm inf --eps 8/255 --defence irad --cache-dir $C --quiet --format markdown \
  --json runs/spotcheck/irad_adaptive_shard0.json
art-purifiers evaluate --data-root $D --n 500 --seed 0 --threat clean oblivious --attack autoattack --norm inf \
  --eps 8/255 --defence resampling:interpolation=bilinear,sampler=invariant,magnitude=1.5 --cache-dir $C --quiet \
  --format markdown --json runs/spotcheck/resampling_oblivious.json
