#!/usr/bin/env bash
# Installs the Debian packages f2d2n needs that are missing. Idempotent; silent when all are present.
#   scripts/deps.sh            build, tests, examples, benchmarks, Fashion-MNIST
#   scripts/deps.sh --compare  also what bench/compare/ needs (python3-torch with OpenBLAS)
#   scripts/deps.sh --plot     also gnuplot (scripts/experiment.sh draws its PNG with it)
#   scripts/deps.sh --fuzz     also clang and libFuzzer with clang's sanitizer runtimes (scripts/fuzz.sh)
set -euo pipefail

packages=(
  cmake g++ make                       # toolchain
  libboost-dev                         # Boost headers: Mp11, Asio, ...
  libboost-serialization-dev           # Boost.Serialization
  libboost-program-options-dev         # the examples' command lines
  libeigen3-dev                        # Eigen 3.4
  libxsmm-dev                          # JIT GEMM kernels: the default kernel backend (docs/kernels.md)
  zlib1g-dev                           # gzipped IDX files
  libxxhash-dev                        # frame checksums (XXH3, header-only)
  nlohmann-json3-dev                   # JSON: safetensors headers, checkpoint manifests
  libssl-dev                           # OpenSSL: the cluster key (HMAC-SHA256), TLS between units
  openssl                              # tests and bench/compare/allreduce_tls.sh make throwaway TLS certificates
  doctest-dev                          # tests
  libbenchmark-dev                     # bench/
  dataset-fashion-mnist                # the data: /usr/share/datasets/fashion-mnist
  python3-numpy                        # tests/torch_peer.py: the safetensors peer (PyTorch's, else numpy's)
  python3-botocore                     # tests/s3/botocore_sign.py: the SigV4 oracle
  curl                                 # bench/compare/s3_vs_curl.sh
  iproute2                             # tests/netns.sh: ip netns, veth, bridge, tc tbf (run as root)
  libopenmpi-dev openmpi-bin           # the MPI transport (f2d2n::mpi) and its tests under mpirun
)
for arg in "$@"; do
  case "$arg" in
    --compare) packages+=(python3-torch libopenblas0-openmp) ;;  # OpenBLAS: else PyTorch runs the reference BLAS
    --plot) packages+=(gnuplot-nox) ;;
    # libclang-rt-14-dev holds libFuzzer and the sanitizer runtimes; clang only recommends it.
    --fuzz) packages+=(clang libclang-rt-14-dev) ;;
    *) echo "deps.sh: unknown option '$arg' (use --compare, --plot or --fuzz)" >&2; exit 2 ;;
  esac
done

# The S3 tests and scripts/demo.sh --datalake run s3rver (npm registry) on Node.js: Node.js with npm
# is expected on the machine (Debian's nodejs and npm packages, or NodeSource's nodejs, which holds npm).
if ! command -v npm >/dev/null; then
  if dpkg-query -W -f='${Status}' nodejs 2>/dev/null | grep -q "install ok installed"; then
    echo "f2d2n: nodejs is installed without npm; the S3 tests need npm (apt-get install npm)" >&2
  else
    packages+=(nodejs npm)
  fi
fi

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "f2d2n needs these Debian packages, which are not installed: ${missing[*]}" >&2
  echo "Install them as root:  apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "f2d2n: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
