#!/usr/bin/env bash
# bench/compare/ddp_vs_f2d2n.sh: data-parallel training of the 784-256-128-10 MLP on 2 processes,
# f2d2n's DP2 over TCP, over shared memory (and over MPI where Open MPI is installed) against
# PyTorch DistributedDataParallel over gloo, side by side on this machine; also f2d2n's serial
# trainer step, for DP2's scaling efficiency. Prints samples/s of
# each, the ratio f2d2n / DDP, and whether the targets are met.
#
#   bench/compare/ddp_vs_f2d2n.sh                          (from the repository root)
#   BUILD_DIR=/tmp/ddp-build BATCHES="64 128 256" ROUNDS=3 bench/compare/ddp_vs_f2d2n.sh
#
# Three sides, all float32, the same MLP (ReLU, softmax cross-entropy: mean over the global batch),
# SGD(lr 0.01, momentum 0.9), the same synthetic pool of 4096 samples bit for bit (that of
# bench/train_step_bench.cpp and bench/compare/pytorch_mlp.py), global batch B, step s on samples
# [s*B, s*B + B) of the pool; every process runs one compute thread (OMP_NUM_THREADS=1 and
# torch.set_num_threads(1) for PyTorch; Eigen in f2d2n is single-threaded):
#   f2d2n DP2    $BUILD_DIR/bench/ddp_bench under $BUILD_DIR/tools/f2d2n_launch -n 2 with
#                F2D2N_TRANSPORT=tcp: distributed_network<distribute<mlp, data_parallel<2>>> over
#                tcp_transport on loopback;
#                each unit computes B/2 rows, one ring all-reduce of the gradients per step, then
#                optimizer<float, sgd>::step (the loop of f2d2n::trainer::fit; subnormals flushed)
#   DDP          bench/compare/pytorch_ddp.py: 2 processes (torch.multiprocessing), gloo on
#                loopback, DistributedDataParallel(nn.Sequential(...)), each rank B/2 rows
#   f2d2n serial $BUILD_DIR/bench/ddp_bench --serial: network<mlp>, one process, one thread, all B rows
#   f2d2n shm    the same DP2 with F2D2N_TRANSPORT=shm: f2d2n's shared-memory transport, what
#                f2d2n_launch uses by default between units of one host
#   f2d2n MPI    the same DP2 under mpirun -n 2 (where Open MPI is installed: `mpirun` on PATH and
#                ddp_bench built with f2d2n::mpi): f2d2n's MPI transport, Open MPI's shared memory
# Each side, per batch size, runs REPETITIONS times (a fresh model each time) WARMUP untimed steps
# then STEPS timed ones, by the wall clock, and reports its median run (rank 0's clock; the step's
# all-reduce lines the ranks up). The sides take turns, ROUNDS times, in alternating order (this
# machine's speed drifts by 20 % and more over seconds: turns keep a slow phase from landing on one
# side only). The table gives medians over the rounds; ratios are medians of the per-round ratios.
#
#   ratio       f2d2n DP2 samples/s / DDP samples/s              targets: >= 4 at B = 64, >= 2 at B = 128
#   shm, MPI    f2d2n DP2 over shared memory or MPI / DDP         targets: >= 5 at B = 64, >= 4 at B = 128;
#               and / f2d2n serial                                targets: >= 1.2 at B = 64, >= 1.5 at B = 256
#   speedup     f2d2n DP2 samples/s / f2d2n serial samples/s at the same global batch B
#   efficiency  speedup / 2: DP2's scaling efficiency against f2d2n's own serial trainer (1.0: two
#               processes train twice as many samples per second as one; the serial side is one
#               process, one thread, with the whole batch B)
#
# Wall-clock rates, not CPU time: the two processes of a data-parallel side wait for each other,
# and that waiting is part of what is compared. So a busy machine hurts the 2-process sides (which
# need both cores) more than the serial one: on a 2-core machine shared with other work, read the
# efficiency as a lower bound, and compare DP2 with DDP only within one run (both suffer alike).
#
# Environment:
#   BUILD_DIR    f2d2n build directory (default build). Reused when configured; otherwise configured
#                here in Release with only the benchmarks (tests and examples OFF).
#   BATCHES      global batch sizes (default "64 128 256"); each even and a divisor of 4096
#   STEPS        timed steps per run (default 480); WARMUP untimed steps first (default 32);
#                WARMUP + STEPS <= 512 (one model never trains into the subnormal trap)
#   REPETITIONS  runs per side, batch size and round; each side reports its median (default 3)
#   ROUNDS       turns each side takes (default 3)
#   RUN_TIMEOUT  seconds one run of one side may take before it is killed (default 300)
#   BUILD_JOBS   parallel jobs of the build (default 2)
#   PYTHON       the Python that has Debian's python3-torch (default /usr/bin/python3)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
compare_init ddp_vs_f2d2n.sh

BUILD_DIR="${BUILD_DIR:-build}"
BATCHES="${BATCHES:-64 128 256}"
STEPS="${STEPS:-480}"
WARMUP="${WARMUP:-32}"
REPETITIONS="${REPETITIONS:-3}"
ROUNDS="${ROUNDS:-3}"
RUN_TIMEOUT="${RUN_TIMEOUT:-300}"
BUILD_JOBS="${BUILD_JOBS:-2}"
pick_python
cores="$(getconf _NPROCESSORS_ONLN)"  # not nproc: it answers OMP_NUM_THREADS once that is set
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

# --- PyTorch first: no point building when it cannot run ---
"$PYTHON" -c "import torch" >/dev/null 2>&1 || die "PyTorch is missing for $PYTHON: apt-get install python3-torch"
"$PYTHON" -c "import torch.distributed as d; import sys; sys.exit(0 if d.is_available() else 1)" >/dev/null 2>&1 ||
  die "$PYTHON's PyTorch was built without torch.distributed: there is no DDP to compare with"
"$PYTHON" -c "import torch.distributed as d; import sys; sys.exit(0 if d.is_gloo_available() else 1)" >/dev/null 2>&1 ||
  die "$PYTHON's torch.distributed has no gloo backend: there is no DDP (gloo) to compare with"
for b in $BATCHES; do
  positive "$b" && (( b % 2 == 0 && 4096 % b == 0 )) || die "global batch size '$b' must be even and divide 4096"
done
for v in STEPS WARMUP REPETITIONS ROUNDS RUN_TIMEOUT BUILD_JOBS; do positive "${!v}" || die "$v must be a positive integer"; done
(( WARMUP + STEPS <= 512 )) || die "WARMUP + STEPS must be at most 512"

# --- f2d2n's program and the launcher ---
build_benchmarks "$BUILD_JOBS" f2d2n_launch ddp_bench
launch="$BUILD_DIR/tools/f2d2n_launch"
bench="$BUILD_DIR/bench/ddp_bench"
for x in "$launch" "$bench"; do [[ -x "$x" ]] || die "$x was not built (is F2D2N_BUILD_BENCH ON in $BUILD_DIR?)"; done
with_mpi=0
if command -v mpirun >/dev/null 2>&1 && ldd "$bench" | grep -q libmpi; then with_mpi=1; fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

f2d2n_args=(--batches "$(echo $BATCHES | tr ' ' ',')" --steps "$STEPS" --warmup "$WARMUP" --repetitions "$REPETITIONS")
py_args=(--steps "$STEPS" --warmup "$WARMUP" --repetitions "$REPETITIONS")
for b in $BATCHES; do py_args+=(--batch "$b"); done

# run SIDE ROUND command...: keeps the result lines (rank 0's, without the launcher's "[0] ").
run() {
  local side="$1" r="$2"
  shift 2
  run_retrying "$side" "$tmp/log" "$@"
  if (( r == 1 )); then sed -n 's/^\(\[0\] \)\{0,1\}#/#/p' "$tmp/log"; fi
  sed -n 's/^\(\[0\] \)\{0,1\}\(ddp_bench\|pytorch_ddp\) /\2 /p' "$tmp/log" | sed "s/^/$side r=$r /" >>"$tmp/results"
}

echo "# machine: $cores cores ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), shared: other work" \
  "may run meanwhile; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
if (( cores <= 2 )); then
  echo "# only $cores cores: the 2 processes of DP2 and of DDP (plus f2d2n's io threads and gloo's threads) share" \
    "them with each other and with anything else running; the serial side needs one"
fi
echo "# $ROUNDS round(s), each: f2d2n DP2 ($bench under $launch -n 2, over TCP and over shared memory), PyTorch DDP" \
  "(bench/compare/pytorch_ddp.py), f2d2n serial ($bench --serial), in alternating order; global batch $BATCHES; $REPETITIONS run(s) of" \
  "$WARMUP + $STEPS steps each"
: >"$tmp/results"
for (( r = 1; r <= ROUNDS; ++r )); do
  sides=(dp2 ddp serial shm)
  (( r % 2 == 0 )) && sides=(shm serial ddp dp2)
  (( with_mpi )) && sides+=(mpi)
  for side in "${sides[@]}"; do
    case "$side" in
      dp2) F2D2N_TRANSPORT=tcp run f2d2n-dp2 "$r" "$launch" -n 2 --timeout "$RUN_TIMEOUT" -- "$bench" "${f2d2n_args[@]}" ;;
      shm) F2D2N_TRANSPORT=shm run f2d2n-shm "$r" "$launch" -n 2 --timeout "$RUN_TIMEOUT" -- "$bench" "${f2d2n_args[@]}" ;;
      ddp) run pytorch-ddp "$r" "$PYTHON" bench/compare/pytorch_ddp.py "${py_args[@]}" ;;
      serial) run f2d2n-serial "$r" "$bench" --serial "${f2d2n_args[@]}" ;;
      mpi) run f2d2n-mpi "$r" timeout "$RUN_TIMEOUT" mpirun --allow-run-as-root --oversubscribe -n 2 "$bench" "${f2d2n_args[@]}" ;;
    esac
  done
done
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- the table ---
"$PYTHON" - "$tmp/results" "$ROUNDS" $BATCHES <<'PY'
import statistics, sys

path, rounds, batches = sys.argv[1], int(sys.argv[2]), [int(b) for b in sys.argv[3:]]
res = {}  # (side, round, batch) -> {field: value}
for line in open(path):
    words = line.split()
    side, r = words[0], int(words[1][2:])
    f = dict(w.split("=", 1) for w in words[3:])
    res[side, r, int(f["batch"])] = {k: float(v) for k, v in f.items() if k not in ("mode",)}
med = statistics.median
sides = ("f2d2n-dp2", "pytorch-ddp", "f2d2n-serial", "f2d2n-shm") + (
    ("f2d2n-mpi",) if any(k[0] == "f2d2n-mpi" for k in res) else ())
for b in batches:
    for s in sides:
        for r in range(1, rounds + 1):
            if (s, r, b) not in res:
                sys.exit(f"ddp_vs_f2d2n.sh: missing result of {s} for batch {b}, round {r}")

def col(side, b, field="samples/s"):
    return [res[side, r, b][field] for r in range(1, rounds + 1)]

print(f"\n# samples/s by the wall clock, medians over {rounds} round(s); ratios are medians of per-round ratios")
print("# ratio = f2d2n DP2 / PyTorch DDP; speedup = f2d2n DP2 / f2d2n serial (same global batch);"
      " efficiency = speedup / 2")
print(f"{'batch':>5}  {'f2d2n DP2':>10}  {'PyTorch DDP':>11}  {'ratio':>7}  {'f2d2n serial':>12}  "
      f"{'speedup':>7}  {'efficiency':>10}")
targets = {64: 4.0, 128: 2.0}
verdicts = []
for b in batches:
    dp2, ddp, ser = col("f2d2n-dp2", b), col("pytorch-ddp", b), col("f2d2n-serial", b)
    ratio = med(x / y for x, y in zip(dp2, ddp))
    speedup = med(x / y for x, y in zip(dp2, ser))
    print(f"{b:>5}  {med(dp2):>10.0f}  {med(ddp):>11.0f}  {ratio:>6.2f}x  {med(ser):>12.0f}  "
          f"{speedup:>6.2f}x  {speedup / 2:>10.2f}")
    rounds_text = " ".join(f"{x / y:.2f}" for x, y in zip(dp2, ddp))
    if b in targets:
        verdicts.append(f"# target f2d2n DP2 >= {targets[b]:.0f}x DDP at global batch {b}: "
                        f"{'met' if ratio >= targets[b] else 'NOT met'} ({ratio:.2f}x; rounds: {rounds_text})")
    else:
        verdicts.append(f"# global batch {b}: f2d2n DP2 / DDP per round: {rounds_text}")

print("\n# where a step's time goes (ms, medians over rounds of each run's median step; rank 0):")
print("#   grad = compute_gradients (f2d2n) / zero_grad + forward + backward (DDP): the all-reduce is inside;")
print("#   update = optimizer step; allreduce = a lone all-reduce of the 235146 gradients, units lined up first")
print(f"{'batch':>5}  {'side':<12}  {'step':>7}  {'grad':>7}  {'update':>7}  {'allreduce':>9}")
for b in batches:
    for s in sides:
        cells = [f"{med(col(s, b, k)):>7.3f}" for k in ("step_ms", "grad_ms", "update_ms")]
        ar = f"{med(col(s, b, 'allreduce_ms')):>9.3f}" if "allreduce_ms" in res[s, 1, b] else f"{'-':>9}"
        print(f"{b:>5}  {s:<12}  {'  '.join(cells)}  {ar}")
print()
ddp_targets, serial_targets = {64: 5.0, 128: 4.0}, {64: 1.2, 256: 1.5}
for s, words in (("f2d2n-shm", "shared memory (f2d2n_launch's default)"), ("f2d2n-mpi", "its MPI transport (mpirun -n 2)")):
    if s not in sides:
        continue
    print(f"\n# f2d2n DP2 over {words}")
    print(f"{'batch':>5}  {s:>10}  {'/ DDP':>9}  {'/ serial':>9}")
    for b in batches:
        dp, ddp, ser = col(s, b), col("pytorch-ddp", b), col("f2d2n-serial", b)
        ratio, speedup = med(x / y for x, y in zip(dp, ddp)), med(x / y for x, y in zip(dp, ser))
        print(f"{b:>5}  {med(dp):>10.0f}  {ratio:>8.2f}x  {speedup:>8.2f}x")
        if b in ddp_targets:
            verdicts.append(f"# target {s} DP2 >= {ddp_targets[b]:.0f}x DDP at global batch {b}: "
                            f"{'met' if ratio >= ddp_targets[b] else 'NOT met'} ({ratio:.2f}x)")
        if b in serial_targets:
            verdicts.append(f"# target {s} DP2 >= {serial_targets[b]}x f2d2n serial at batch {b}: "
                            f"{'met' if speedup >= serial_targets[b] else 'NOT met'} ({speedup:.2f}x)")
print("\n".join(verdicts))
PY
