#!/usr/bin/env bash
# Runs a compile command within a time and memory budget, so that a compile-time regression fails
# the build. Usage: compile_budget.sh SECONDS MEMORY_MIB COMMAND...
# Memory is capped as address space (ulimit -v), which is at least the peak resident memory.
set -u
seconds=$1 mib=$2
shift 2
ulimit -v $((mib * 1024)) || exit 1
timeout --kill-after=5 "$seconds" "$@"
rc=$?
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
  echo "f2d2n compile budget: this translation unit did not compile within ${seconds} s" >&2
elif [ $rc -ne 0 ]; then
  echo "f2d2n compile budget: compile failed (exit $rc) under the budget of ${seconds} s and ${mib} MiB; if the compiler ran out of memory, the budget was exceeded" >&2
fi
exit $rc
