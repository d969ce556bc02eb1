#!/usr/bin/python3
"""PyTorch's side of bench/compare/mlp_vs_pytorch.sh: training steps of the 784-256-128-10 MLP.

The same MLP, loss, optimizer and data as bench/train_step_bench.cpp's BM_train_step:
  nn.Linear(784, 256), ReLU, nn.Linear(256, 128), ReLU, nn.Linear(128, 10), CrossEntropyLoss
  (mean over the batch), SGD(lr=0.01, momentum=0.9); float32; one process, one thread
  (torch.set_num_threads(1), torch.set_num_interop_threads(1)).
A step is zero_grad(set_to_none=True), forward, loss, backward, optimizer step.

Data: synthetic, not Fashion-MNIST. Both sides build the same pool of 4096 samples bit for bit
from f2d2n's counter-based generator (f2d2n::random_bits in include/f2d2n/core/random.hpp,
reimplemented here with numpy): pixel k of the row-major 4096 x 784 pool is
(random_bits(42, 0, k) >> 40) / 2^24, uniform in [0, 1) like scaled pixels; label i is
random_bits(42, 1, i) % 10. Step s trains on samples [s*B, s*B + B) of the pool, cyclically, on
both sides. This keeps the comparison fair (the same bytes go through both) and simple (no file
reading, nothing timed but the steps); real images would not change the arithmetic (inputs in
[0, 1), no subnormals among them). A known-answer check makes sure the pool is f2d2n's.

PyTorch's Linear layers call the system BLAS (Debian's python3-torch: libblas.so.3, an
alternative). With only the netlib reference BLAS installed (libblas3), PyTorch is about 10x
slower than with OpenBLAS and the comparison means nothing: the script refuses to run then
(apt-get install libopenblas0-openmp), unless --allow-reference-blas is given.

Training state: as in train_step_bench.cpp, the model and the optimizer start afresh (same seed,
untimed) every 512 steps. Longer runs on this task would measure something else: ReLU units die,
their momentum decays into subnormal floats and stays there (0.9 * v rounds back to v), and every
update then takes a microcode assist; both PyTorch and f2d2n slow down by 2x and more.

Timing follows Google Benchmark's defaults: CPU time of the process (time.process_time, like
the benchmark's CPU-time rates, so time spent descheduled on a shared machine counts on neither
side; every thread PyTorch might start counts against it). After `--warmup` untimed steps, a
repetition starts from a fresh model and runs steps until at least `--min-time` CPU seconds have
passed; the median of `--repetitions` is printed, one line per batch size:
  pytorch_mlp batch=64 threads=1 steps=... seconds=... samples/s=...

  /usr/bin/python3 bench/compare/pytorch_mlp.py --batch 64 --batch 256
"""
import argparse
import os
import sys
import time

import numpy as np

try:
    import torch
    from torch import nn
except ImportError:
    sys.exit("pytorch_mlp.py: PyTorch is missing: apt-get install python3-torch")

POOL_SAMPLES = 4096
FEATURES = 784
CLASSES = 10
DATA_SEED = 42
STEPS_PER_MODEL = 512  # then a fresh model and optimizer, untimed (see "Training state" above)
CHUNK = 8  # steps timed at a time; divides STEPS_PER_MODEL

_U64 = np.uint64


def _mix64(x):
    """SplitMix64's finaliser over a uint64 array (f2d2n::mix64); uint64 arithmetic wraps."""
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def random_bits(seed, stream, index):
    """f2d2n::random_bits(seed, stream, index) for a uint64 array of indices."""
    key = _mix64(np.array([seed], dtype=np.uint64) ^ _mix64(np.array([stream], dtype=np.uint64)))
    return _mix64(key ^ index)


def make_pool():
    """The same 4096 samples as bench/train_step_bench.cpp's pool(): (x float32 [4096, 784], labels int64)."""
    with np.errstate(over="ignore"):
        pixel_bits = random_bits(DATA_SEED, 0, np.arange(POOL_SAMPLES * FEATURES, dtype=np.uint64)) >> _U64(40)
        label_bits = random_bits(DATA_SEED, 1, np.arange(POOL_SAMPLES, dtype=np.uint64))
    # Known answers from the C++ side (f2d2n::random_bits(42, 0, k) >> 40, random_bits(42, 1, i) % 10).
    expected_pixels = {0: 11824837, 1: 12538272, 783: 2024365, 3211263: 7506473}
    expected_labels = {0: 1, 1: 8, 2: 5, 4095: 7}
    labels = (label_bits % _U64(CLASSES)).astype(np.int64)
    if any(int(pixel_bits[k]) != v for k, v in expected_pixels.items()) or any(
        int(labels[i]) != v for i, v in expected_labels.items()
    ):
        sys.exit("pytorch_mlp.py: the synthetic pool differs from f2d2n's (random_bits reimplementation is wrong)")
    x = (pixel_bits.astype(np.float32) * np.float32(2.0**-24)).reshape(POOL_SAMPLES, FEATURES)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(labels)


def blas_libraries():
    """The BLAS/LAPACK shared objects this process has mapped (after importing torch)."""
    libs = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and any(t in os.path.basename(fields[-1]) for t in ("blas", "mkl", "blis")):
                libs.add(fields[-1])
    return sorted(libs)


def uses_reference_blas(libs):
    """True when the BLAS is netlib's reference one (Debian: /usr/lib/<triplet>/blas/libblas.so.3)."""
    optimized = any(t in os.path.basename(lib) or t in lib for lib in libs for t in ("openblas", "mkl", "blis", "atlas"))
    return not optimized and any("/blas/" in lib for lib in libs)


def mlp():
    """The 784-256-128-10 MLP."""
    return nn.Sequential(nn.Linear(FEATURES, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, CLASSES))


def measure(batch, x_pool, y_pool, min_time, warmup, repetitions, make_model=mlp, name="pytorch_mlp.py"):
    """(steps, seconds, samples/s) of the median of `repetitions` runs of at least `min_time` seconds each."""
    batches = [(x_pool[s : s + batch], y_pool[s : s + batch]) for s in range(0, POOL_SAMPLES, batch)]
    state = {}

    def reset():
        """A fresh model and optimizer (same seed every time), back at the pool's first batch."""
        torch.manual_seed(1)
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        state.update(model=model, opt=opt, next=0, steps=0)

    loss_fn = nn.CrossEntropyLoss()

    def steps(n):
        model, opt, i = state["model"], state["opt"], state["next"]
        for _ in range(n):
            x, y = batches[i]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            i = (i + 1) % len(batches)
        state["next"] = i
        state["steps"] += n
        state["loss"] = loss

    reset()
    steps(warmup)
    runs = []
    for _ in range(repetitions):
        reset()
        done, elapsed = 0, 0.0
        while elapsed < min_time:
            if state["steps"] == STEPS_PER_MODEL:
                reset()  # untimed, as in train_step_bench.cpp
            start = time.process_time()
            steps(CHUNK)
            elapsed += time.process_time() - start
            done += CHUNK
        runs.append((done, elapsed))
        if not torch.isfinite(state["loss"]).item():
            sys.exit(f"{name}: the loss is not finite: the steps measured are not sane ones")
    runs.sort(key=lambda run: run[0] / run[1])
    done, elapsed = runs[len(runs) // 2]  # the median run (the upper one of the middle two when even)
    return done, elapsed, done * batch / elapsed


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--batch", type=int, action="append", help="batch size (repeatable; default 64)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--min-time", type=float, default=0.5, help="seconds per repetition (default 0.5)")
    p.add_argument("--warmup", type=int, default=16, help="untimed steps first (default 16)")
    p.add_argument("--repetitions", type=int, default=3, help="runs per batch size; the median is printed")
    p.add_argument("--allow-reference-blas", action="store_true", help="run even on netlib's reference BLAS")
    args = p.parse_args()
    if args.repetitions < 1 or args.threads < 1 or args.min_time <= 0 or args.warmup < 0 or any(b < 1 for b in args.batch or []):
        p.error("--batch, --threads and --repetitions must be at least 1 and --min-time positive")
    for batch in args.batch or []:
        if POOL_SAMPLES % batch != 0:
            p.error(f"batch {batch} must divide the pool's {POOL_SAMPLES} samples")
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    blas = blas_libraries()
    if uses_reference_blas(blas) and not args.allow_reference_blas:
        sys.exit(
            "pytorch_mlp.py: PyTorch would use netlib's reference BLAS (" + ", ".join(blas) + "), about 10x slower than "
            "an optimized one: the comparison would mean nothing. apt-get install libopenblas0-openmp "
            "(or pass --allow-reference-blas)"
        )
    x_pool, y_pool = make_pool()
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), BLAS: {', '.join(blas) or 'none found'}, "
        f"synthetic pool of {POOL_SAMPLES}",
        flush=True,
    )
    for batch in args.batch or [64]:
        done, elapsed, rate = measure(batch, x_pool, y_pool, args.min_time, args.warmup, args.repetitions)
        print(f"pytorch_mlp batch={batch} threads={args.threads} steps={done} seconds={elapsed:.3f} samples/s={rate:.1f}",
              flush=True)


if __name__ == "__main__":
    main()
