#!/usr/bin/env bash
# The one-process example's checkpoint options, as a user runs them: 1 epoch with --checkpoint-dir,
# then --resume to 2 epochs, must end where 2 uninterrupted epochs end (the same printed test
# accuracy and loss); --save-model writes a safetensors file with the model's tensors.
#   example_checkpoint.sh <fashion_mnist> <work dir>
set -euo pipefail
example=$1 work=$2
rm -rf "$work"
mkdir -p "$work"
common=(--train-limit 1200 --batch-size 64)
whole=$("$example" "${common[@]}" --epochs 2 | grep "^test accuracy")
"$example" "${common[@]}" --epochs 1 --checkpoint-dir "$work/ck" >/dev/null
resumed_log=$("$example" "${common[@]}" --epochs 2 --checkpoint-dir "$work/ck" --resume --save-model "$work/m.safetensors")
echo "$resumed_log" | grep -q "^resumed from $work/ck/step-000000000019: epoch 2, step 0" ||
  { echo "FAILED: did not resume from the epoch-1 checkpoint"; echo "$resumed_log"; exit 1; }
resumed=$(echo "$resumed_log" | grep "^test accuracy")
echo "uninterrupted: $whole"
echo "resumed:       $resumed"
[[ "${whole% after*}" == "${resumed% after*}" ]] || { echo "FAILED: the resumed run ends elsewhere"; exit 1; }
# The saved file: 8-byte little-endian length, then a JSON header naming the MLP's six tensors.
names=$(python3 -c 'import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
print(" ".join(sorted(k for k in json.loads(b[8:8 + n]) if k != "__metadata__")))' "$work/m.safetensors")
[[ "$names" == "1.bias 1.weight 3.bias 3.weight 5.bias 5.weight" ]] || { echo "FAILED: the saved file names $names"; exit 1; }
echo "saved: $names"
rm -rf "$work"
