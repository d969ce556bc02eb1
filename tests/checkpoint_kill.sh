#!/usr/bin/env bash
# SIGKILL of a random unit at random moments of a run with restarts, including while a checkpoint
# is being written: the run completes (f2d2n_launch --max-restarts), every restart resumes from a
# committed checkpoint, and the weights are bitwise those of the uninterrupted run.
#   checkpoint_kill.sh <f2d2n_launch> <checkpoint_worker> <plan> <units> <work dir> [seed]
set -euo pipefail
launch=$1 worker=$2 plan=$3 units=$4 work=$5
seed=${6:-$RANDOM}
RANDOM=$seed
rm -rf "$work"
mkdir -p "$work"
"$launch" -n "$units" --timeout 120 -- "$worker" train "$plan" "$work/whole"

# One kill per attempt, at increasing steps (so that each is reached after the resume before it,
# which is at most the step of the kill before): attempt a kills in steps 7a+1 .. 7a+7, checkpoint
# phases only where a checkpoint is written (every 2 steps, and at the end of every epoch of 5).
phases=(step data agreed committed)
kills=()
for a in 0 1 2 3; do
  phase=${phases[RANDOM % 4]}
  step=$((7 * a + 1 + RANDOM % 6))  # 7a+1 .. 7a+6, then 7a+7 at most
  if [[ $phase != step ]] && ((step % 2 != 0 && step % 5 != 0)); then step=$((step + 1)); fi
  kills+=("$a:$((RANDOM % units)):$step:$phase")
done
plan_text=$(IFS=,; echo "${kills[*]}")
echo "kill test seed $seed: $plan_text"
"$launch" -n "$units" --max-restarts 6 --grace-ms 500 --timeout 300 -- \
  "$worker" train "$plan" "$work/killed" --resume --kill "$plan_text" 2>&1 | tee "$work/killed.log"
killed=$(grep -c "killing myself" "$work/killed.log" || true)
resumed=$(grep -c "resumed from" "$work/killed.log" || true)
echo "units killed: $killed; unit resumes from a checkpoint: $resumed"
[[ $killed -eq 4 ]] || { echo "FAILED: expected 4 kills"; exit 1; }
"$worker" compare "$work/whole" "$work/killed"
rm -rf "$work"
