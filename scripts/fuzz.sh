#!/usr/bin/env bash
# Fuzzes the DICOM file -> tensor path with libFuzzer + ASan + UBSan.
# Usage: scripts/fuzz.sh [seconds]   (default 600)
# Builds into build-fuzz/ with clang, makes a seed corpus of every transfer
# syntax the node reads plus broken files, then runs the fuzzer on both cores.
# Memory: -rss_limit_mb catches real growth. A single allocation may reach
# 4 GiB because DCMTK reserves an element's claimed length (DICOM lengths are
# 32-bit) when it cannot know the remaining bytes (deflated streams); that
# reservation is never touched and fails cleanly where memory is short, so
# -malloc_limit_mb sits just above it rather than flagging it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-600}"
bash "$root/scripts/setup.sh"
for p in clang-14 libclang-rt-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="${missing:-} $p"
done
if [ -n "${missing:-}" ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
fi
build="$root/build-fuzz"
if [ ! -f "$build/build.ninja" ]; then
  CC=clang-14 CXX=clang++-14 cmake -S "$root" -B "$build" -G Ninja -DFEDRAD_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
cmake --build "$build" -j"$(nproc)"

# Seed corpus: a small image in each transfer syntax, multi-frame, colour,
# MONOCHROME1, an SR without pixels, and truncated/garbage files.
corpus="$build/corpus"
rm -rf "$corpus" && mkdir -p "$corpus"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$root/build/tools/fedrad" synth --sites 1 --patients 1 --images 1 --size 32 --out "$work/s" > /dev/null 2>&1 \
  || { echo "build fedrad first (scripts/build.sh)"; exit 1; }
base=$(find "$work/s" -name '*.dcm' | head -1)
cp "$base" "$corpus/explicit.dcm"
dcmconv +ti "$base" "$corpus/implicit.dcm"
dcmconv +tb "$base" "$corpus/big.dcm"
dcmconv +td "$base" "$corpus/deflated.dcm"
dcmcrle "$base" "$corpus/rle.dcm"
dcmcjpeg +e1 "$base" "$corpus/jpeg-lossless.dcm"
dcmcjpls "$base" "$corpus/jpegls.dcm"
cp "$base" "$corpus/mono1.dcm"
dcmodify -nb -m "(0028,0004)=MONOCHROME1" "$corpus/mono1.dcm" > /dev/null 2>&1 || true
head -c 600 "$base" > "$corpus/truncated.dcm"
head -c 256 /dev/urandom > "$corpus/random.bin"
# Inputs that once found a bug stay in the corpus.
cp "$root"/tests/fuzz/regressions/* "$corpus/"
echo "corpus: $(ls "$corpus" | wc -l) seeds"
rm -rf "$build/findings" && mkdir -p "$build/findings"
"$build/tests/fuzz/fedrad-fuzz-dicom" "$corpus" -max_total_time="$seconds" -jobs=2 -workers=2 \
  -artifact_prefix="$build/findings/" -max_len=65536 -rss_limit_mb=2048 -malloc_limit_mb=4200 \
  -print_final_stats=1 \
  2>&1 | tee "$build/fuzz.log" | grep -E "DONE|stat::|ERROR|SUMMARY|crash|Done" || true
echo "findings: $(ls "$build/findings" | wc -l) (in $build/findings)"
