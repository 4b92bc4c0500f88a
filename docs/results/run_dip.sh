#!/usr/bin/env bash
# The DIP defence and DIPDefend (default settings, seed 0) on CIFAR-10 test images 0..N-1 with the bundled
# ResNet-20: clean accuracy and oblivious accuracy (adversarial examples crafted on the bare victim) under
# PGD-20 at Linf 2/4/8 (/255), and FGSM, BIM-20, MI-FGSM-20 and C&W Linf (PGD-20 on the C&W margin) at 8/255.
# A DIP fit per image and prediction makes this hours of CPU time, so the images run in shards of 25, each
# skipped when its JSON exists (rerun the script to resume), and the shards are merged at the end.
set -euo pipefail
N=${N:-100}
SHARDS=$((N / 25))
OUT=docs/results/dip_shards
mkdir -p "$OUT"
common=(--data-root ../shared/data/cifar10 --n "$N" --seed 0 --threat clean oblivious --steps 20
        --defence dip:seed=0 --defence dipdefend:seed=0 --quiet)
for i in $(seq 0 $((SHARDS - 1))); do
  [ -f "$OUT/pgd_$i.json" ] || art-purifiers evaluate "${common[@]}" --shard "$i/$SHARDS" \
    --attack pgd --eps 2/255 4/255 8/255 --json "$OUT/pgd_$i.json"
  [ -f "$OUT/others_$i.json" ] || art-purifiers evaluate "${common[@]}" --shard "$i/$SHARDS" \
    --attack fgsm bim mifgsm cw --eps 8/255 --json "$OUT/others_$i.json"
done
art-purifiers merge "$OUT"/pgd_*.json --format markdown --output docs/results/dip_pgd.md --json docs/results/dip_pgd.json
art-purifiers merge "$OUT"/others_*.json --format markdown --output docs/results/dip_others.md \
  --json docs/results/dip_others.json
