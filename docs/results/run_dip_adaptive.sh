#!/usr/bin/env bash
# The DIP defence (current and former defaults) and DIPDefend (deployed with seed 0 as in run_dip.sh) under
# attacks that know them, on CIFAR-10 test images with the bundled ResNet-20:
# * BPDA+EOT PGD-20, Linf 8/255: each step's gradient is the average over 8 fresh draws of the defence (new
#   per-image seeds), passed through the purifier as the identity (BPDA: the output is the end of an
#   optimisation, not a useful function to differentiate). Test images 0..N_EOT-1.
# * HopSkipJump, 1000 queries per image, Linf 8/255, on fresh single draws of the defence (--eot-draws 1; with
#   8 draws every query would cost 8 DIP fits). Test images 0..N_HSJ-1 (none unless N_HSJ is set: on 2 CPU
#   cores one image costs hours per defence, see the DIP page).
# Robust accuracy is measured on the deployed (seed 0) defence. Every DIP fit costs seconds of CPU, so each
# defence runs alone in shards of 2 images (1 for HopSkipJump), each skipped when its JSON exists (rerun to
# resume, or with a larger N_EOT / N_HSJ to extend: the shards keep their images), merged per defence at the end.
# The files are named by defence: "dip" is the DIP defence at its former defaults (pinned in its spec; its
# shards ran as `dip:seed=0` when those were the defaults), "dipdefault" at its current defaults; N_EOT_DEFAULT
# (default 4) images for the latter. `bash run_dip_adaptive.sh dipdefault` runs one defence only.
set -euo pipefail
N_EOT=${N_EOT:-8}
N_HSJ=${N_HSJ:-0}
declare -A SPEC=([dip]="dip:seed=0,input_jitter=0.0,warmup=100,step=0.5" [dipdefault]="dip:seed=0"
                 [dipdefend]="dipdefend:seed=0")
OUT=docs/results/dip_shards
mkdir -p "$OUT"
common=(--data-root ../shared/data/cifar10 --seed 0 --attack pgd --steps 20 --eps 8/255 --quiet)
for defence in ${@:-dip dipdefault dipdefend}; do
  n_eot=$N_EOT
  [ "$defence" = dipdefault ] && n_eot=${N_EOT_DEFAULT:-4}
  for i in $(seq 0 $((n_eot / 2 - 1))); do
    [ -f "$OUT/eot_${defence}_$i.json" ] || art-purifiers evaluate "${common[@]}" --defence "${SPEC[$defence]}" \
      --n "$n_eot" --shard "$i/$((n_eot / 2))" --threat clean eot --eot-draws 8 --json "$OUT/eot_${defence}_$i.json"
  done
  for i in $(seq 0 $((N_HSJ - 1))); do
    [ -f "$OUT/hsj_${defence}_$i.json" ] || art-purifiers evaluate "${common[@]}" --defence "${SPEC[$defence]}" \
      --n "$N_HSJ" --shard "$i/$N_HSJ" --threat clean decision --queries 1000 --eot-draws 1 \
      --json "$OUT/hsj_${defence}_$i.json"
  done
  art-purifiers merge "$OUT"/eot_"${defence}"_*.json --format markdown --output "docs/results/${defence}_eot.md" \
    --json "docs/results/${defence}_eot.json"
  if [ "$N_HSJ" -gt 0 ]; then
    art-purifiers merge "$OUT"/hsj_"${defence}"_*.json --format markdown --output "docs/results/${defence}_hsj.md" \
      --json "docs/results/${defence}_hsj.json"
  fi
done
