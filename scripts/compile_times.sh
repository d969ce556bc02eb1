#!/usr/bin/env bash
# Measures the wall time and peak memory of compiling each of f2d2n's translation units (examples,
# tests, benchmarks, the generated 400-layer network), one at a time, in a fresh build directory.
#   scripts/compile_times.sh            prints a table (needs /usr/bin/time: Debian package 'time')
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
command -v /usr/bin/time >/dev/null || { echo "compile_times.sh needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
dir=${F2D2N_BUILD_DIR:-build-compile-times}
log=$(mktemp)
rm -rf "$dir"
cat > "$log.sh" <<EOS
#!/usr/bin/env bash
src=\${@: -1}
exec /usr/bin/time -a -o "$log" -f "%e %M \$src" "\$@"
EOS
chmod +x "$log.sh"
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER_LAUNCHER="$log.sh" >/dev/null
cmake --build "$dir" -j 1 >/dev/null
printf "%-45s %8s %10s\n" "translation unit" "seconds" "peak MiB"
while read -r secs kib src; do
  printf "%-45s %8s %10d\n" "${src#"$PWD"/}" "$secs" $((kib / 1024))
done < "$log"
rm -rf "$dir" "$log" "$log.sh"
