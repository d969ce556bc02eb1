#!/usr/bin/env bash
# bench/compare/cnn_vs_pytorch.sh: training steps of a 2-convolution CNN, f2d2n against PyTorch,
# side by side on the same machine, same data, same settings; prints samples/s and the ratios.
#
#   bench/compare/cnn_vs_pytorch.sh                        (from the repository root)
#   BUILD_DIR=/tmp/bench-build BATCHES="64" MIN_TIME=1 ROUNDS=3 bench/compare/cnn_vs_pytorch.sh
#
# The CNN: 28 x 28 x 1 -> conv 16 5x5 pad 2 -> relu -> max pool 2 -> conv 32 5x5 pad 2 -> relu ->
# max pool 2 -> dense 64 -> relu -> dense 10, softmax cross-entropy, SGD(lr 0.01, momentum 0.9),
# float32, one process and one thread on both sides, the same synthetic pool of 4096 samples bit
# for bit (bench/compare/pytorch_cnn.py). f2d2n's images are channels-last (NHWC); PyTorch runs
# both its default NCHW tensors and torch.channels_last, and the table gives both: the layout
# decides PyTorch's speed here. The two sides take turns, ROUNDS times; rates are per CPU second.
# f2d2n's numbers are BM_cnn_step/B of $BUILD_DIR/bench/train_step_bench, and, for each conv layer
# at batch 64, the layer alone (BM_conv_layer: forward and backward, im2col and col2im included)
# against exactly its products (BM_conv_gemms): the last columns are the layer's share of its
# GEMMs' rate.
#
# Environment: BUILD_DIR (default build), BATCHES (default "64"; each must divide 4096), MIN_TIME
# (CPU seconds per measurement and turn, default 1), ROUNDS (default 3), PYTHON (default /usr/bin/python3).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
compare_init cnn_vs_pytorch.sh

BUILD_DIR="${BUILD_DIR:-build}"
BATCHES="${BATCHES:-64}"
MIN_TIME="${MIN_TIME:-1}"
ROUNDS="${ROUNDS:-3}"
pick_python
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  die "PyTorch is missing for $PYTHON: apt-get install python3-torch"
fi
for b in $BATCHES; do
  [[ "$b" =~ ^[1-9][0-9]*$ ]] && (( 4096 % b == 0 )) || die "batch size '$b' must be a positive divisor of 4096"
done
positive "$ROUNDS" || die "ROUNDS must be a positive integer"

build_benchmarks 2 train_step_bench
bench="$BUILD_DIR/bench/train_step_bench"
[[ -x "$bench" ]] || die "$bench was not built (is F2D2N_BUILD_BENCH ON in $BUILD_DIR?)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

batch_regex="$(echo $BATCHES | tr ' ' '|')"
batch_args=()
for b in $BATCHES; do batch_args+=(--batch "$b"); done
echo "# $ROUNDS rounds, each: $bench (BM_cnn_step, BM_conv_layer, BM_conv_gemms), then" \
  "bench/compare/pytorch_cnn.py (NCHW and channels_last); batch $BATCHES, ${MIN_TIME} CPU seconds each"
echo "# f2d2n's kernel backend: $("$bench" --backend)"
for (( r = 1; r <= ROUNDS; ++r )); do
  "$bench" --benchmark_filter="^BM_(cnn_step/($batch_regex)|conv_layer/layer:[12]/batch:64|conv_gemms/layer:[12]/batch:64)\$" \
    --benchmark_min_time="$MIN_TIME" \
    --benchmark_out="$tmp/f2d2n.$r.json" --benchmark_out_format=json >"$tmp/f2d2n.log" 2>&1 ||
    { cat "$tmp/f2d2n.log" >&2; die "$bench failed"; }
  "$PYTHON" bench/compare/pytorch_cnn.py "${batch_args[@]}" --threads 1 --min-time "$MIN_TIME" --repetitions 1 \
    >"$tmp/pytorch.$r.txt" 2>"$tmp/pytorch.log" ||
    { cat "$tmp/pytorch.log" >&2; die "bench/compare/pytorch_cnn.py failed"; }
  if (( r == 1 )); then grep '^#' "$tmp/pytorch.1.txt" || true; fi
done

"$PYTHON" - "$tmp" "$ROUNDS" $BATCHES <<'PY'
import json, re, statistics, sys

tmp, rounds, batches = sys.argv[1], int(sys.argv[2]), [int(b) for b in sys.argv[3:]]
step = {b: [] for b in batches}
torch_ = {(layout, b): [] for layout in ("nchw", "channels_last") for b in batches}
layer = {1: [], 2: []}
gemms = {1: [], 2: []}
for r in range(1, rounds + 1):
    for run in json.load(open(f"{tmp}/f2d2n.{r}.json"))["benchmarks"]:
        parts = run["run_name"].split("/")
        if parts[0] == "BM_cnn_step":
            step[int(parts[1])].append(run["samples/s"])
        elif parts[0] in ("BM_conv_layer", "BM_conv_gemms"):
            which = int(parts[1].split(":")[1])
            (layer if parts[0] == "BM_conv_layer" else gemms)[which].append(run["GFLOP/s"])
    for line in open(f"{tmp}/pytorch.{r}.txt"):
        m = re.match(r"pytorch_cnn layout=(\S+) batch=(\d+) .* samples/s=([0-9.]+)", line)
        if m:
            torch_[(m.group(1), int(m.group(2)))].append(float(m.group(3)))

med = statistics.median
print(f"\n# medians over {rounds} round(s); ratios are medians of the per-round ratios")
print(f"{'batch':>5}  {'f2d2n samples/s':>15}  {'PyTorch NCHW':>12}  {'PyTorch NHWC':>12}  {'vs NCHW':>8}  {'vs NHWC':>8}")
for b in batches:
    n, c = torch_[("nchw", b)], torch_[("channels_last", b)]
    if not (len(step[b]) == len(n) == len(c) == rounds):
        sys.exit(f"cnn_vs_pytorch.sh: missing results for batch {b}")
    print(f"{b:>5}  {med(step[b]):>15.0f}  {med(n):>12.0f}  {med(c):>12.0f}  "
          f"{med(s / t for s, t in zip(step[b], n)):>7.2f}x  {med(s / t for s, t in zip(step[b], c)):>7.2f}x")
print(f"\n{'conv layer (batch 64)':>22}  {'layer GFLOP/s':>13}  {'GEMMs GFLOP/s':>13}  {'layer/GEMMs':>11}")
for which, name in ((1, "1 -> 16, 28 x 28"), (2, "16 -> 32, 14 x 14")):
    if not (len(layer[which]) == len(gemms[which]) == rounds):
        sys.exit(f"cnn_vs_pytorch.sh: missing results for conv layer {which}")
    print(f"{name:>22}  {med(layer[which]):>13.0f}  {med(gemms[which]):>13.0f}  "
          f"{med(l / g for l, g in zip(layer[which], gemms[which])):>11.2f}")
PY
