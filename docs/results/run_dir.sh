#!/usr/bin/env bash
# DIR (shipped weights) on CIFAR-10 test images 0..499, seed 0, L-inf 8/255, for each target: the naturally trained
# ResNet-20 (weights dir_cifar10) and the PGD-AT ResNet-20 (victim resnet20-at, weights dir_cifar10_at).
# Every DIR row is deployed with seeds 0, 1 and 2 (the judge's mask draws); the attacker draws its own masks, so one
# crafted set serves the three seeds, and `merge --over-seeds` reports the mean with min..max.
# Parts (PARTS, default all but decision), in shards of 100 images (SHARDS; a shard's JSON is skipped when it exists):
#   main      clean; PGD-20 (step 2/255) on the target alone ("none", oblivious); through DIR with single-draw
#             gradients (adaptive) and with EOT over 8 mask draws (eot)
#   ablation  EOT PGD-20 at mask ratios 30 % and 70 %, and (PGD-AT target) alpha = 0 (weights dir_cifar10_at_alpha0;
#             the natural target's weights have no stage 2, so no alpha)
#   bpda      BPDA+EOT PGD-40 (the paper's Table 3 attack: identity backward through DIR, 8 draws)
#   autoattack  AutoAttack (standard composition) with EOT over 8 draws, and without EOT; the target alone
#   autoattack-rand  AutoAttack's version for randomized defences (APGD-CE, APGD-DLR) with EOT over 8 draws, and
#             without EOT
#             (AA_THREATS replaces the threat models of both and names the table after them, e.g.
#             AA_THREATS="clean oblivious" writes at_autoattack_clean-oblivious_<shard>.json)
#   decision  HopSkipJump with 1000 queries on the EOT classifier (8 draws)
# SHARD_DIR: where the shards' JSON go (default docs/results/dir_shards); MERGE=0: write no merged tables.
set -euo pipefail
{  # read whole before it runs: editing the file during a run cannot change the run
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data/cifar10}
OUT=${SHARD_DIR:-docs/results/dir_shards}
MERGE=${MERGE:-1}
TARGETS=${TARGETS-"natural at"}
SHARDS=${SHARDS-"0 1 2 3 4"}
PARTS=${PARTS-"main ablation bpda autoattack autoattack-rand"}
AA_THREATS=${AA_THREATS:-}
PGD=(--attack pgd --steps 20 --step-size 2/255 --eps 8/255)
mkdir -p $OUT

seeded() {  # seeded OPTIONS: one --defence per deployment seed
  for s in 0 1 2; do printf -- "--defence\ndir:%sseed=%s\n" "$1" "$s"; done
}

run() {  # run NAME SHARD ARGS...: one shard of one part
  local name=$1 shard=$2
  shift 2
  [ -f "$OUT/${name}_$shard.json" ] || art-purifiers evaluate --data-root "$DATA" --n 500 --seed 0 \
    --shard "$shard/5" --eot-draws 8 --quiet --json "$OUT/${name}_$shard.json" "$@"
}

merge() {  # merge NAME: the shards that exist, averaged over deployment seeds
  local files=("$OUT/$1"_*.json)
  [ "$MERGE" = 1 ] && [ -e "${files[0]}" ] || return 0
  art-purifiers merge "${files[@]}" --over-seeds --format markdown --output "docs/results/dir_$1.md" \
    --json "docs/results/dir_$1.json"
}

for target in $TARGETS; do
  if [ "$target" = natural ]; then victim=resnet20; weights=cifar10; else victim=resnet20-at; weights=cifar10_at; fi
  for part in $PARTS; do
    for i in $SHARDS; do
      name="${target}_$part"
      case $part in
        main) mapfile -t d < <(seeded "weights=$weights,")
              run "${target}_main" "$i" --victim $victim --threat clean oblivious adaptive eot "${PGD[@]}" "${d[@]}" ;;
        ablation) if [ "$target" = natural ]; then
                mapfile -t d < <(seeded "ratio=0.3,"; seeded "ratio=0.7,")
              else
                mapfile -t d < <(seeded "weights=$weights,ratio=0.3,"; seeded "weights=$weights,ratio=0.7,"
                                 seeded "weights=cifar10_at_alpha0,")
              fi
              run "${target}_ablation" "$i" --victim $victim --threat clean eot "${PGD[@]}" "${d[@]}" ;;
        bpda) mapfile -t d < <(seeded "weights=$weights,gradient=bpda,")
              run "${target}_bpda" "$i" --victim $victim --threat clean eot --attack pgd --steps 40 \
                --step-size 2/255 --eps 8/255 "${d[@]}" ;;
        autoattack|autoattack-rand) mapfile -t d < <(seeded "weights=$weights,")
              # oblivious (standard composition only): the target alone, the paper's "None" row
              threats=(clean adaptive eot); [ $part = autoattack ] && threats=(clean oblivious adaptive eot)
              if [ -n "$AA_THREATS" ]; then read -ra threats <<< "$AA_THREATS"; name+="_${AA_THREATS// /-}"; fi
              run "$name" "$i" --victim $victim --threat "${threats[@]}" --attack $part \
                --eps 8/255 "${d[@]}" ;;
        decision) mapfile -t d < <(seeded "weights=$weights,")
              run "${target}_decision" "$i" --victim $victim --threat clean decision --queries 1000 --eps 8/255 \
                "${d[@]}" ;;
      esac
    done
    merge "$name"
  done
done
  exit
}
