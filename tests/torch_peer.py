#!/usr/bin/env python3
"""The Python side of the safetensors peer test: f2d2n and PyTorch exchange the 784-256-128-10
ReLU MLP through safetensors files, both ways, on Fashion-MNIST (ctest -R safetensors_peer).

  --direction export   f2d2n trains briefly and exports the network (tests/safetensors_peer.cpp);
                       this script loads the file into torch.nn.Sequential(Flatten, Linear(784,256),
                       ReLU, Linear(256,128), ReLU, Linear(128,10)) with load_state_dict, classifies
                       the test set and compares its logits with f2d2n's.
  --direction import   this script builds that model (seeded), writes it as a safetensors file (no
                       f2d2n metadata, as PyTorch writes it) and its logits on the test set; f2d2n
                       loads the file and writes its own logits; they are compared.

Without PyTorch (or with --numpy) the script does the same with numpy alone (and says so): the model is then a set
of numpy arrays with PyTorch's default initialisation bounds and the same forward pass. Without
numpy it fails: the test never passes without checking.

Files exchanged: the .safetensors model, and logits as raw little-endian float32, row-major, one
row of 10 per test sample in the order of t10k-images (no header: 10000 x 10 x 4 bytes).

Agreement: every logit within 1e-5 of the other side's, absolutely or relatively where larger
than 1 (|a - b| <= 1e-5 * max(1, |a|, |b|)), and the same predicted class for every sample, except
where the two largest logits are themselves within that tolerance (a tie in float32 rounding; such
samples are counted and reported, and there are none in practice).
"""

import argparse
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("torch_peer.py: FAILED: numpy is not installed (Debian: apt-get install python3-numpy; "
          "scripts/deps.sh installs it); nothing was checked")
    sys.exit(1)

try:
    import torch
except ImportError:
    torch = None

try:
    import safetensors.numpy as safetensors_numpy  # the reference reader, where installed
except ImportError:
    safetensors_numpy = None

TOLERANCE = 1e-5
SEED = 1234
# f2d2n's layer index -> the index of the same layer in torch.nn.Sequential(Flatten, Linear, ReLU,
# Linear, ReLU, Linear): f2d2n's input<28, 28> stands where Flatten does, so they are the same.
F2D2N_TO_TORCH = {1: 1, 3: 3, 5: 5}
SHAPES = {1: (256, 784), 3: (128, 256), 5: (10, 128)}


def read_idx(directory, stem):
    """An IDX file (gzipped or plain) as a numpy array."""
    path = os.path.join(directory, stem)
    opener = open
    if os.path.exists(path + ".gz"):
        path, opener = path + ".gz", gzip.open
    with opener(path, "rb") as f:
        raw = f.read()
    zero, kind, rank = struct.unpack(">HBB", raw[:4])
    if zero != 0 or kind != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    dims = struct.unpack(f">{rank}I", raw[4:4 + 4 * rank])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


def test_set(directory):
    """The test images as f2d2n normalises them (float(b * (1 / 255.0)), computed in double)."""
    images = read_idx(directory, "t10k-images-idx3-ubyte")
    labels = read_idx(directory, "t10k-labels-idx1-ubyte")
    x = (images.astype(np.float64) * (1.0 / 255.0)).astype(np.float32).reshape(len(images), 784)
    return x, labels.astype(np.int64)


def read_safetensors(path):
    """A safetensors file read with json and numpy alone, checking the layout as the format
    defines it: tensor name -> numpy array, and the metadata."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    data = raw[8 + n:]
    tensors, end = {}, 0
    for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, stop = entry["data_offsets"]
        if begin != end:
            raise ValueError(f"{path}: tensor {name} starts at {begin}, the previous one ends at {end}")
        dtype = {"F32": "<f4", "F64": "<f8"}[entry["dtype"]]
        array = np.frombuffer(data[begin:stop], dtype=dtype).reshape(entry["shape"])
        tensors[name], end = array, stop
    if end != len(data):
        raise ValueError(f"{path}: the tensors take {end} bytes, the data section has {len(data)}")
    return tensors, metadata


def write_safetensors(path, tensors, metadata):
    """A safetensors file written with json and numpy alone (F32), as PyTorch's writer lays it out:
    tensors sorted by name, the header padded with spaces to a multiple of 8."""
    header, chunks, offset = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name], dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        chunks.append(array.tobytes())
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def torch_model():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def to_torch_names(tensors):
    """f2d2n's names ("1.weight") -> the Sequential's ("1.weight": the same here, by F2D2N_TO_TORCH)."""
    out = {}
    for name, array in tensors.items():
        layer, kind = name.split(".")
        out[f"{F2D2N_TO_TORCH[int(layer)]}.{kind}"] = array
    return out


def logits_of(params, x):
    """Logits of the MLP whose parameters are `params` (torch names) on x."""
    if torch is not None:
        model = torch_model()
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()}, strict=True)
        with torch.no_grad():
            return model(torch.from_numpy(x).reshape(-1, 28, 28)).numpy()
    h = x
    for i, layer in enumerate((1, 3, 5)):
        h = h @ params[f"{layer}.weight"].T + params[f"{layer}.bias"]
        if i < 2:
            h = np.maximum(h, np.float32(0))
    return h.astype(np.float32)


def compare(name_a, a, name_b, b, labels):
    """Fails unless the logits agree (see the module's docstring); prints a summary."""
    if a.shape != b.shape:
        print(f"FAILED: logits of shape {a.shape} ({name_a}) and {b.shape} ({name_b})")
        return False
    scale = np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
    err = np.abs(a.astype(np.float64) - b.astype(np.float64)) / scale
    worst = float(err.max())
    pa, pb = a.argmax(axis=1), b.argmax(axis=1)
    top2 = np.sort(a, axis=1)[:, -2:]
    near_tie = (top2[:, 1] - top2[:, 0]) <= TOLERANCE * np.maximum(1.0, np.abs(top2[:, 1]))
    differ = pa != pb
    bad = int((differ & ~near_tie).sum())
    accuracy_a, accuracy_b = float((pa == labels).mean()), float((pb == labels).mean())
    print(f"{len(a)} test samples: largest logit difference {worst:.3g} (scaled; tolerance {TOLERANCE}), "
          f"predictions differ on {int(differ.sum())} ({int((differ & near_tie).sum())} near ties); "
          f"accuracy {accuracy_a:.4f} ({name_a}), {accuracy_b:.4f} ({name_b})")
    ok = worst <= TOLERANCE and bad == 0 and np.isfinite(a).all() and np.isfinite(b).all()
    print("PASSED" if ok else "FAILED")
    return ok


def f2d2n_to_python(args, work, x, labels):
    subprocess.run([args.peer, "export", args.data, work], check=True)
    path = os.path.join(work, "f2d2n_mlp.safetensors")
    tensors, metadata = read_safetensors(path)
    expected = {f"{i}.{k}": (s if k == "weight" else s[:1]) for i, s in SHAPES.items() for k in ("weight", "bias")}
    if {k: tuple(v.shape) for k, v in tensors.items()} != expected or any(v.dtype != np.float32 for v in tensors.values()):
        print(f"FAILED: the file's tensors are {[(k, v.dtype, v.shape) for k, v in tensors.items()]}")
        return False
    for key in ("format", "f2d2n.version", "f2d2n.model", "f2d2n.fingerprint"):
        if key not in metadata:
            print(f"FAILED: the file's metadata has no '{key}'")
            return False
    if safetensors_numpy is not None:  # the reference reader agrees with ours
        reference = safetensors_numpy.load_file(path)
        if reference.keys() != tensors.keys() or any((reference[k] != tensors[k]).any() for k in tensors):
            print("FAILED: the safetensors package reads other tensors")
            return False
    ours = logits_of(to_torch_names(tensors), x)
    theirs = np.fromfile(os.path.join(work, "f2d2n_logits.f32"), dtype="<f4").reshape(-1, 10)
    return compare("PyTorch" if torch is not None else "numpy", ours, "f2d2n", theirs, labels)


def python_to_f2d2n(args, work, x, labels):
    path = os.path.join(work, "python_mlp.safetensors")
    if torch is not None:
        torch.manual_seed(SEED)
        model = torch_model()
        state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    else:
        rng = np.random.default_rng(SEED)
        state = {}
        for layer, (out, inp) in SHAPES.items():
            bound = 1.0 / np.sqrt(inp)  # PyTorch's default bounds for Linear's weight and bias
            state[f"{layer}.weight"] = rng.uniform(-bound, bound, (out, inp)).astype(np.float32)
            state[f"{layer}.bias"] = rng.uniform(-bound, bound, out).astype(np.float32)
    # The file names the tensors as f2d2n does (the Sequential's indices are f2d2n's layer indices).
    from_torch = {v: k for k, v in F2D2N_TO_TORCH.items()}
    tensors = {f"{from_torch[int(k.split('.')[0])]}.{k.split('.')[1]}": v for k, v in state.items()}
    try:
        import safetensors.torch as safetensors_torch
        safetensors_torch.save_file({k: torch.from_numpy(v) for k, v in tensors.items()}, path, {"format": "pt"})
    except ImportError:
        write_safetensors(path, tensors, {"format": "pt"})
    ours = logits_of(state, x)
    subprocess.run([args.peer, "logits", args.data, path, os.path.join(work, "f2d2n_logits.f32")], check=True)
    theirs = np.fromfile(os.path.join(work, "f2d2n_logits.f32"), dtype="<f4").reshape(-1, 10)
    return compare("PyTorch" if torch is not None else "numpy", ours, "f2d2n", theirs, labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--direction", choices=("export", "import"), required=True)
    parser.add_argument("--peer", required=True, help="the safetensors_peer program")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--numpy", action="store_true", help="numpy as the peer even where PyTorch is installed")
    args = parser.parse_args()
    global torch
    if args.numpy and torch is not None:
        torch = None
        print("torch_peer.py: --numpy: checking against numpy alone")
    elif torch is None:
        print("torch_peer.py: PyTorch is not installed: checking against numpy alone "
              "(Debian: apt-get install python3-torch for the PyTorch peer)")
    else:
        torch.set_num_threads(1)
        print(f"torch_peer.py: PyTorch {torch.__version__}, numpy {np.__version__}")
    x, labels = test_set(args.data)
    with tempfile.TemporaryDirectory(prefix="f2d2n-peer-") as work:
        run = f2d2n_to_python if args.direction == "export" else python_to_f2d2n
        ok = run(args, work, x, labels)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
