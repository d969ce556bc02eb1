#!/usr/bin/python3
"""PyTorch's side of bench/compare/ddp_vs_f2d2n.sh: DistributedDataParallel training steps of the MLP.

Two processes on this machine (torch.multiprocessing.spawn), each with one thread
(OMP_NUM_THREADS=1, torch.set_num_threads(1), torch.set_num_interop_threads(1)), joined by
torch.distributed's gloo backend on loopback (init_method env://, MASTER_ADDR 127.0.0.1, a free
port, GLOO_SOCKET_IFNAME=lo). The same MLP, loss, optimizer and data as bench/ddp_bench.cpp:
  nn.Linear(784, 256), ReLU, nn.Linear(256, 128), ReLU, nn.Linear(128, 10), wrapped in
  DistributedDataParallel (default buckets: the MLP's 0.94 MB of gradients fit in one 25 MB
  bucket, all-reduced while the backward pass runs); CrossEntropyLoss (mean over the rank's rows;
  DDP averages the gradients over the ranks, so with equal halves this is the global batch's mean);
  SGD(lr=0.01, momentum=0.9); float32.
A step at global batch B: rank r takes rows [s*B + r*B/2, s*B + (r+1)*B/2) of the synthetic pool of
4096 samples (bench/compare/pytorch_mlp.py's make_pool(), bit for bit the pool of
bench/train_step_bench.cpp and bench/ddp_bench.cpp), zero_grad(set_to_none=True), forward, loss,
backward, optimizer step.

For each global batch size, `--repetitions` runs, each: a fresh model (torch.manual_seed(1); DDP
broadcasts rank 0's parameters) and optimizer, a barrier, `--warmup` untimed steps, then `--steps`
timed ones by the wall clock (time.perf_counter; the clock starts when the last warm-up step returns,
as in ddp_bench). warmup + steps is at most 512: one model never trains long enough for the
momentum of dead ReLU units to decay into subnormals (see pytorch_mlp.py's "Training state").
Rank 0 prints the median run, one line per batch size:

  pytorch_ddp batch=<global B> steps=<n> seconds=<wall> samples/s=<n B / seconds> step_ms=<median step>
    grad_ms=<median zero_grad + forward + backward, DDP's all-reduce included> update_ms=<median opt.step>
    allreduce_ms=<median of a lone dist.all_reduce of the MLP's 235146 float32 gradients>

(one line). Lines starting with '#' are comments.

  /usr/bin/python3 bench/compare/pytorch_ddp.py --batch 64 --batch 128
"""
import argparse
import os
import socket
import statistics
import sys
import time

# One thread per process, before torch is imported here and in the spawned processes.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")

sys.dont_write_bytecode = True  # no __pycache__ in the source tree from the import below
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_mlp  # noqa: E402  (make_pool, blas_libraries, uses_reference_blas)

try:
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel
except ImportError as e:
    sys.exit(f"pytorch_ddp.py: PyTorch is missing or incomplete ({e}): apt-get install python3-torch")

WORLD_SIZE = 2
STEPS_PER_MODEL = 512


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on now (gloo's store binds it just after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(rank, batch, x_pool, y_pool, args):
    """One run at global batch `batch`: (seconds, step_ms list, grad_ms list, update_ms list)."""
    half = batch // WORLD_SIZE
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    shards = []
    for start in range(0, pytorch_mlp.POOL_SAMPLES, batch):
        first = start + rank * half
        shards.append((x_pool[first : first + half], y_pool[first : first + half]))
    step_ms, grad_ms, update_ms = [], [], []
    dist.barrier()
    begin = None
    loss = None
    for s in range(args.warmup + args.steps):
        if s == args.warmup:
            begin = time.perf_counter()
        x, y = shards[s % len(shards)]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(ddp(x), y)
        loss.backward()
        t1 = time.perf_counter()
        opt.step()
        t2 = time.perf_counter()
        if s >= args.warmup:
            step_ms.append((t2 - t0) * 1e3)
            grad_ms.append((t1 - t0) * 1e3)
            update_ms.append((t2 - t1) * 1e3)
    seconds = time.perf_counter() - begin
    if not torch.isfinite(loss).item():
        raise RuntimeError("the loss is not finite: the steps measured are not sane ones")
    return seconds, step_ms, grad_ms, update_ms


def lone_allreduce_ms(repetitions=30):
    """Median ms of dist.all_reduce over the MLP's 235146 float32 values, the units lined up first."""
    buf = torch.full((235146,), 1e-3)
    times = []
    for _ in range(repetitions):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(buf)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def worker(rank, port, args):
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=WORLD_SIZE)
    try:
        x_pool, y_pool = pytorch_mlp.make_pool()
        if rank == 0:
            blas = pytorch_mlp.blas_libraries()
            print(
                f"# torch {torch.__version__}, DistributedDataParallel over gloo (loopback), {WORLD_SIZE} processes, "
                f"{torch.get_num_threads()} thread each, BLAS: {', '.join(blas) or 'none found'}; "
                f"warmup {args.warmup}, {args.steps} timed steps, {args.repetitions} run(s) per batch size",
                flush=True,
            )
        for batch in args.batch:
            runs = [measure(rank, batch, x_pool, y_pool, args) for _ in range(args.repetitions)]
            runs.sort(key=lambda run: -run[0])  # slowest first: the middle one is the median rate
            seconds, step_ms, grad_ms, update_ms = runs[len(runs) // 2]
            ar = lone_allreduce_ms()
            if rank == 0:
                med = statistics.median
                print(
                    f"pytorch_ddp batch={batch} steps={args.steps} seconds={seconds:.6f} "
                    f"samples/s={args.steps * batch / seconds:.1f} step_ms={med(step_ms):.4f} "
                    f"grad_ms={med(grad_ms):.4f} update_ms={med(update_ms):.4f} allreduce_ms={ar:.4f}",
                    flush=True,
                )
        dist.barrier()
    finally:
        dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--batch", type=int, action="append", help="global batch size (repeatable; default 64 and 128)")
    p.add_argument("--steps", type=int, default=480, help="timed steps per run (default 480)")
    p.add_argument("--warmup", type=int, default=32, help="untimed steps first (default 32)")
    p.add_argument("--repetitions", type=int, default=3, help="runs per batch size; the median is printed (default 3)")
    p.add_argument("--allow-reference-blas", action="store_true", help="run even on netlib's reference BLAS")
    args = p.parse_args()
    args.batch = args.batch or [64, 128]
    if args.steps < 1 or args.warmup < 1 or args.repetitions < 1:
        p.error("--steps, --warmup and --repetitions must be at least 1")
    if args.steps + args.warmup > STEPS_PER_MODEL:
        p.error(f"--warmup + --steps must be at most {STEPS_PER_MODEL} (one model, no subnormal trap)")
    for b in args.batch:
        if b < WORLD_SIZE or b % WORLD_SIZE or pytorch_mlp.POOL_SAMPLES % b:
            p.error(f"global batch {b} must be even and divide the pool's {pytorch_mlp.POOL_SAMPLES} samples")
    if not dist.is_available():
        sys.exit("pytorch_ddp.py: this PyTorch was built without torch.distributed: no DDP to compare with")
    if not dist.is_gloo_available():
        sys.exit("pytorch_ddp.py: this PyTorch's torch.distributed has no gloo backend: no DDP to compare with")
    blas = pytorch_mlp.blas_libraries()
    if pytorch_mlp.uses_reference_blas(blas) and not args.allow_reference_blas:
        sys.exit(
            "pytorch_ddp.py: PyTorch would use netlib's reference BLAS (" + ", ".join(blas) + "), about 10x slower "
            "than an optimized one: the comparison would mean nothing. apt-get install libopenblas0-openmp "
            "(or pass --allow-reference-blas)"
        )
    mp.spawn(worker, args=(free_port(), args), nprocs=WORLD_SIZE, join=True)


if __name__ == "__main__":
    main()
