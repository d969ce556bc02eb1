#!/usr/bin/env bash
# The main job: installs what is missing, builds, and trains the MLP on Fashion-MNIST on a local
# cluster of 4 processing units over TCP (2 data-parallel replicas x 2 neuron shards), started
# by f2d2n_launch. Arguments go to the example (scripts/demo.sh --help lists them), e.g.
#   scripts/demo.sh --plan dp2_tp2        (the default; dp2, dp4, tp2, tp2_inputs, pp2, dp2_pp2 also run)
#   scripts/demo.sh --serial              the same training in one process (examples/fashion_mnist)
set -euo pipefail
cd "$(dirname "$0")/.."
build="${F2D2N_BUILD_DIR:-build}"
if [[ "${1:-}" == "--serial" ]]; then
  shift
  scripts/configure.sh fashion_mnist >/dev/null
  exec "$build/examples/fashion_mnist" "$@"
fi
scripts/configure.sh fashion_mnist_cluster f2d2n_launch >/dev/null
units=4
args=("$@")
for ((i = 0; i < ${#args[@]}; ++i)); do
  case "${args[i]}" in
    --help|-h) exec "$build/examples/fashion_mnist_cluster" --help ;;
    --plan=*) plan="${args[i]#--plan=}" ;;
    --plan) plan="${args[i+1]:-}" ;;
  esac
done
case "${plan:-dp2_tp2}" in
  dp2|tp2|tp2_inputs|pp2) units=2 ;;
  dp4|dp2_tp2|dp2_pp2) units=4 ;;
esac
exec "$build/tools/f2d2n_launch" -n "$units" -- "$build/examples/fashion_mnist_cluster" "$@"
