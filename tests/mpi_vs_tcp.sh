#!/usr/bin/env bash
# The same plan over TCP (f2d2n_launch) and over MPI (mpirun) ends with the same weights on every
# unit, bit for bit: each run's units print the XXH3 digest of their weights (tests/plan_worker.hpp).
#   mpi_vs_tcp.sh <f2d2n_launch> "<mpirun and its flags>" <plan_worker> <plan> <units>
set -euo pipefail
launch=$1 mpirun=$2 worker=$3 plan=$4 units=$5
digests() { grep -o 'unit [0-9]*, .*weights digest [0-9a-f]*' | sed 's/, .*weights digest / /' | sort; }
tcp=$("$launch" -n "$units" --timeout 120 -- "$worker" "$plan" | digests)
# shellcheck disable=SC2086  # the launcher's flags are words
mpi=$(timeout 120 $mpirun -np "$units" "$worker" "$plan" | digests)
echo "over TCP:"; echo "$tcp"
echo "over MPI:"; echo "$mpi"
if [[ $(wc -l <<<"$tcp") -ne $units || "$tcp" != "$mpi" ]]; then
  echo "FAILED: the weights differ (or a unit printed none)" >&2
  exit 1
fi
echo "$plan: the same weights over TCP and MPI on all $units units"
