#!/usr/bin/env bash
# The test command of the Quick start: installs what is missing, builds, and
# runs every unit and integration test with ctest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/build.sh"
build="${FEDRAD_BUILD_DIR:-$root/build}"
cd "$build"
ctest --output-on-failure --timeout 900 -j"$(nproc)" "$@"
