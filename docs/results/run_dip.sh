#!/usr/bin/env bash
# The DIP defence and DIPDefend (seed 0) on CIFAR-10 test images 0..N-1 with the bundled ResNet-20: clean
# accuracy and oblivious accuracy (adversarial examples crafted on the bare victim, the same for every defence)
# under PGD-20 at Linf 2/4/8 (/255), and FGSM, BIM-20, MI-FGSM-20 and C&W Linf (PGD-20 on the C&W margin) at
# 8/255. Two runs, each in shards of 25 images (a DIP fit per image and prediction makes this hours of CPU):
# * "former": the DIP defence at its former defaults (pinned in the spec; these shards ran as `dip:seed=0` when
#   those were the defaults) and DIPDefend -> dip_shards/{pgd,others}_i.json -> dip_{pgd,others}.md;
# * "default": the DIP defence at its current defaults -> dip_shards/default_{pgd,others}_i.json ->
#   dip_default_{pgd,others}.md.
# A shard is skipped when its JSON exists (rerun to resume); `bash run_dip.sh 0 2` runs shards 0 and 2 only (to
# spread them over processes). A table is merged once all its shards are there.
set -euo pipefail
N=${N:-100}
SHARDS=$((N / 25))
OUT=docs/results/dip_shards
mkdir -p "$OUT"
declare -A DEFENCES=([former]="--defence dip:seed=0,input_jitter=0.0,warmup=100,step=0.5 --defence dipdefend:seed=0"
                     [default]="--defence dip:seed=0")
declare -A PREFIX=([former]="" [default]="default_")
declare -A TABLE=([former]="dip" [default]="dip_default")
for run in former default; do
  # shellcheck disable=SC2206  # the defence options are meant to split into words
  common=(--data-root ../shared/data/cifar10 --n "$N" --seed 0 --threat clean oblivious --steps 20
          ${DEFENCES[$run]} --quiet)
  for i in ${@:-$(seq 0 $((SHARDS - 1)))}; do
    for part in pgd others; do
      attack=(--attack pgd --eps 2/255 4/255 8/255)
      [ "$part" = others ] && attack=(--attack fgsm bim mifgsm cw --eps 8/255)
      file="$OUT/${PREFIX[$run]}${part}_$i.json"
      [ -f "$file" ] || art-purifiers evaluate "${common[@]}" --shard "$i/$SHARDS" "${attack[@]}" --json "$file"
    done
  done
  for part in pgd others; do
    shards=("$OUT/${PREFIX[$run]}${part}"_[0-9]*.json)
    if [ "${#shards[@]}" -ne "$SHARDS" ]; then
      echo "${PREFIX[$run]}$part: ${#shards[@]} of $SHARDS shards, not merged"
      continue
    fi
    art-purifiers merge "${shards[@]}" --format markdown --output "docs/results/${TABLE[$run]}_$part.md" \
      --json "docs/results/${TABLE[$run]}_$part.json"
  done
done
