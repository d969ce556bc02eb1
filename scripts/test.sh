#!/usr/bin/env bash
# Installs what is missing, builds everything, runs every test through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/configure.sh
cd "${F2D2N_BUILD_DIR:-build}"
ctest --output-on-failure -j "${F2D2N_JOBS:-$(nproc)}" "$@"
