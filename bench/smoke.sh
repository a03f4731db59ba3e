#!/usr/bin/env bash
# Smoke runs of every benchmark under bench/, each in a tiny configuration,
# so that the commands bench/RESULTS.md gives keep working: each script must
# finish and print the line its figures are read from. Not a measurement:
# nothing here is timed for a result. scripts/test.sh runs it after the
# tests (FEDRAD_SKIP_BENCH=1 skips it).
# Usage: bench/smoke.sh [build-dir]
# Environment: SMOKE_ONLY (a name below: run that one only).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(cd "${1:-$root/build}" && pwd)"
bash "$root/scripts/setup.sh" --bench  # the Fashion-MNIST files, SciPy
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# smoke NAME PATTERN CMD...: runs CMD in its own workspace; it must exit 0
# and print a line matching the extended regex PATTERN. On failure, all it
# printed is shown and the smoke stops.
smoke() {
  local name="$1" pattern="$2"
  shift 2
  if [ -n "${SMOKE_ONLY:-}" ] && [ "$SMOKE_ONLY" != "$name" ]; then return 0; fi
  local log="$work/$name.log" started
  started=$(date +%s)
  mkdir -p "$work/$name"
  if ! (cd "$work/$name" && FEDRAD_BENCH_WORK="$work/$name" "$@") > "$log" 2>&1; then
    echo "bench smoke: $name failed: $*"
    cat "$log"
    exit 1
  fi
  if ! grep -Eq "$pattern" "$log"; then
    echo "bench smoke: $name finished but printed no line matching '$pattern': $*"
    cat "$log"
    exit 1
  fi
  echo "bench smoke: $name ok ($(($(date +%s) - started)) s): $(grep -E "$pattern" "$log" | tail -1 | cut -c1-150)"
}

smoke round_overhead '^cycle_s=[0-9.]+ round_s=[0-9.]+ coordinator_rss_mib=[0-9]+' \
  bash "$root/bench/round_overhead.sh" 10K 2 "$build"
smoke round_overhead_swarm '^cycle_s=[0-9.]+ round_s=[0-9.]+ coordinator_rss_mib=[0-9]+' \
  env SWARM=1 bash "$root/bench/round_overhead.sh" 10K 3 "$build"
# The floor's own build tree (minutes the first time, then incremental).
smoke round_floor '^cycle_s=[0-9.]+ round_s=[0-9.]+ coordinator_rss_mib=[0-9]+' \
  env FLOOR_BUILD="${FLOOR_BUILD:-$build-floor}" bash "$root/bench/round_floor.sh" 10K 2
smoke fmnist_federated '^test accuracy [0-9.]+ 95% CI' \
  env LIMIT=400 TEST_LIMIT=200 bash "$root/bench/fmnist_federated.sh" 1 1.0 "$build"
smoke fmnist_federated_dp '^test accuracy [0-9.]+ 95% CI' \
  env LIMIT=400 TEST_LIMIT=200 EPSILON=3 bash "$root/bench/fmnist_federated.sh" 1 1.0 "$build"
smoke segmentation_federated '^hospital-c federated: Dice per patient [0-9.]+' \
  env PATIENTS=12 ROUNDS=1 bash "$root/bench/segmentation_federated.sh" "$build"
smoke transfer_learning '^  public-ct hospital-c: accuracy [0-9.]+, balanced accuracy [0-9.]+, ROC AUC [0-9.]+' \
  env PATIENTS=40 ROUNDS=2 PRETRAIN_IMAGES=300 PRETRAIN_EPOCHS=1 PUBLIC_PATIENTS=40 \
  bash "$root/bench/transfer_learning.sh" "$build"
smoke loader '^fedrad_2_threads_images_per_second=[0-9.]+ pydicom_numpy_images_per_second=[0-9.]+ ratio=[0-9.]+' \
  env PATIENTS=2 REPETITIONS=2 bash "$root/bench/loader.sh" "$build"
# The Google Benchmark binaries: every benchmark once, briefly.
smoke dpsgd '^BM_DpSgdStep' "$build/bench/fedrad-bench-dpsgd" --benchmark_min_time=0.000001
smoke predict '^BM_PredictOneImageHeatmap' "$build/bench/fedrad-bench-predict" --benchmark_min_time=0.000001
echo "bench smoke: every benchmark ran"
