#!/usr/bin/env bash
# The test command of the Quick start: installs what is missing, builds, and
# runs every unit and integration test with ctest, then each fuzz target
# for a few seconds on its seed corpus (scripts/fuzz.sh --smoke), so they
# stay buildable and their seeds stay accepted (FEDRAD_SKIP_FUZZ=1 skips
# that), then every benchmark under bench/ in a tiny configuration
# (bench/smoke.sh, a few minutes: the commands of bench/RESULTS.md keep
# working; FEDRAD_SKIP_BENCH=1 skips it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/build.sh"
build="${FEDRAD_BUILD_DIR:-$root/build}"
(cd "$build" && ctest --output-on-failure --timeout 900 -j"$(nproc)" "$@")
if [ "${FEDRAD_SKIP_FUZZ:-0}" != 1 ]; then
  bash "$root/scripts/fuzz.sh" --smoke 5
fi
if [ "${FEDRAD_SKIP_BENCH:-0}" != 1 ]; then
  bash "$root/bench/smoke.sh" "$build"
fi
