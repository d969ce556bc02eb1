#!/usr/bin/env bash
# The main job on an object store, as scripts/demo.sh --datalake runs it: a local s3rver, Fashion-
# MNIST uploaded to it (uncompressed: the units read their samples by ranges), 4 units over TCP
# reading their data from it and writing their checkpoints and the model into it; then a second
# run resumes from the store's newest checkpoint for a second epoch.
#   tests/datalake.sh F2D2N_LAUNCH FASHION_MNIST_CLUSTER F2D2N_S3 S3RVER_DIR WORK_DIR
set -euo pipefail
launch=$1 cluster=$2 tool=$3 s3rver_dir=$4 work=$5
rm -rf "$work"
mkdir -p "$work/upload"
read -r server port < <(F2D2N_S3RVER_DIR="$s3rver_dir" "$(dirname "$0")/../scripts/s3rver.sh" start "$work/objects" f2d2n)
trap 'kill $server 2>/dev/null || true' EXIT
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_ENDPOINT_URL="http://127.0.0.1:$port"
for f in /usr/share/datasets/fashion-mnist/*-ubyte.gz; do gunzip -c "$f" >"$work/upload/$(basename "$f" .gz)"; done
"$tool" -q put-dir "$work/upload" s3://f2d2n/fashion-mnist

run=(--data-dir s3://f2d2n/fashion-mnist --train-limit 2000 --checkpoint-dir s3://f2d2n/run)
"$launch" -n 4 --timeout 120 -- "$cluster" "${run[@]}" --epochs 1 --save-model s3://f2d2n/run/model.safetensors \
  | tee "$work/first.log"
grep -q "from s3://f2d2n/fashion-mnist" "$work/first.log" || { echo "datalake: the data did not come from the store"; exit 1; }
"$tool" ls s3://f2d2n/run | tee "$work/after_first.txt"
grep -q "step-[0-9]*/manifest.json" "$work/after_first.txt" || { echo "datalake: no committed checkpoint in the store"; exit 1; }
grep -q "s3://f2d2n/run/model.safetensors" "$work/after_first.txt" || { echo "datalake: no model in the store"; exit 1; }
"$tool" -q get s3://f2d2n/run/model.safetensors "$work/model.safetensors"
[[ -s "$work/model.safetensors" ]] || { echo "datalake: the model downloaded empty"; exit 1; }

"$launch" -n 4 --timeout 120 -- "$cluster" "${run[@]}" --epochs 2 --resume | tee "$work/second.log"
grep -q "resumed from s3://f2d2n/run/step-" "$work/second.log" || { echo "datalake: the second run did not resume from the store"; exit 1; }
grep -q "epoch 2/2" "$work/second.log" || { echo "datalake: the second run did not train its second epoch"; exit 1; }
[[ $(grep -c "^ *[0-9]* *s3://f2d2n/run/step-[0-9]*/manifest.json" <("$tool" ls s3://f2d2n/run)) -ge 2 ]] ||
  { echo "datalake: the resumed run committed no checkpoint of its own"; exit 1; }
echo "datalake: 4 units read their data from the store, checkpointed into it, and resumed from it"
