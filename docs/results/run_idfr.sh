#!/usr/bin/env bash
# IDFR on CIFAR-10 test images 0..499 with the bundled ResNet-20 (docs/results.md, "IDFR"). Each table is skipped when
# its JSON exists; the adversarial examples stay in the cache, so a rerun only recomputes what is missing.
#   Table 4 (white-box examples crafted on the ResNet-20 itself, then defended: oblivious) and Table 1 (black-box:
#   crafted on the ResNet-32) with FGSM, BIM-20 and C&W-20 (L-inf, step eps/4) at 4, 8 and 16/255, for IDFR, its
#   denoiser alone (Table 5's ablation), IDFR with the plain Table-7 restorer (no skips) and ART's JPEG
#   (q 25/50/75), feature squeezing (5 bits) and TVM (3 seeds).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data/cifar10}
OUT=docs/results
defences=(--defence idfr --defence idfr:restorer=False --defence idfr:weights=cifar10_plain
          --defence art:JpegCompression:quality=25 --defence art:JpegCompression:quality=50
          --defence art:JpegCompression:quality=75 --defence art:FeatureSqueezing:bit_depth=5
          --defence art:TotalVarMin:seed=0 --defence art:TotalVarMin:seed=1 --defence art:TotalVarMin:seed=2)
attacks=(--attack fgsm bim cw --eps 4/255 8/255 16/255 --steps 20)
common=(--data-root "$DATA" --n 500 --seed 0 --quiet --format markdown)
[ -f $OUT/idfr_table4.json ] || art-purifiers evaluate "${common[@]}" --threat clean oblivious "${attacks[@]}" \
  "${defences[@]}" --output $OUT/idfr_table4.md --json $OUT/idfr_table4.json
[ -f $OUT/idfr_table1.json ] || art-purifiers evaluate "${common[@]}" --threat clean transfer --source resnet32 \
  "${attacks[@]}" "${defences[@]}" --output $OUT/idfr_table1.md --json $OUT/idfr_table1.json
