#!/usr/bin/env bash
# Installs every Debian 12 package fedrad needs to build, test and run its demo.
# Idempotent: installs only what is missing, so a second run is a no-op.
# With --bench, also what the scripts under bench/ and the peers' harnesses
# in ../shared/anchors need (the Fashion-MNIST files, SciPy for Opacus).
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config clang-format
  libtorch-dev libopenblas0-pthread
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libssl-dev libsqlite3-dev
  libdcmtk-dev dcmtk
  libopencv-imgproc-dev libopencv-imgcodecs-dev
  libabsl-dev libcli11-dev libtomlplusplus-dev libspdlog-dev
  nlohmann-json3-dev libcpp-httplib-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  sqlite3 procps time python3 python3-numpy python3-pydicom python3-torch
  chromium dicom3tools
)
if [ "${1:-}" = "--bench" ]; then
  packages+=(dataset-fashion-mnist python3-scipy)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "fedrad setup: installing ${#missing[@]} missing package(s): ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
