#!/usr/bin/env bash
# The experiment runner: trains the same MLP on Fashion-MNIST under several plans (one process;
# data parallel; neuron and input shards; pipelines; hybrids), each on its own local cluster over
# TCP, and writes a table and a plot of what each plan costs, as the data- vs model-parallel
# experiments of the parallelism survey (Romero-Sandi et al. 2024) compare strategies.
#
#   scripts/experiment.sh                                 (from the repository root)
#   EPOCHS=3 PLANS="serial dp2 tp2 pp2" OUT=/tmp/exp scripts/experiment.sh
#   MODEL=cnn scripts/experiment.sh                       the CNN: data parallel, spatial and pipeline plans
#
# For each plan: examples/fashion_mnist (serial) or examples/fashion_mnist_cluster --plan P under
# tools/f2d2n_launch, with the same settings (the MLP preset: Adam, batch 64, seed 1) and a CSV of
# metrics per unit. From those it takes, for the last epoch: samples/s (unit 0), test accuracy,
# each unit's compute / communication / wait milliseconds per step (averaged over the units), and
# the payload bytes all units send per step (the plan's constexpr figure, printed by unit 0).
# Writes $OUT/results.csv, $OUT/results.md (the table) and $OUT/throughput.png (gnuplot: samples/s
# per plan, bars split into compute, communication and wait shares).
#
# Environment:
#   MODEL        mlp (default) or cnn (the examples' --preset)
#   PLANS        plans to run (default "serial dp2 dp4 tp2 tp2_inputs pp2 dp2_tp2 dp2_pp2"; for the CNN
#                "serial dp2 dp4 spatial2 spatial2x2 dp2_spatial2 channels2 inchannels2 tp2 pp2")
#   EPOCHS       epochs per plan (default 1)
#   BATCH        global batch size (default 64)
#   OUT          where results go (default build/experiment)
#   EXTRA        more options for every run (e.g. "--train-limit 10000")
#   F2D2N_BUILD_DIR  the build directory (default build)
# The machine has 2 cores: plans of 4 units share them (8 threads with the io threads), so their
# throughput shows what oversubscription costs as much as what the plan costs.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL="${MODEL:-mlp}"
case "$MODEL" in
  mlp) PLANS="${PLANS:-serial dp2 dp4 tp2 tp2_inputs pp2 dp2_tp2 dp2_pp2}"; OUT="${OUT:-build/experiment}" ;;
  cnn) PLANS="${PLANS:-serial dp2 dp4 spatial2 spatial2x2 dp2_spatial2 channels2 inchannels2 tp2 pp2}"
       OUT="${OUT:-build/experiment-cnn}" ;;
  *) echo "experiment.sh: MODEL is mlp or cnn, not '$MODEL'" >&2; exit 2 ;;
esac
EPOCHS="${EPOCHS:-1}"
BATCH="${BATCH:-64}"
EXTRA="--preset $MODEL ${EXTRA:-}"
build="${F2D2N_BUILD_DIR:-build}"

scripts/deps.sh --plot
scripts/configure.sh fashion_mnist fashion_mnist_cluster f2d2n_launch >/dev/null
mkdir -p "$OUT"
rm -f "$OUT"/*.csv "$OUT"/*.log

units_of() {
  case "$1" in
    serial) echo 1 ;;
    dp2|tp2|tp2_inputs|pp2|spatial2|channels2|inchannels2) echo 2 ;;
    dp4|dp2_tp2|dp2_pp2|spatial2x2|dp2_spatial2) echo 4 ;;
    *) echo "experiment.sh: unknown plan '$1'" >&2; exit 2 ;;
  esac
}

# shellcheck disable=SC2086  # EXTRA is a list of options
for plan in $PLANS; do
  n=$(units_of "$plan")
  echo "experiment: $plan ($n unit(s)), $EPOCHS epoch(s), batch $BATCH" >&2
  if [[ "$plan" == serial ]]; then
    "$build/examples/fashion_mnist" --epochs "$EPOCHS" --batch-size "$BATCH" --metrics "$OUT/serial.unit0.csv" $EXTRA \
      >"$OUT/serial.log"
  else
    "$build/tools/f2d2n_launch" -n "$n" -- "$build/examples/fashion_mnist_cluster" --plan "$plan" --epochs "$EPOCHS" \
      --batch-size "$BATCH" --metrics "$OUT/$plan.csv" $EXTRA >"$OUT/$plan.log"
  fi
  tail -n 1 "$OUT/$plan.log" >&2
done

# One row per plan from the units' last CSV rows.
{
  echo "plan,units,samples_per_second,test_accuracy,compute_ms_per_step,communication_ms_per_step,wait_ms_per_step,bytes_sent_per_step"
  for plan in $PLANS; do
    n=$(units_of "$plan")
    bytes=0
    if [[ "$plan" != serial ]]; then
      bytes=$(grep -o '[0-9]* bytes sent per step' "$OUT/$plan.log" | awk '{s += $1} END {print s + 0}')
    fi
    for ((r = 0; r < n; ++r)); do tail -n 1 "$OUT/$plan.unit$r.csv"; done |
      awk -F, -v plan="$plan" -v n="$n" -v bytes="$bytes" '
        NR == 1 { rate = $7; acc = $5 }
        { c += $10; m += $11; w += $12 }
        END { printf "%s,%d,%.0f,%.4f,%.3f,%.3f,%.3f,%d\n", plan, n, rate, acc, c / NR, m / NR, w / NR, bytes }'
  done
} >"$OUT/results.csv"

{
  echo "| plan | units | samples/s | test accuracy | compute ms/step | communication ms/step | wait ms/step | bytes sent per step (all units) |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  tail -n +2 "$OUT/results.csv" | awk -F, '{ printf "| %s | %s | %s | %.2f %% | %s | %s | %s | %s |\n", $1, $2, $3, 100 * $4, $5, $6, $7, $8 }'
} >"$OUT/results.md"

gnuplot <<EOF
set terminal pngcairo size 900,500 font "sans,10" noenhanced
set output "$OUT/throughput.png"
set datafile separator ","
set key autotitle columnhead outside right top
set title "f2d2n: ${MODEL^^} on Fashion-MNIST, batch $BATCH, by plan (2-core machine)"
set ylabel "samples / s"
set y2label "share of a unit's step"
set yrange [0:*]
set y2range [0:1]
set ytics nomirror
set y2tics
set xtics rotate by -30
set style fill solid 0.7 border -1
set boxwidth 0.6
plot "$OUT/results.csv" using 0:3:xtic(1) with boxes lc rgb "#4477aa" title "samples/s", \
     "" using 0:(\$5/(\$5+\$6+\$7)) axes x1y2 with linespoints lw 2 pt 7 lc rgb "#228833" title "compute share", \
     "" using 0:(\$6/(\$5+\$6+\$7)) axes x1y2 with linespoints lw 2 pt 5 lc rgb "#cc6677" title "communication share", \
     "" using 0:(\$7/(\$5+\$6+\$7)) axes x1y2 with linespoints lw 2 pt 9 lc rgb "#ddaa33" title "wait share"
EOF

cat "$OUT/results.md"
echo "experiment: $OUT/results.csv, $OUT/results.md, $OUT/throughput.png" >&2
