#!/usr/bin/env bash
# The full-gradient experiment of docs/defences/dip.md at the defences' defaults, for one GPU: BPDA+EOT beside
# full-gradient+EOT PGD-20 (L-inf 8/255, step 2/255, 8 draws per gradient) on test images 0..N-1 (default 64),
# judged at deployment seeds 0, 1 and 2, both DIP defences at their default iterations (1500 and 4000).
# Not run yet: no GPU was lent to this work, and the full mode has been run on the CPU only (on a GPU the DIP
# convolutions are grouped F.conv2d, which autograd differentiates twice). Resumable: rerun the same command.
# Usage: bash benchmarks/dip_full_gradient_gpu.sh [--data-root DIR] (N=... SHARD=... OUT=... to change them)
set -euo pipefail
OUT=${OUT:-runs/dip_full_gradient_defaults}
python benchmarks/dip_full_gradient.py --device cuda --threads 4 --iterations 0 --steps 20 --step-size 2/255 \
  --eps 8/255 --draws 8 --images "${N:-64}" --shard "${SHARD:-16}" --deployment-seeds 0 1 2 --checkpoint-every 50 \
  --out "$OUT" --summary "$OUT/summary.json" "$@"
