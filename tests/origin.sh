#!/usr/bin/env bash
# Unit 2 of 4 (plan dp4) fails between two training steps (tests/plan_worker.hpp, mode origin).
# Every other unit must fail in its next step with a peer_error that names unit 2 as the unit that
# failed first, with unit 2's error, and exit with the bystander code (86); the launcher must report
# rank 2 and return its code (1), not a bystander's. Measured before goodbyes carried a reason: the
# units named the peer they happened to wait on ("peer 3 has shut down"), and the launcher the first
# unit to exit.
#   origin.sh <f2d2n_launch> <plan_worker>
set -uo pipefail
launch=$1 worker=$2
out=$("$launch" -n 4 --timeout 60 -- "$worker" origin 2>&1)
code=$?
printf '%s\n' "$out"
fail() {
  echo "FAILED: $1"
  exit 1
}
[[ $code -eq 1 ]] || fail "the launcher returned $code, not unit 2's exit code 1"
grep -q '^\[launch\] rank 2 exited with code 1' <<<"$out" || fail "the launcher did not report rank 2"
for r in 0 1 3; do
  grep -q "^\[$r\] unit $r, origin: names unit 2" <<<"$out" || fail "unit $r did not name unit 2"
done
if grep -q 'FAILED' <<<"$out"; then fail "a unit's check failed"; fi
echo "every unit named unit 2; the launcher reported rank 2"
