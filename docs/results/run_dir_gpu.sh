#!/usr/bin/env bash
# The DIR rows too slow for a CPU, as parallel run_dir.sh jobs of one CPU thread each sharing one GPU:
#   * HopSkipJump (decision), one process per TARGET:SHARD in HSJ_JOBS;
#   * AutoAttack (standard composition) on the PGD-AT target, threat models clean, oblivious, adaptive and eot, for
#     the shards in AA_SHARDS (default none): each shard's three attacks run in processes of their own, which fill
#     the adversarial-example cache, then one process per shard writes the shard's table from the cache. Run them
#     apart from HopSkipJump: processes share the GPU by time slices, and AutoAttack's large EOT batches starve
#     HopSkipJump's one-image queries.
# Every job stops DEADLINE seconds after the start (default 380), the AutoAttack processes 30 s earlier so that the
# shard's table can still be written. Both attacks save their progress in the cache folder (AutoAttack after each
# component, HopSkipJump after each image) and resume there when run again, on any device.
# Logs in LOGS (default runs/gpu); the shards' JSON where run_dir.sh puts them.
set -uo pipefail
{  # read whole before it runs
cd "$(dirname "$0")/../.."
DEADLINE=${DEADLINE:-380}
LOGS=${LOGS:-runs/gpu}
AA_SHARDS=${AA_SHARDS-}
HSJ_JOBS=${HSJ_JOBS-"natural:0 natural:1 natural:2 natural:3 natural:4 at:1 at:2 at:3 at:4"}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$LOGS"
start=$SECONDS

job() {  # job LOG END VAR=VALUE...: one run_dir.sh job with these settings, stopped END s after the start
  local log=$1 left=$(($2 - (SECONDS - start)))
  shift 2
  if [ "$left" -lt 5 ]; then echo "deadline passed, not started" > "$LOGS/$log.log"; return 0; fi
  timeout "$left" env MERGE=0 "$@" bash docs/results/run_dir.sh > "$LOGS/$log.log" 2>&1
  echo "exit $? after $((SECONDS - start)) s" >> "$LOGS/$log.log"
}

for s in $AA_SHARDS; do
  (
    for threat in oblivious adaptive eot; do
      job "at_autoattack_${s}_$threat" $((DEADLINE - 30)) SHARD_DIR="runs/gpu_warm/$threat" PARTS=autoattack TARGETS=at SHARDS="$s" \
        AA_THREATS=$threat &
    done
    wait
    job "at_autoattack_$s" "$DEADLINE" PARTS=autoattack TARGETS=at SHARDS="$s"  # all four threat models
  ) &
done
for j in $HSJ_JOBS; do
  job "${j%:*}_decision_${j#*:}" "$DEADLINE" PARTS=decision TARGETS="${j%:*}" SHARDS="${j#*:}" &
done
wait
echo "all jobs done after $((SECONDS - start)) s"
exit
}
