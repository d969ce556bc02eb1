#!/usr/bin/env bash
# A run interrupted after step 13 and resumed from its newest checkpoint (step 12: mid-epoch) must
# end bitwise where the uninterrupted run of the same plan and seed ends (tests/checkpoint_worker.cpp).
#   checkpoint_resume.sh <f2d2n_launch> <checkpoint_worker> <plan> <units> <work dir>
set -euo pipefail
launch=$1 worker=$2 plan=$3 units=$4 work=$5
rm -rf "$work"
mkdir -p "$work"
"$launch" -n "$units" --timeout 120 -- "$worker" train "$plan" "$work/whole"
"$launch" -n "$units" --timeout 120 -- "$worker" train "$plan" "$work/cut" --stop-after 13
"$launch" -n "$units" --timeout 120 -- "$worker" train "$plan" "$work/cut" --resume | tee "$work/resumed.log"
grep -q "resumed from step-000000000012" "$work/resumed.log" || { echo "FAILED: did not resume from step 12"; exit 1; }
"$worker" compare "$work/whole" "$work/cut"
rm -rf "$work"
