#!/usr/bin/env bash
# Federated lesion segmentation: 3 synthetic CT sites (fedrad synth --task
# segmentation: non-IID noise, offset and prevalence; ground truth as DICOM
# SEG), the plan of configs/segmentation.toml (unet2d), through the real
# coordinator and nodes over mutual TLS on 127.0.0.1. The final model is
# scored at each site on its own validation patients with fedrad-node
# evaluate (exact, local). The central baselines of bench/RESULTS.md come from
# train-local on the pooled folders, with the command given there.
# Usage: bench/segmentation_federated.sh [build-dir]
# Environment: EPSILON (each site's patient-level budget at delta 1e-5 over
# the run, reached at the last round; "none": non-private; default 8),
# PATIENTS (per site, 400), ROUNDS (20).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/lib.sh"
bin="${1:-$root/build}"
epsilon="${EPSILON:-8}"
patients="${PATIENTS:-400}"
rounds="${ROUNDS:-20}"
work="${FEDRAD_BENCH_WORK:-$(mktemp -d)}"
mkdir -p "$work"
echo "workspace: $work"
cd "$work"
rm -rf data kits kits-ca
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -e "s/127.0.0.1:50051/127.0.0.1:$port/" -e "s/^rounds = .*/rounds = $rounds/" "$root/configs/segmentation.toml" > plan.toml
[ "$epsilon" = none ] && sed -i 's/^require_dp = true/require_dp = false/' plan.toml
quiet "$bin/tools/fedrad" synth --task segmentation --sites 3 --seed 7 --patients "$patients" --images 2 --out data
quiet "$bin/tools/fedrad" provision --plan plan.toml --out kits --data-root data
sites="hospital-a hospital-b hospital-c"
for s in $sites; do
  sed -i 's/^threads = 0/threads = 1/' "kits/$s/node.toml"
  if [ "$epsilon" = none ]; then
    sed -i 's/^enabled = true/enabled = false/' "kits/$s/node.toml"
  else
    target=$(awk -v e="$epsilon" 'BEGIN { print e - 0.5 }')
    sed -i "s/^epsilon_max = .*/epsilon_max = $epsilon/; s/^target_epsilon = .*/target_epsilon = $target/" "kits/$s/node.toml"
  fi
done
start=$(date +%s)
"$bin/coordinator/fedrad-coordinator" serve --config kits/coordinator/coordinator.toml > coordinator.out 2> coordinator.log &
coord=$!
sleep 1
pids=()
for s in $sites; do
  (cd "kits/$s" && exec "$bin/node/fedrad-node" run --config node.toml) > "$s.log" 2>&1 &
  pids+=("$!")
done
wait "$coord"
for p in "${pids[@]}"; do wait "$p"; done
elapsed=$(( $(date +%s) - start ))
model=$(sqlite3 kits/coordinator/state/state.db "SELECT sha256 FROM models ORDER BY round DESC LIMIT 1")
echo "epsilon=$epsilon patients/site=$patients rounds=$rounds wall_s=$elapsed model=${model:0:12}"
grep "eps " coordinator.out || true
for s in $sites; do
  "$bin/node/fedrad-node" evaluate --config "kits/$s/node.toml" --bootstrap 500 --json \
    --model "kits/coordinator/state/models/$model.safetensors" 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)["metrics"]
# HD95 needs an image where both the prediction and the truth have a lesion.
hd95 = "%.2f mm" % m["hd95_mm"]["per_patient"] if "hd95_mm" in m else "undefined (no lesion predicted where there is one)"
print("%s federated: Dice per patient %.4f [%.4f, %.4f], per image %.4f, IoU %.4f, HD95 %s" % (sys.argv[1],
      m["dice"]["per_patient"], m["dice"]["ci95"][0], m["dice"]["ci95"][1], m["dice"]["per_image"],
      m["iou"]["per_patient"], hd95))' "$s"
done
