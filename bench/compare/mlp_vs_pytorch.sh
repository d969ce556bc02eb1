#!/usr/bin/env bash
# bench/compare/mlp_vs_pytorch.sh: training steps of the 784-256-128-10 MLP, f2d2n against PyTorch,
# side by side on the same machine, same data, same settings; prints samples/s and the ratio.
#
#   bench/compare/mlp_vs_pytorch.sh                        (from the repository root)
#   BUILD_DIR=/tmp/bench-build BATCHES="64 256" MIN_TIME=0.5 REPETITIONS=3 bench/compare/mlp_vs_pytorch.sh
#
# Both sides: float32, batch B, SGD(lr 0.01, momentum 0.9), softmax cross-entropy, one process and
# one thread (OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1, torch.set_num_threads(1);
# Eigen in f2d2n is single-threaded), the same synthetic pool of 4096 samples bit for bit, trained
# on in the same order (see the header of pytorch_mlp.py). Each side runs REPETITIONS runs of at
# least MIN_TIME CPU seconds per batch size and reports the median; rates are per CPU second on both
# sides (Google Benchmark's default), so a busy shared machine disturbs them less. f2d2n's number is
# BM_train_step/B of build/bench/train_step_bench; BM_gemms/B (the same step's GEMMs alone, plain
# Eigen) is printed next to it, for the issue's other target (step >= 80 % of its GEMMs' rate).
#
# Environment:
#   BUILD_DIR    f2d2n build directory (default build). Reused when configured; otherwise configured
#                here in Release with only the benchmarks (tests and examples OFF).
#   BATCHES      batch sizes (default "64 256"); each must divide 4096.
#   MIN_TIME     seconds per run (default 0.5)    REPETITIONS  runs per size (default 3)
#   PYTHON       the Python that has Debian's python3-torch (default /usr/bin/python3)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo_root"

BUILD_DIR="${BUILD_DIR:-build}"
BATCHES="${BATCHES:-64 256}"
MIN_TIME="${MIN_TIME:-0.5}"
REPETITIONS="${REPETITIONS:-3}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x /usr/bin/python3 ]]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

die() { echo "mlp_vs_pytorch.sh: $*" >&2; exit 1; }

# --- PyTorch first: no point building when it cannot run ---
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  die "PyTorch is missing for $PYTHON: apt-get install python3-torch"
fi
for b in $BATCHES; do
  [[ "$b" =~ ^[1-9][0-9]*$ ]] && (( 4096 % b == 0 )) || die "batch size '$b' must be a positive divisor of 4096"
done

# --- f2d2n's benchmark ---
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  echo "# configuring $BUILD_DIR (Release, benchmarks only)"
  cmake -S "$repo_root" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DF2D2N_BUILD_BENCH=ON \
    -DF2D2N_BUILD_TESTS=OFF -DF2D2N_BUILD_EXAMPLES=OFF >/dev/null
fi
build_type="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt")"
[[ "$build_type" == "Release" ]] || echo "# warning: $BUILD_DIR is a '$build_type' build, not Release: f2d2n's numbers are not representative" >&2
cmake --build "$BUILD_DIR" --target train_step_bench -j2 >/dev/null || die "building train_step_bench in $BUILD_DIR failed"
bench="$BUILD_DIR/bench/train_step_bench"
[[ -x "$bench" ]] || die "$bench was not built (is F2D2N_BUILD_BENCH ON in $BUILD_DIR?)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

batch_regex="$(echo $BATCHES | tr ' ' '|')"
echo "# f2d2n: $bench, BM_train_step and BM_gemms at batch $BATCHES, $REPETITIONS x ${MIN_TIME}s"
"$bench" --benchmark_filter="^BM_(train_step|gemms)/($batch_regex)\$" --benchmark_min_time="$MIN_TIME" \
  --benchmark_repetitions="$REPETITIONS" --benchmark_report_aggregates_only=true \
  --benchmark_out="$tmp/f2d2n.json" --benchmark_out_format=json >"$tmp/f2d2n.log" 2>&1 ||
  { cat "$tmp/f2d2n.log" >&2; die "$bench failed"; }

echo "# PyTorch: bench/compare/pytorch_mlp.py at batch $BATCHES, $REPETITIONS x ${MIN_TIME}s"
batch_args=()
for b in $BATCHES; do batch_args+=(--batch "$b"); done
"$PYTHON" bench/compare/pytorch_mlp.py "${batch_args[@]}" --threads 1 --min-time "$MIN_TIME" \
  --repetitions "$REPETITIONS" | tee "$tmp/pytorch.txt" | grep '^#' || true
[[ "${PIPESTATUS[0]}" == 0 ]] || die "pytorch_mlp.py failed"

"$PYTHON" - "$tmp/f2d2n.json" "$tmp/pytorch.txt" $BATCHES <<'EOF'
import json, re, sys

f2d2n_json, pytorch_txt, batches = sys.argv[1], sys.argv[2], [int(b) for b in sys.argv[3:]]
medians = {}
for b in json.load(open(f2d2n_json))["benchmarks"]:
    if b.get("aggregate_name") == "median":
        medians[b["run_name"]] = b["samples/s"]
torch_rate = {}
for line in open(pytorch_txt):
    m = re.match(r"pytorch_mlp batch=(\d+) .* samples/s=([0-9.]+)", line)
    if m:
        torch_rate[int(m.group(1))] = float(m.group(2))

print()
print(f"{'batch':>5}  {'f2d2n samples/s':>15}  {'PyTorch samples/s':>17}  {'f2d2n/PyTorch':>13}  {'GEMMs samples/s':>15}  {'step/GEMMs':>10}")
for b in batches:
    step, gemms, torch_ = medians.get(f"BM_train_step/{b}"), medians.get(f"BM_gemms/{b}"), torch_rate.get(b)
    if step is None or gemms is None or torch_ is None:
        sys.exit(f"mlp_vs_pytorch.sh: missing a result for batch {b}")
    print(f"{b:>5}  {step:>15.0f}  {torch_:>17.0f}  {step / torch_:>12.2f}x  {gemms:>15.0f}  {step / gemms:>10.2f}")
EOF
