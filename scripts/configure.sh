#!/usr/bin/env bash
# Shared by demo.sh and test.sh: installs what is missing, then configures and builds targets.
#   scripts/configure.sh [target...]   (no target: everything)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
build=${F2D2N_BUILD_DIR:-build}
jobs=${F2D2N_JOBS:-$(nproc)}
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
if [[ $# -eq 0 ]]; then
  cmake --build "$build" -j "$jobs"
else
  for t in "$@"; do cmake --build "$build" -j "$jobs" --target "$t"; done
fi
