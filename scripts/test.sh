#!/usr/bin/env bash
# What CI runs (.ci/run): installs what is missing, builds everything with warnings as errors
# (-DF2D2N_WERROR=ON), runs every test through ctest; then builds the fast tests (ctest label
# `fast`: model, data, comm, tcp, launch) under AddressSanitizer + UndefinedBehaviorSanitizer in
# build-asan (CMakePresets.json: asan) and runs them; then runs each libFuzzer target for a short
# fixed time (scripts/fuzz.sh: clang, in build-fuzz; docs/fuzzing.md).
#   scripts/test.sh [ctest arguments]   e.g. -R test_plan; with arguments, only the normal build's
#                                       tests run, unless F2D2N_ASAN=1 (F2D2N_FUZZ=1)
#   F2D2N_ASAN=0 skips the sanitizer step, F2D2N_FUZZ=0 the fuzzing step (F2D2N_FUZZ_SECONDS: its
#   time per target, 20 by default); F2D2N_BUILD_DIR, F2D2N_JOBS as in configure.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${F2D2N_JOBS:-$(nproc)}
F2D2N_CMAKE_ARGS="-DF2D2N_WERROR=ON ${F2D2N_CMAKE_ARGS:-}" scripts/configure.sh
(cd "${F2D2N_BUILD_DIR:-build}" && ctest --output-on-failure -j "$jobs" "$@")

asan=${F2D2N_ASAN:-$([[ $# -eq 0 ]] && echo 1 || echo 0)}
if [[ "$asan" == 1 ]]; then
  echo "f2d2n: the fast tests under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan)"
  cmake --preset asan >/dev/null
  # Exactly the executables of the tests labelled `fast` (tests/CMakeLists.txt).
  cmake --build --preset asan -j "$jobs" --target test_model test_data test_comm test_tcp test_launch
  # halt_on_error: undefined behaviour fails the test instead of printing and going on.
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j "$jobs" -L fast
fi

fuzz=${F2D2N_FUZZ:-$([[ $# -eq 0 ]] && echo 1 || echo 0)}
if [[ "$fuzz" == 1 ]]; then
  echo "f2d2n: the fuzz targets, ${F2D2N_FUZZ_SECONDS:-20} s each (build-fuzz)"
  F2D2N_JOBS=$jobs scripts/fuzz.sh
fi
