#!/usr/bin/env bash
# bench/compare/allreduce_vs_mpi.sh: all-reduce bus bandwidth, f2d2n's over TCP, shared memory and its MPI
# transport against Open MPI's MPI_Allreduce, side by side on this machine, same sizes, process
# counts and loop; prints one table with the ratios.
#
#   bench/compare/allreduce_vs_mpi.sh                       (from the repository root)
#   BUILD_DIR=/tmp/ar-build PROCS="2 4" SIZES_MIB="1 4 16 64" ROUNDS=3 bench/compare/allreduce_vs_mpi.sh
#
# Five sides, each started with P processes on this machine:
#   f2d2n        $BUILD_DIR/bench/allreduce_bench under $BUILD_DIR/tools/f2d2n_launch -n P with
#                F2D2N_TRANSPORT=tcp (tcp_transport on 127.0.0.1)
#   f2d2n-shm    the same with F2D2N_TRANSPORT=shm: f2d2n's shared-memory transport (transport/shm.hpp),
#                what f2d2n_launch uses by default between the units of one host
#   MPI-TCP      $BUILD_DIR/bench/mpi_allreduce under mpirun ... --mca pml ob1 --mca btl tcp,self
#                --mca btl_tcp_if_include lo (Open MPI's TCP transport, loopback only)
#   MPI-default  the same under plain mpirun: Open MPI's choice, shared memory (vader) here
#   f2d2n-MPI    $BUILD_DIR/bench/allreduce_bench under plain mpirun: f2d2n's ring over its MPI
#                transport (transport/mpi.hpp), so over Open MPI's shared memory here
# mpirun always gets --allow-run-as-root --oversubscribe (P may exceed the cores). Every program
# fills its float32 buffer, lines the processes up with a small all-reduce, times one all-reduce,
# and repeats; it prints the median time per operation and the bus bandwidth
# 2 (P-1)/P * bytes / time (see the header of bench/allreduce_bench.cpp). The sides take turns,
# ROUNDS times (this machine's speed drifts over seconds: turns keep a slow phase from landing on
# one side only); the table gives medians over the rounds, and ratios are medians of the per-round
# ratios. Targets: f2d2n / MPI-TCP >= 1.0 at every size (issues "Message passing as linear
# algebra" and "Past one machine on an existing engine ..."); f2d2n / MPI-default >= 0.8 at 4 MiB and
# above (the first of them; TCP cannot reach it on one host); f2d2n-shm and f2d2n-MPI / MPI-default
# >= 0.9 at 1 MiB and above (the second). f2d2n's side runs its default schedule: the ring for 2
# units, halving-doubling for 4 (bench/allreduce_bench.cpp --algorithm), pipelined over shared memory.
#
# Environment:
#   BUILD_DIR     f2d2n build directory (default build). Reused when configured; otherwise configured
#                 here in Release with only the benchmarks (tests and examples OFF).
#   PROCS         process counts (default "2 4")
#   SIZES_MIB     buffer sizes in MiB of float32 (default "1 4 16 64")
#   REPETITIONS   timed all-reduces per size (default: the programs' own, 512 MiB / size within 5..50)
#   WARMUP        untimed all-reduces per size first (default 2)
#   CHUNK_BYTES   f2d2n's call_options::chunk_bytes (default: the library's)
#   ROUNDS        turns each side takes (default 1)
#   RUN_TIMEOUT   seconds one run (one side, one P, every size) may take before it is killed (default 300)
#   MPIRUN        the mpirun to use (default mpirun); MPICXX likewise (default mpicxx), for the check
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
compare_init allreduce_vs_mpi.sh

BUILD_DIR="${BUILD_DIR:-build}"
PROCS="${PROCS:-2 4}"
SIZES_MIB="${SIZES_MIB:-1 4 16 64}"
REPETITIONS="${REPETITIONS:-}"
WARMUP="${WARMUP:-2}"
CHUNK_BYTES="${CHUNK_BYTES:-}"
ROUNDS="${ROUNDS:-1}"
RUN_TIMEOUT="${RUN_TIMEOUT:-300}"
MPIRUN="${MPIRUN:-mpirun}"
MPICXX="${MPICXX:-mpicxx}"

# --- Open MPI first: no point building when it cannot run ---
if ! command -v "$MPIRUN" >/dev/null 2>&1 || ! command -v "$MPICXX" >/dev/null 2>&1; then
  die "Open MPI is missing ($MPIRUN and $MPICXX): scripts/deps.sh --compare, or apt-get install openmpi-bin libopenmpi-dev"
fi
for p in $PROCS; do positive "$p" && (( p >= 2 )) || die "process count '$p' must be a whole number of at least 2"; done
for s in $SIZES_MIB; do positive "$s" || die "size '$s' must be a positive whole number of MiB"; done
positive "$ROUNDS" || die "ROUNDS must be a positive integer"
positive "$RUN_TIMEOUT" || die "RUN_TIMEOUT must be a positive number of seconds"
[[ -z "$REPETITIONS" ]] || positive "$REPETITIONS" || die "REPETITIONS must be a positive integer"
[[ "$WARMUP" =~ ^[0-9]+$ ]] || die "WARMUP must be a whole number"
[[ -z "$CHUNK_BYTES" ]] || positive "$CHUNK_BYTES" || die "CHUNK_BYTES must be a positive number of bytes"

# --- the two programs and the launcher ---
build_benchmarks 2 f2d2n_launch allreduce_bench
cmake "$BUILD_DIR" >/dev/null  # looks for MPI again if the directory was configured before Open MPI was installed
(build_benchmarks 2 mpi_allreduce) ||
  die "if CMake did not find MPI in $BUILD_DIR: rm $BUILD_DIR/CMakeCache.txt and run again"
launch="$BUILD_DIR/tools/f2d2n_launch"
f2d2n_bench="$BUILD_DIR/bench/allreduce_bench"
mpi_bench="$BUILD_DIR/bench/mpi_allreduce"
for x in "$launch" "$f2d2n_bench" "$mpi_bench"; do
  [[ -x "$x" ]] || die "$x was not built (is F2D2N_BUILD_BENCH ON in $BUILD_DIR, and did CMake find MPI?)"
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

args=(--sizes-mib "$(echo $SIZES_MIB | tr ' ' ',')" --warmup "$WARMUP")
[[ -z "$REPETITIONS" ]] || args+=(--repetitions "$REPETITIONS")
f2d2n_args=("${args[@]}")
[[ -z "$CHUNK_BYTES" ]] || f2d2n_args+=(--chunk-bytes "$CHUNK_BYTES")
mpirun_base=("$MPIRUN" --allow-run-as-root --oversubscribe)
# pml ob1: the point-to-point layer that uses the BTLs (UCX, where Open MPI picks it, would ignore
# --mca btl and use shared memory).
mpi_tcp=(--mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)

# run SIDE P ROUND command...: keeps the result lines (unit 0's, without the launcher's "[0] ").
run() {
  local side="$1" p="$2" r="$3"
  shift 3
  run_retrying "$side with $p processes" "$tmp/log" "$@"
  sed -n 's/^\(\[0\] \)\{0,1\}\(f2d2n\|openmpi\) allreduce /allreduce /p' "$tmp/log" | sed "s/^/$side r=$r /" >>"$tmp/results"
}

echo "# $ROUNDS round(s); each, for P in $PROCS: f2d2n ($f2d2n_bench under $launch), Open MPI with" \
  "--mca btl tcp,self over lo, Open MPI default; sizes $SIZES_MIB MiB of float32"
: >"$tmp/results"
for (( r = 1; r <= ROUNDS; ++r )); do
  for p in $PROCS; do
    F2D2N_TRANSPORT=tcp run f2d2n "$p" "$r" "$launch" -n "$p" --timeout "$RUN_TIMEOUT" -- "$f2d2n_bench" "${f2d2n_args[@]}"
    F2D2N_TRANSPORT=shm run f2d2n-shm "$p" "$r" "$launch" -n "$p" --timeout "$RUN_TIMEOUT" -- "$f2d2n_bench" "${f2d2n_args[@]}"
    run mpi-tcp "$p" "$r" "${mpirun_base[@]}" "${mpi_tcp[@]}" -n "$p" "$mpi_bench" "${args[@]}"
    run mpi-default "$p" "$r" "${mpirun_base[@]}" -n "$p" "$mpi_bench" "${args[@]}"
    run f2d2n-mpi "$p" "$r" "${mpirun_base[@]}" -n "$p" "$f2d2n_bench" "${f2d2n_args[@]}"
  done
done

# --- the table ---
awk -v rounds="$ROUNDS" -v procs="$PROCS" -v sizes="$SIZES_MIB" '
function median(list,    a, n, i, j, t) {
  n = split(list, a, " ")
  for (i = 2; i <= n; ++i) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; --j) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
  return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
  side = $1; r = substr($2, 3)
  for (i = 3; i <= NF; ++i) { split($i, kv, "="); f[kv[1]] = kv[2] }
  key = f["p"] SUBSEP f["bytes"] SUBSEP r
  bw[side, key] = f["busbw_GBps"]
}
END {
  print ""
  printf "# bus bandwidth 2(P-1)/P x bytes / time, GB/s; medians over %d round(s), ratios are medians of per-round ratios\n", rounds
  printf "%8s  %2s  %12s  %12s  %9s  %15s  %13s  %14s  %17s  %14s  %17s\n", "size", "P", "f2d2n GB/s", "MPI-TCP GB/s", "f2d2n/TCP", "MPI-default GB/s", "f2d2n/default", "f2d2n-MPI GB/s", "f2d2n-MPI/default", "f2d2n-shm GB/s", "f2d2n-shm/default"
  nsizes = split(sizes, S, " "); nprocs = split(procs, P, " ")
  tcp_ok = 1; shm_ok = 1; mpi_ok = 1; own_ok = 1
  for (pi = 1; pi <= nprocs; ++pi) for (si = 1; si <= nsizes; ++si) {
    p = P[pi]; bytes = S[si] * 1048576
    lf = lt = ld = lrt = lrd = lm = lrm = ls = lrs = ""
    for (r = 1; r <= rounds; ++r) {
      key = p SUBSEP bytes SUBSEP r
      if (!(("f2d2n", key) in bw) || !(("mpi-tcp", key) in bw) || !(("mpi-default", key) in bw) || !(("f2d2n-mpi", key) in bw) || !(("f2d2n-shm", key) in bw)) {
        printf "allreduce_vs_mpi.sh: missing results for %d MiB, P=%d, round %d\n", S[si], p, r > "/dev/stderr"; exit 1
      }
      a = bw["f2d2n", key]; b = bw["mpi-tcp", key]; c = bw["mpi-default", key]; m = bw["f2d2n-mpi", key]
      lf = lf " " a; lt = lt " " b; ld = ld " " c; lrt = lrt " " a / b; lrd = lrd " " a / c
      lm = lm " " m; lrm = lrm " " m / c
      h = bw["f2d2n-shm", key]; ls = ls " " h; lrs = lrs " " h / c
    }
    rt = median(lrt); rd = median(lrd); rm = median(lrm); rs = median(lrs)
    if (S[si] >= 1 && rs < 0.9) own_ok = 0
    if (S[si] >= 1 && rm < 0.9) mpi_ok = 0
    if (rt < 1.0) tcp_ok = 0
    if (S[si] >= 4 && rd < 0.8) shm_ok = 0
    printf "%5d MiB  %2d  %12.3f  %12.3f  %8.2fx  %15.3f  %12.2fx  %14.3f  %16.2fx  %14.3f  %16.2fx\n", S[si], p, median(lf), median(lt), rt, median(ld), rd, median(lm), rm, median(ls), rs
  }
  printf "\n# target f2d2n >= 1.0x MPI-TCP at every size: %s\n", tcp_ok ? "met" : "NOT met"
  printf "# target f2d2n >= 0.8x MPI-default at >= 4 MiB: %s\n", shm_ok ? "met" : "NOT met"
  printf "# target f2d2n-MPI (one host) >= 0.9x MPI-default at >= 1 MiB: %s\n", mpi_ok ? "met" : "NOT met"
  printf "# target f2d2n-shm (one host) >= 0.9x MPI-default at >= 1 MiB: %s\n", own_ok ? "met" : "NOT met"
}' "$tmp/results"
