#!/usr/bin/env bash
# bench/compare/s3_vs_curl.sh: upload and download throughput of f2d2n's S3 client (tools/f2d2n_s3)
# against curl moving the same object to and from the same local S3 server (s3rver, installed by
# scripts/s3rver.sh into the build), in one run, rounds interleaved.
#   bench/compare/s3_vs_curl.sh                 256 MiB, 3 rounds
#   SIZE_MIB=64 ROUNDS=5 bench/compare/s3_vs_curl.sh
# curl signs with --aws-sigv4 and sends one PUT with UNSIGNED-PAYLOAD. f2d2n is measured as it runs
# by default (the body's SHA-256 signed; a multipart upload of 16 MiB parts, 4 in flight, above
# 64 MiB), as one signed PUT, and as curl does it (one PUT, unsigned). Downloads: curl one GET,
# f2d2n_s3 ranged GETs of 16 MiB, 4 in flight. The target (issue "The datalake") is >= 0.9x curl.
# Prints each round's MB/s and the ratios of the medians.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
compare_init s3_vs_curl.sh
BUILD_DIR="${BUILD_DIR:-${F2D2N_BUILD_DIR:-build}}"
SIZE_MIB="${SIZE_MIB:-256}"
ROUNDS="${ROUNDS:-3}"
positive "$SIZE_MIB" || die "SIZE_MIB must be a positive number"
positive "$ROUNDS" || die "ROUNDS must be a positive number"
command -v curl >/dev/null || die "curl is not installed (apt-get install curl)"

scripts/deps.sh
build_benchmarks "$(nproc)" f2d2n_s3
work=$(mktemp -d)
server=""
cleanup() {
  [[ -n "$server" ]] && kill "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
read -r server port < <(F2D2N_S3RVER_DIR="$BUILD_DIR/s3rver" scripts/s3rver.sh start "$work/data" bench)
head -c $((SIZE_MIB << 20)) /dev/urandom >"$work/object"

export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_ENDPOINT_URL="http://127.0.0.1:$port"
url="http://127.0.0.1:$port/bench"
sig=(--aws-sigv4 "aws:amz:us-east-1:s3" --user S3RVER:S3RVER -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")
tool="$BUILD_DIR/tools/f2d2n_s3"
bytes=$((SIZE_MIB << 20))

# seconds COMMAND...: runs it, prints the wall time in seconds.
seconds() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
mbps() { echo "scale=1; $bytes / 1000000 / $1" | bc -l; }
median() { tr ' ' '\n' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

declare -A runs
echo "# $SIZE_MIB MiB object, $ROUNDS rounds, s3rver $(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$BUILD_DIR/s3rver/node_modules/s3rver/package.json" | head -n 1) on 127.0.0.1"
printf "%-6s %-26s %10s\n" round client MB/s
for r in $(seq "$ROUNDS"); do
  for who in curl_put f2d2n_put f2d2n_put_single f2d2n_put_single_unsigned curl_get f2d2n_get; do
    case "$who" in
      curl_put) t=$(seconds curl -sS -f "${sig[@]}" -T "$work/object" -o /dev/null "$url/curl.bin") ;;
      f2d2n_put) t=$(seconds "$tool" -q put "$work/object" s3://bench/f2d2n.bin) ;;
      f2d2n_put_single) t=$(seconds "$tool" -q --multipart-mib 100000 put "$work/object" s3://bench/f2d2n.bin) ;;
      f2d2n_put_single_unsigned)
        t=$(seconds "$tool" -q --unsigned-payload --multipart-mib 100000 put "$work/object" s3://bench/f2d2n.bin) ;;
      curl_get) t=$(seconds curl -sS -f "${sig[@]}" -o "$work/curl.out" "$url/curl.bin") ;;
      f2d2n_get) t=$(seconds "$tool" -q get s3://bench/f2d2n.bin "$work/f2d2n.out") ;;
    esac
    m=$(mbps "$t")
    runs[$who]="${runs[$who]:-} $m"
    printf "%-6s %-26s %10s\n" "$r" "$who" "$m"
  done
  cmp -s "$work/object" "$work/curl.out" || die "curl's download differs from the object"
  cmp -s "$work/object" "$work/f2d2n.out" || die "f2d2n's download differs from the object"
done
echo "# medians (MB/s) and ratios to curl"
for who in curl_put f2d2n_put f2d2n_put_single f2d2n_put_single_unsigned curl_get f2d2n_get; do
  runs[$who]=$(echo "${runs[$who]}" | median)
done
ratio() { echo "$1 / ${runs[curl_put]}" | bc -l; }
printf "upload:   curl %s; f2d2n as curl (one PUT, unsigned) %s (%.2fx); one PUT, signed %s (%.2fx); by default\n" \
  "${runs[curl_put]}" "${runs[f2d2n_put_single_unsigned]}" "$(ratio "${runs[f2d2n_put_single_unsigned]}")" \
  "${runs[f2d2n_put_single]}" "$(ratio "${runs[f2d2n_put_single]}")"
printf "          (signed; multipart above 64 MiB: 16 MiB parts, 4 in flight) %s (%.2fx)\n" "${runs[f2d2n_put]}" \
  "$(ratio "${runs[f2d2n_put]}")"
printf "download: curl %s; f2d2n (ranged GETs of 16 MiB, 4 in flight) %s (%.2fx)\n" "${runs[curl_get]}" "${runs[f2d2n_get]}" \
  "$(echo "${runs[f2d2n_get]} / ${runs[curl_get]}" | bc -l)"
