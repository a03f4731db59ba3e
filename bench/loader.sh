#!/usr/bin/env bash
# Loader throughput, fedrad vs pydicom + NumPy on the same files, one run.
# Usage: bench/loader.sh [build-dir]
# Environment: PATIENTS (50, of 4 images each at 512x512), REPETITIONS (3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/lib.sh"
build="${1:-$root/build}"
data="$(mktemp -d)/ct512"
trap 'rm -rf "$(dirname "$data")"' EXIT
patients="${PATIENTS:-50}"
reps="${REPETITIONS:-3}"
quiet "$build/tools/fedrad" synth --sites 1 --patients "$patients" --images 4 --size 512 --seed 3 --out "$data"
export FEDRAD_BENCH_DATA="$data"
"$build/bench/fedrad-bench-loader" --benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true \
  --benchmark_format=console 2>&1 | tee /tmp/fedrad-bench-loader.txt
py=$(/usr/bin/python3 "$root/bench/loader_pydicom.py" "$data" "$reps")
echo "$py"
ours=$(awk '/BM_LoaderDecodePreprocess\/2\/real_time_median/ { for (i = 1; i <= NF; i++) if ($i ~ /items_per_second=/) { sub("items_per_second=", "", $i); v = $i } } END { print v }' /tmp/fedrad-bench-loader.txt)
theirs=$(echo "$py" | sed 's/.*images_per_second=\([0-9.]*\).*/\1/')
# Google Benchmark prints e.g. 1.234k/s
ours_n=$(echo "$ours" | sed 's/\/s$//' | awk '{ v = $1; if (v ~ /k$/) { sub("k", "", v); v *= 1000 } print v }')
echo "fedrad_2_threads_images_per_second=$ours_n pydicom_numpy_images_per_second=$theirs ratio=$(awk -v a="$ours_n" -v b="$theirs" 'BEGIN { printf "%.2f", a / b }')"
