#!/usr/bin/python3
"""PyTorch's side of bench/compare/cnn_vs_pytorch.sh: training steps of the CNN.

The same CNN, loss, optimizer and data as bench/train_step_bench.cpp's BM_cnn_step:
  Conv2d(1, 16, 5, padding=2), ReLU, MaxPool2d(2), Conv2d(16, 32, 5, padding=2), ReLU, MaxPool2d(2),
  Flatten, Linear(1568, 64), ReLU, Linear(64, 10), CrossEntropyLoss (mean over the batch),
  SGD(lr=0.01, momentum=0.9); float32; one process, one thread.
f2d2n stores images channels-last (NHWC); PyTorch's default is NCHW. --layout picks PyTorch's:
nchw (the default tensors), or channels_last (model and inputs converted with
torch.channels_last, which makes PyTorch's oneDNN convolutions much faster here). The flattened
features come in another order (C, H, W vs H, W, C): a permutation of the first dense layer's
weights, the same arithmetic.

Data, training state and timing as pytorch_mlp.py (whose helpers this script uses): the same
synthetic pool of 4096 samples as f2d2n's, reshaped to 1 x 28 x 28 images. One line per batch:
  pytorch_cnn layout=channels_last batch=64 threads=1 steps=... seconds=... samples/s=...

  /usr/bin/python3 bench/compare/pytorch_cnn.py --batch 64 --layout nchw --layout channels_last
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_mlp as common  # noqa: E402  (the pool, the BLAS check, the timing loop)

try:
    import torch
    from torch import nn
except ImportError:
    sys.exit("pytorch_cnn.py: PyTorch is missing: apt-get install python3-torch")


def cnn(layout):
    """The CNN, in the memory format of `layout`."""
    model = nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, common.CLASSES),
    )
    return model.to(memory_format=torch.channels_last) if layout == "channels_last" else model


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--batch", type=int, action="append", help="batch size (repeatable; default 64)")
    p.add_argument("--layout", action="append", choices=["nchw", "channels_last"],
                   help="PyTorch's memory format (repeatable; default both)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--min-time", type=float, default=0.5, help="seconds per repetition (default 0.5)")
    p.add_argument("--warmup", type=int, default=8, help="untimed steps first (default 8)")
    p.add_argument("--repetitions", type=int, default=3, help="runs per batch size; the median is printed")
    args = p.parse_args()
    if args.repetitions < 1 or args.threads < 1 or args.min_time <= 0 or args.warmup < 0 or any(
        b < 1 for b in args.batch or []
    ):
        p.error("--batch, --threads and --repetitions must be at least 1 and --min-time positive")
    for batch in args.batch or []:
        if common.POOL_SAMPLES % batch != 0:
            p.error(f"batch {batch} must divide the pool's {common.POOL_SAMPLES} samples")
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    x_flat, y_pool = common.make_pool()
    images = x_flat.reshape(common.POOL_SAMPLES, 1, 28, 28)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"mkldnn {torch.backends.mkldnn.is_available()}, synthetic pool of {common.POOL_SAMPLES}", flush=True)
    for layout in args.layout or ["nchw", "channels_last"]:
        x = images.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else images.contiguous()
        for batch in args.batch or [64]:
            done, elapsed, rate = common.measure(batch, x, y_pool, args.min_time, args.warmup, args.repetitions,
                                                 make_model=lambda: cnn(layout), name="pytorch_cnn.py")
            print(f"pytorch_cnn layout={layout} batch={batch} threads={args.threads} steps={done} "
                  f"seconds={elapsed:.3f} samples/s={rate:.1f}", flush=True)


if __name__ == "__main__":
    main()
