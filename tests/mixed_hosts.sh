#!/usr/bin/env bash
# A cluster on "two hosts" of this machine: units 0 and 1 listen on 127.0.0.1, units 2 and 3 on
# this machine's first non-loopback address, so that same_host_units() puts {0, 1} and {2, 3} in
# two shared-memory groups and the units of different groups talk over TCP (with a cluster key,
# as units off loopback must). The adjoint checks and DP2 x TP2's 20-step equivalence must pass,
# and each unit must say it ran over "shared memory + TCP". Exits 77 (skipped) without such an address.
#   tests/mixed_hosts.sh COMM_WORKER PLAN_WORKER
set -euo pipefail
comm_worker="$1" plan_worker="$2"
ip=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$' | grep -v '^127\.' | head -n1 || true)
[[ -n "$ip" ]] || { echo "skipped: this machine has no non-loopback IPv4 address"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
base=$(( 30000 + RANDOM % 20000 ))
peers="127.0.0.1:$base,127.0.0.1:$((base + 1)),$ip:$((base + 2)),$ip:$((base + 3))"
run4() {
  local pids=() rc=0
  for r in 0 1 2 3; do
    F2D2N_TRANSPORT=shm F2D2N_CLUSTER_KEY=mixed-hosts-test-key-0123456789 F2D2N_RANK=$r F2D2N_WORLD_SIZE=4 \
      F2D2N_PEERS="$peers" F2D2N_CONNECT_TIMEOUT=20 timeout -k 5 120 "$@" >"$tmp/$r.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  cat "$tmp"/[0-3].log
  return $rc
}
run4 "$comm_worker" adjoint
for r in 0 1 2 3; do
  grep -q "adjoint: ok: .* over shared memory + TCP" "$tmp/$r.log" || { echo "unit $r did not run over shared memory + TCP"; exit 1; }
done
run4 "$plan_worker" dp2_tp2
echo "mixed_hosts: every unit passed over shared memory + TCP"
