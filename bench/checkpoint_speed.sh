#!/usr/bin/env bash
# bench/checkpoint_speed.sh: the checkpoint targets in one run (see the top of
# bench/checkpoint_bench.cpp): checkpoint write rate against the disk's, warm load rate, one save
# against an epoch of the Fashion-MNIST MLP; ends with checkpoint_bench's table (figure, target,
# met / NOT MET), where the write rates are also set against dd's.
#
#   bench/checkpoint_speed.sh                          (from anywhere; builds checkpoint_bench)
#   bench/checkpoint_speed.sh --dir /mnt/fast/tmp      (the disk to measure: checkpoints and dd go there)
#   BUILD_DIR=/tmp/b bench/checkpoint_speed.sh -- --no-big --write-reps 15
#
# First, on the file system of the scratch folder: dd if=/dev/zero bs=1M conv=fsync of exactly the
# bytes of each model's checkpoint data (2.82 MB and 403 MB), DD_REPS times each into a fresh
# file; dd's own time, median. Then checkpoint_bench, with the same scratch folder and dd's rates
# (--dd-mbps): its own raw write + fsync of the same bytes, taken in turns with the checkpoint
# writes, is the reference of the verdict; dd's is a cross-check without a verdict (for a few MB,
# dd's time also holds the first touch of its new 1 MiB buffer, slow on some virtual machines).
#
# Options:
#   --dir DIR      parent of the scratch folder (default: $BUILD_DIR/bench); the scratch folder is
#                  removed at the end, whatever happens
#   --             the rest goes to checkpoint_bench (--no-big, --no-epoch, --write-reps N, ...)
# Environment:
#   BUILD_DIR      f2d2n build directory (default: build under the repository). Configured here in
#                  Release (tests and examples off) when it has no CMakeCache.txt.
#   JOBS           parallel compile jobs (default 1)
#   DD_REPS        dd runs per size (default 3)
set -euo pipefail
export LC_ALL=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
JOBS="${JOBS:-1}"
DD_REPS="${DD_REPS:-3}"
DIR=""
BENCH_ARGS=()

die() { echo "checkpoint_speed.sh: $*" >&2; exit 2; }

while (($#)); do
  case "$1" in
    --dir) (($# >= 2)) || die "--dir needs a directory"; DIR="$2"; shift 2 ;;
    --) shift; BENCH_ARGS=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ "$DD_REPS" =~ ^[1-9][0-9]*$ ]] || die "DD_REPS must be a positive whole number"
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "JOBS must be a positive whole number"

# --- build ---
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DF2D2N_BUILD_TESTS=OFF -DF2D2N_BUILD_EXAMPLES=OFF >/dev/null
fi
cmake --build "$BUILD_DIR" --target checkpoint_bench -j "$JOBS" >/dev/null
BENCH="$BUILD_DIR/bench/checkpoint_bench"
[[ -x "$BENCH" ]] || die "no $BENCH after the build"

# --- the scratch folder, on the disk to measure ---
DIR="${DIR:-$BUILD_DIR/bench}"
mkdir -p "$DIR"
WORK="$(mktemp -d "$DIR/checkpoint_speed.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
echo "# checkpoint_speed.sh: scratch folder $WORK ($(df -PT "$WORK" | awk 'NR == 2 { print $2 " on " $1 }'))"

# --- dd: write + fsync of the checkpoints' sizes ---
read -r MLP_BYTES BIG_BYTES < <("$BENCH" --sizes | sed -n 's/^mlp=\([0-9]*\) big=\([0-9]*\)$/\1 \2/p')
[[ -n "${BIG_BYTES:-}" ]] || die "checkpoint_bench --sizes printed nothing usable"

# Median MB/s (10^6 bytes) of DD_REPS runs of dd writing $1 bytes into a fresh file, by dd's own time.
dd_rate() {
  local bytes="$1" label="$2" rates=() r seconds
  for ((r = 0; r < DD_REPS; r++)); do
    seconds="$(dd if=/dev/zero of="$WORK/dd-$label-$r.bin" bs=1M count="$bytes" iflag=count_bytes conv=fsync 2>&1 |
      sed -n 's/.* copied, \([0-9.e+-]*\) s, .*/\1/p')"
    [[ -n "$seconds" ]] || die "could not read dd's time"
    rates+=("$(awk -v b="$bytes" -v s="$seconds" 'BEGIN { printf "%.1f", b / 1e6 / s }')")
    echo "dd    $label turn $r  $(awk -v b="$bytes" -v s="$seconds" 'BEGIN { printf "%8.1f MB/s (%7.2f ms) for %d bytes", b / 1e6 / s, s * 1e3, b }')" >&2
  done
  rm -f "$WORK"/dd-"$label"-*.bin
  printf '%s\n' "${rates[@]}" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
DD_MLP="$(dd_rate "$MLP_BYTES" mlp)"
DD_BIG=0
if [[ " ${BENCH_ARGS[*]-} " != *" --no-big "* ]]; then DD_BIG="$(dd_rate "$BIG_BYTES" big)"; fi
echo "dd    median  mlp $DD_MLP MB/s, big $DD_BIG MB/s"

# --- the benchmark ---
"$BENCH" --dir "$WORK" --dd-mbps "$DD_MLP,$DD_BIG" ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"}
