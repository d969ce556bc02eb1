#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/; CMakePresets.json: fuzz, in build-fuzz, clang with
# AddressSanitizer + UndefinedBehaviorSanitizer) and runs each for a fixed time over a copy of its
# seed corpus (fuzz/corpus/<target>/; nothing new is written into the repository). Fails when a
# target finds a crash, a leak, undefined behaviour, an input slower than the timeout or one that
# needs more memory than the limit; the input is kept in build-fuzz/crashes/<target>/ and its
# output printed. Prints the executions of each target. docs/fuzzing.md has the long run.
#   scripts/fuzz.sh [target...]        targets: frame handshake idx safetensors checkpoint s3_listing (default all)
#   F2D2N_FUZZ_SECONDS=20              seconds per target
#   F2D2N_JOBS                         build jobs (default: every core); the targets run one at a time
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --fuzz
jobs=${F2D2N_JOBS:-$(nproc)}
seconds=${F2D2N_FUZZ_SECONDS:-20}
all=(frame handshake idx safetensors checkpoint s3_listing)
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=("${all[@]}")
for t in "${targets[@]}"; do
  [[ -d "fuzz/corpus/$t" ]] || { echo "fuzz.sh: unknown target '$t' (${all[*]})" >&2; exit 2; }
done

cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$jobs" --target "${targets[@]/#/fuzz_}"

work=$(mktemp -d "${TMPDIR:-/tmp}/f2d2n-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
  cp -r "fuzz/corpus/$t" "$work/$t"
  crashes="build-fuzz/crashes/$t"
  mkdir -p "$crashes"
  args=(-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
        -artifact_prefix="$crashes/")
  [[ "$t" == safetensors || "$t" == checkpoint ]] && args+=(-dict=fuzz/json.dict)
  start=$SECONDS
  status=0
  # halt_on_error: undefined behaviour stops the run (the targets are also built without recovery).
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 "build-fuzz/fuzz/fuzz_$t" "${args[@]}" "$work/$t" \
    >"$work/$t.log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log")
  if [[ $status -ne 0 ]]; then
    failed+=("$t")
    echo "f2d2n: fuzz_$t FAILED (exit $status) after $((SECONDS - start)) s; the input is in $crashes/:"
    tail -n 60 "$work/$t.log"
  else
    echo "f2d2n: fuzz_$t: ${runs:-?} executions in $((SECONDS - start)) s, no finding"
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "f2d2n: fuzzing found problems in: ${failed[*]} (docs/fuzzing.md: reproducing a crash)" >&2
  exit 1
fi
