#!/usr/bin/env bash
# bench/compare/allreduce_tls.sh: what mutual TLS costs: all-reduce bus bandwidth of f2d2n's ring
# over plain TCP and over TLS (tcp_options::tls), side by side on this machine; prints one table
# with the ratio TLS / plain.
#
#   bench/compare/allreduce_tls.sh                          (from the repository root)
#   BUILD_DIR=build-tls PROCS=2 SIZES_MIB="1 16 64" ROUNDS=5 bench/compare/allreduce_tls.sh
#
# Both sides run $BUILD_DIR/bench/allreduce_bench under $BUILD_DIR/tools/f2d2n_launch -n P on
# loopback; the TLS side gets F2D2N_TLS_CA, F2D2N_TLS_CERT and F2D2N_TLS_KEY naming a throwaway
# cluster CA and a unit certificate (EC P-256) that the script makes with the openssl command in
# a temporary directory. The sides take turns, ROUNDS times (this machine's speed drifts: turns
# keep a slow phase from landing on one side only); the table gives the median bus bandwidth over
# the rounds, and the ratio is the median of the per-round ratios.
#
# Environment:
#   BUILD_DIR     f2d2n build directory with allreduce_bench and f2d2n_launch built (default build)
#   PROCS         process count (default 2)
#   SIZES_MIB     buffer sizes in MiB of float32 (default "1 16 64")
#   ROUNDS        turns each side takes (default 5)
#   REPETITIONS   timed all-reduces per size (default: the benchmark's own)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

BUILD_DIR="${BUILD_DIR:-build}"
PROCS="${PROCS:-2}"
SIZES_MIB="${SIZES_MIB:-1 16 64}"
ROUNDS="${ROUNDS:-5}"
bench="$BUILD_DIR/bench/allreduce_bench"
launch="$BUILD_DIR/tools/f2d2n_launch"
for f in "$bench" "$launch"; do
  [[ -x "$f" ]] || { echo "allreduce_tls.sh: $f is missing (build allreduce_bench and f2d2n_launch)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
(
  cd "$work"
  openssl req -x509 "${ec[@]}" -days 1 -subj /CN=f2d2n-bench-ca -keyout ca.key -out ca.pem
  openssl req "${ec[@]}" -subj /CN=f2d2n-unit -keyout unit.key -out unit.csr
  openssl x509 -req -days 1 -in unit.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out unit.pem
) >"$work/openssl.log" 2>&1 || { cat "$work/openssl.log" >&2; exit 1; }

sizes_csv=$(tr ' ' ',' <<<"$SIZES_MIB")
args=(--sizes-mib "$sizes_csv")
[[ -n "${REPETITIONS:-}" ]] && args+=(--repetitions "$REPETITIONS")
results="$work/results"
: >"$results"
for round in $(seq 1 "$ROUNDS"); do
  for side in plain tls; do
    if [[ $side == tls ]]; then
      out=$(F2D2N_TLS_CA="$work/ca.pem" F2D2N_TLS_CERT="$work/unit.pem" F2D2N_TLS_KEY="$work/unit.key" \
        "$launch" -n "$PROCS" -- "$bench" "${args[@]}")
    else
      out=$(env -u F2D2N_TLS_CA -u F2D2N_TLS_CERT -u F2D2N_TLS_KEY "$launch" -n "$PROCS" -- "$bench" "${args[@]}")
    fi
    # "[0] f2d2n allreduce p=2 bytes=1048576 seconds=... busbw_GBps=1.034" -> "round side bytes busbw"
    sed -n 's/.*f2d2n allreduce p=[0-9]* bytes=\([0-9]*\) .*busbw_GBps=\([0-9.]*\).*/\1 \2/p' <<<"$out" |
      while read -r bytes bw; do echo "$round $side $bytes $bw"; done >>"$results"
  done
done

echo "# all-reduce bus bandwidth, f2d2n ring, P=$PROCS, loopback, plain TCP vs mutual TLS 1.3; $ROUNDS rounds, medians"
printf '%-10s %14s %14s %12s\n' "MiB" "plain GB/s" "TLS GB/s" "TLS/plain"
awk '
  function median(a, n,   i, j, t) {
    for (i = 1; i <= n; ++i) for (j = i + 1; j <= n; ++j) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  { bw[$3, $2, $1] = $4; sizes[$3] = 1; if ($1 > rounds) rounds = $1 }
  END {
    n = 0; for (s in sizes) order[++n] = s + 0
    for (i = 1; i <= n; ++i) for (j = i + 1; j <= n; ++j) if (order[j] < order[i]) { t = order[i]; order[i] = order[j]; order[j] = t }
    for (i = 1; i <= n; ++i) {
      s = order[i]; k = 0
      for (r = 1; r <= rounds; ++r) if ((s, "plain", r) in bw && (s, "tls", r) in bw) {
        ++k; p[k] = bw[s, "plain", r]; q[k] = bw[s, "tls", r]; x[k] = q[k] / p[k]
      }
      if (k == 0) continue
      printf "%-10d %14.3f %14.3f %12.2f\n", s / 1048576, median(p, k), median(q, k), median(x, k)
    }
  }' "$results"
