# bench/compare/common.sh: what the side-by-side scripts share. Sourced, not run:
#   source "$(dirname "${BASH_SOURCE[0]}")/common.sh"; compare_init name.sh
# Defines repo_root (and cds there), die, positive, pick_python, build_benchmarks and run_retrying.

# compare_init SCRIPT: the script's name for messages; changes to the repository root.
compare_init() {
  compare_script="$1"
  repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  cd "$repo_root"
}

die() {
  echo "$compare_script: $*" >&2
  exit 1
}

positive() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }

# pick_python: PYTHON, or Debian's /usr/bin/python3 (which has python3-torch), or python3.
pick_python() {
  if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x /usr/bin/python3 ]]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
  fi
}

# build_benchmarks JOBS TARGET...: configures $BUILD_DIR (Release, benchmarks only) unless it is
# configured already, warns when it is not a Release build, and builds the targets (the log goes to
# $BUILD_DIR/$compare_script.build.log; its tail is shown when the build fails).
build_benchmarks() {
  local jobs="$1"
  shift
  if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    echo "# configuring $BUILD_DIR (Release, benchmarks only)"
    cmake -S "$repo_root" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DF2D2N_BUILD_BENCH=ON \
      -DF2D2N_BUILD_TESTS=OFF -DF2D2N_BUILD_EXAMPLES=OFF >/dev/null
  fi
  local build_type
  build_type="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt")"
  [[ "$build_type" == "Release" ]] ||
    echo "# warning: $BUILD_DIR is a '$build_type' build, not Release: f2d2n's numbers are not representative" >&2
  local log="$BUILD_DIR/$compare_script.build.log"
  cmake --build "$BUILD_DIR" --target "$@" -j"$jobs" >>"$log" 2>&1 ||
    { tail -n 30 "$log" >&2; die "building $* in $BUILD_DIR failed"; }
}

# run_retrying WHAT LOG command...: runs the command (killed after $RUN_TIMEOUT seconds) with its
# output in LOG. f2d2n_launch (and PyTorch's launcher) pick free ports and release them just before
# each process binds its own: another program may take one in between (docs/launch.md). That is
# no failure of the benchmark: up to 3 tries. Any other failure ends the script.
run_retrying() {
  local what="$1" log="$2"
  shift 2
  local attempt
  for attempt in 1 2 3; do
    timeout -k 10 "$RUN_TIMEOUT" "$@" >"$log" 2>&1 && return 0
    if (( attempt < 3 )) && grep -qE 'Address already in use|EADDRINUSE' "$log"; then
      echo "# $what: a port was taken before it could be listened on; starting again" >&2
      continue
    fi
    tail -n 20 "$log" >&2
    die "$what failed or ran past ${RUN_TIMEOUT}s: $*"
  done
}
