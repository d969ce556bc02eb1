#!/usr/bin/env bash
# The main job: installs what is missing, builds, and trains an MLP on Fashion-MNIST.
# Arguments go to the example (scripts/demo.sh --help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/configure.sh fashion_mnist >/dev/null
exec "${F2D2N_BUILD_DIR:-build}/examples/fashion_mnist" "$@"
