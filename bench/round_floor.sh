#!/usr/bin/env bash
# The floor under bench/round_overhead.sh: the same run with a build whose
# coordinator and node skip their own per-byte work (common/bench_floor.h:
# no checks, hashing, spooling or folding of updates; no hashing, caching or
# finiteness check of downloaded models), so that what is left of a cycle is
# the transport in both directions. Builds it into FLOOR_BUILD (default
# build-floor/, never installed), then runs round_overhead.sh with it.
# Usage: bench/round_floor.sh PARAMS NODES   (UPDATE_DTYPE etc. as there)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FLOOR_BUILD:-$root/build-floor}"
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFEDRAD_BENCH_FLOOR=ON > /dev/null
fi
cmake --build "$build" -j"$(nproc)" --target fedrad-coordinator fedrad-node fedrad > /dev/null
exec "$root/bench/round_overhead.sh" "$@" "$build"
