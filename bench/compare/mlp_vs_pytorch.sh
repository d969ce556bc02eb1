#!/usr/bin/env bash
# bench/compare/mlp_vs_pytorch.sh: training steps of the 784-256-128-10 MLP, f2d2n against PyTorch,
# side by side on the same machine, same data, same settings; prints samples/s and the ratio.
#
#   bench/compare/mlp_vs_pytorch.sh                        (from the repository root)
#   BUILD_DIR=/tmp/bench-build BATCHES="64 256" MIN_TIME=0.5 ROUNDS=3 bench/compare/mlp_vs_pytorch.sh
#
# Both sides: float32, batch B, SGD(lr 0.01, momentum 0.9), softmax cross-entropy, one process and
# one thread (OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1, torch.set_num_threads(1);
# f2d2n's kernels, libxsmm's or Eigen's, run on the calling thread), the same synthetic pool of
# 4096 samples bit for bit, trained on in the same order (see the header of pytorch_mlp.py). The two sides take turns, ROUNDS times
# (this machine's speed drifts by 20 % and more over seconds: turns keep a slow phase from landing
# on one side only); each turn runs each batch size for at least MIN_TIME CPU seconds. Rates are per
# CPU second on both sides (Google Benchmark's default), so time spent descheduled on a busy shared
# machine counts on neither. The table gives medians over the rounds. f2d2n's number is
# BM_train_step/B of $BUILD_DIR/bench/train_step_bench, built with the kernel backend its
# configuration chose (docs/kernels.md; the first line names it). Next to it, in GFLOP/s: the
# step's GEMMs alone through the kernel layer (BM_gemms/B/1) and as plain Eigen products
# (BM_gemms/B/0), and the core's FMA peak (BM_fma_peak), measured in the same turn; the last columns
# are the step's and its GEMMs' shares of that peak, and the step's share of its GEMMs' rate.
#
# Environment:
#   BUILD_DIR    f2d2n build directory (default build). Reused when configured; otherwise configured
#                here in Release with only the benchmarks (tests and examples OFF).
#   BATCHES      batch sizes (default "64 256"); each must divide 4096.
#   MIN_TIME     CPU seconds per batch size and turn (default 0.5)
#   ROUNDS       turns each side takes (default 3)
#   PYTHON       the Python that has Debian's python3-torch (default /usr/bin/python3)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
compare_init mlp_vs_pytorch.sh

BUILD_DIR="${BUILD_DIR:-build}"
BATCHES="${BATCHES:-64 256}"
MIN_TIME="${MIN_TIME:-0.5}"
ROUNDS="${ROUNDS:-3}"
pick_python
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

# --- PyTorch first: no point building when it cannot run ---
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  die "PyTorch is missing for $PYTHON: apt-get install python3-torch"
fi
for b in $BATCHES; do
  [[ "$b" =~ ^[1-9][0-9]*$ ]] && (( 4096 % b == 0 )) || die "batch size '$b' must be a positive divisor of 4096"
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"

# --- f2d2n's benchmark ---
build_benchmarks 2 train_step_bench
bench="$BUILD_DIR/bench/train_step_bench"
[[ -x "$bench" ]] || die "$bench was not built (is F2D2N_BUILD_BENCH ON in $BUILD_DIR?)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# --- the two sides, taking turns ---
batch_regex="$(echo $BATCHES | tr ' ' '|')"
batch_args=()
for b in $BATCHES; do batch_args+=(--batch "$b"); done
echo "# $ROUNDS rounds, each: $bench (BM_train_step, BM_gemms, BM_fma_peak), then" \
  "bench/compare/pytorch_mlp.py; batch $BATCHES, ${MIN_TIME} CPU seconds each"
echo "# f2d2n's kernel backend: $("$bench" --backend)"
for (( r = 1; r <= ROUNDS; ++r )); do
  "$bench" --benchmark_filter="^BM_(train_step/($batch_regex)|gemms/batch:($batch_regex)/kernel_layer:[01]|fma_peak)\$" \
    --benchmark_min_time="$MIN_TIME" \
    --benchmark_out="$tmp/f2d2n.$r.json" --benchmark_out_format=json >"$tmp/f2d2n.log" 2>&1 ||
    { cat "$tmp/f2d2n.log" >&2; die "$bench failed"; }
  "$PYTHON" bench/compare/pytorch_mlp.py "${batch_args[@]}" --threads 1 --min-time "$MIN_TIME" --repetitions 1 \
    >"$tmp/pytorch.$r.txt" 2>"$tmp/pytorch.log" ||
    { cat "$tmp/pytorch.log" >&2; die "bench/compare/pytorch_mlp.py failed"; }
  if (( r == 1 )); then grep '^#' "$tmp/pytorch.1.txt" || true; fi
done

# --- the table ---
"$PYTHON" - "$tmp" "$ROUNDS" $BATCHES <<'PY'
import json, re, statistics, sys

tmp, rounds, batches = sys.argv[1], int(sys.argv[2]), [int(b) for b in sys.argv[3:]]
step, step_gf, gemms, gemms_gf, eigen_gf, torch_ = ({b: [] for b in batches} for _ in range(6))
peak = []
for r in range(1, rounds + 1):
    for run in json.load(open(f"{tmp}/f2d2n.{r}.json"))["benchmarks"]:
        parts = run["run_name"].split("/")
        if parts[0] == "BM_fma_peak":
            peak.append(run["GFLOP/s"])
        elif parts[0] == "BM_train_step":
            step[int(parts[1])].append(run["samples/s"])
            step_gf[int(parts[1])].append(run["GFLOP/s"])
        elif parts[0] == "BM_gemms":
            batch, layer = int(parts[1].split(":")[1]), parts[2] == "kernel_layer:1"
            if layer:
                gemms[batch].append(run["samples/s"])
                gemms_gf[batch].append(run["GFLOP/s"])
            else:
                eigen_gf[batch].append(run["GFLOP/s"])
    for line in open(f"{tmp}/pytorch.{r}.txt"):
        m = re.match(r"pytorch_mlp batch=(\d+) .* samples/s=([0-9.]+)", line)
        if m:
            torch_[int(m.group(1))].append(float(m.group(2)))

med = statistics.median
if len(peak) != rounds:
    sys.exit("mlp_vs_pytorch.sh: missing results for the FMA peak")
print(f"\n# medians over {rounds} round(s); ratios are medians of the per-round ratios")
print(f"# the core's FMA peak: {med(peak):.0f} GFLOP/s (BM_fma_peak)")
print(f"{'batch':>5}  {'f2d2n samples/s':>15}  {'PyTorch samples/s':>17}  {'f2d2n/PyTorch':>13}  "
      f"{'GEMMs GFLOP/s':>13}  {'Eigen GFLOP/s':>13}  {'step/peak':>9}  {'GEMMs/peak':>10}  {'step/GEMMs':>10}")
worst = 0.0
for b in batches:
    if not (len(step[b]) == len(gemms[b]) == len(eigen_gf[b]) == len(torch_[b]) == rounds):
        sys.exit(f"mlp_vs_pytorch.sh: missing results for batch {b}")
    vs_torch = med(s / t for s, t in zip(step[b], torch_[b]))
    vs_gemms = med(s / g for s, g in zip(step[b], gemms[b]))
    step_peak = med(s / p for s, p in zip(step_gf[b], peak))
    gemm_peak = med(g / p for g, p in zip(gemms_gf[b], peak))
    worst = max(worst, max(g / p for g, p in zip(gemms_gf[b], peak)))
    print(f"{b:>5}  {med(step[b]):>15.0f}  {med(torch_[b]):>17.0f}  {vs_torch:>12.2f}x  "
          f"{med(gemms_gf[b]):>13.0f}  {med(eigen_gf[b]):>13.0f}  {step_peak:>9.2f}  {gemm_peak:>10.2f}  {vs_gemms:>10.2f}")
if worst > 1.05:
    print(f"# warning: a GEMM rate measured {worst:.2f}x the FMA probe's peak in one round: the probe ran in a slow "
          "phase of the machine (or below the core's peak); the peak ratios of that round are not trustworthy")
PY
