#!/usr/bin/env bash
# Shared by demo.sh and test.sh: installs what is missing, then configures and builds targets.
#   scripts/configure.sh [target...]   (no target: everything)
# F2D2N_BUILD_DIR (default build), F2D2N_JOBS (default: every core); F2D2N_CMAKE_ARGS: options for
# cmake (e.g. -DF2D2N_WERROR=ON, as test.sh passes), applied to the build directory even when it is
# already configured.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
build=${F2D2N_BUILD_DIR:-build}
jobs=${F2D2N_JOBS:-$(nproc)}
read -r -a cmake_args <<<"${F2D2N_CMAKE_ARGS:-}"
if [[ ! -f "$build/CMakeCache.txt" || ${#cmake_args[@]} -gt 0 ]]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release "${cmake_args[@]}" >/dev/null
fi
if [[ $# -eq 0 ]]; then
  cmake --build "$build" -j "$jobs"
else
  for t in "$@"; do cmake --build "$build" -j "$jobs" --target "$t"; done
fi
