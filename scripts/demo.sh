#!/usr/bin/env bash
# The main job: installs what is missing, builds, and trains the MLP on Fashion-MNIST on a local
# cluster of 4 processing units (2 data-parallel replicas x 2 neuron shards; shared memory between them,
# F2D2N_TRANSPORT=tcp for TCP), started
# by f2d2n_launch. Arguments go to the example (scripts/demo.sh --help lists them), e.g.
#   scripts/demo.sh --plan dp2_tp2        (the default; dp2, dp4, tp2, tp2_inputs, pp2, dp2_pp2 also run)
#   scripts/demo.sh --serial              the same training in one process (examples/fashion_mnist)
#   scripts/demo.sh --model cnn           the CNN (examples/fashion_mnist/settings.hpp) on 4 units, 4 data-parallel
#                                         replicas (--plan dp2, tp2, dp2_tp2, pp2, dp2_pp2, spatial2,
#                                         spatial2x2, dp2_spatial2, channels2, inchannels2 also run it)
#   scripts/demo.sh --serial --model cnn  the CNN in one process
#   scripts/demo.sh --max-restarts 3      checkpoints after every epoch; when a unit dies, every unit
#                                         restarts and resumes from the newest one
#   scripts/demo.sh --datalake            the data and the checkpoints in an object store: starts a local
#                                         S3 server (s3rver, installed into the build), uploads
#                                         Fashion-MNIST to it, trains the 4 units reading from it and
#                                         checkpointing to it, saves the model there and prints where
set -euo pipefail
cd "$(dirname "$0")/.."
build="${F2D2N_BUILD_DIR:-build}"
# --model mlp|cnn chooses the example's preset (--preset passes through as it is).
model=mlp
rest=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) model="${2:?--model needs mlp or cnn}"; shift 2 ;;
    --model=*) model="${1#--model=}"; shift ;;
    *) rest+=("$1"); shift ;;
  esac
done
case "$model" in
  mlp) ;;
  cnn) rest=(--preset cnn "${rest[@]}") ;;
  *) echo "demo.sh: --model is mlp or cnn, not '$model'" >&2; exit 2 ;;
esac
set -- "${rest[@]}"
if [[ " $* " == *" --datalake "* ]]; then
  args=()
  for a in "$@"; do [[ "$a" == "--datalake" ]] || args+=("$a"); done
  scripts/configure.sh fashion_mnist_cluster f2d2n_launch f2d2n_s3 >/dev/null
  stamp="$(date +%Y%m%d-%H%M%S)-$$"
  lake="$build/datalake"
  mkdir -p "$lake"
  read -r server port < <(F2D2N_S3RVER_DIR="$build/s3rver" scripts/s3rver.sh start "$lake/objects" f2d2n)
  trap 'kill $server 2>/dev/null || true; rm -rf "$lake/upload-$stamp"' EXIT
  # s3rver's fixed credentials; any S3-compatible store works the same with its own.
  export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  echo "datalake: s3rver on $AWS_ENDPOINT_URL, objects under $lake/objects" >&2
  # Uncompressed IDX files: a unit then reads only the bytes of the samples it loads (ranged GETs).
  mkdir -p "$lake/upload-$stamp"
  for f in /usr/share/datasets/fashion-mnist/*-ubyte.gz; do gunzip -c "$f" >"$lake/upload-$stamp/$(basename "$f" .gz)"; done
  "$build/tools/f2d2n_s3" put-dir "$lake/upload-$stamp" s3://f2d2n/fashion-mnist >&2
  run="s3://f2d2n/runs/$stamp"
  "$build/tools/f2d2n_launch" -n 4 -- "$build/examples/fashion_mnist_cluster" --data-dir s3://f2d2n/fashion-mnist \
    --checkpoint-dir "$run" --save-model "$run/model.safetensors" "${args[@]}"
  echo "datalake: the run's objects (checkpoints, the model):"
  "$build/tools/f2d2n_s3" ls "$run"
  echo "datalake: the model is $run/model.safetensors (on $AWS_ENDPOINT_URL; the server stops with this script," \
    "its objects stay under $lake/objects/f2d2n)"
  exit 0
fi
if [[ "${1:-}" == "--serial" || " $* " == *" --serial "* ]]; then
  args=()
  for a in "$@"; do [[ "$a" == "--serial" ]] || args+=("$a"); done
  scripts/configure.sh fashion_mnist >/dev/null
  exec "$build/examples/fashion_mnist" "${args[@]}"
fi
scripts/configure.sh fashion_mnist_cluster f2d2n_launch >/dev/null
units=4
args=()
launch=()
restarts=""
has_dir=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --help|-h) exec "$build/examples/fashion_mnist_cluster" --help ;;
    --plan=*) plan="${1#--plan=}" ;;
    --plan) plan="${2:-}" ;;
    --checkpoint-dir|--checkpoint-dir=*) has_dir=1 ;;
    --max-restarts) restarts="${2:?--max-restarts needs a number}"; shift 2; continue ;;
    --max-restarts=*) restarts="${1#--max-restarts=}"; shift; continue ;;
  esac
  args+=("$1")
  shift
done
if [[ -z "${plan:-}" && "$model" == cnn ]]; then
  plan=dp4  # the convolutions are most of the work: four replicas share it (TP would repeat them)
  args+=(--plan dp4)
fi
case "${plan:-dp2_tp2}" in
  dp2|tp2|tp2_inputs|pp2|spatial2|channels2|inchannels2) units=2 ;;
  dp4|dp2_tp2|dp2_pp2|spatial2x2|dp2_spatial2) units=4 ;;
esac
if [[ -n "$restarts" ]]; then
  # A unit that dies restarts every unit, which resume from the newest checkpoint of this run
  # (a folder of its own unless --checkpoint-dir names one).
  launch+=(--max-restarts "$restarts")
  if [[ -z "$has_dir" ]]; then
    dir="$build/checkpoints/demo-$(date +%Y%m%d-%H%M%S)-$$"
    echo "checkpoints in $dir" >&2
    args+=(--checkpoint-dir "$dir")
  fi
  args+=(--resume)
fi
exec "$build/tools/f2d2n_launch" -n "$units" "${launch[@]}" -- "$build/examples/fashion_mnist_cluster" "${args[@]}"
