#!/usr/bin/env bash
# Transfer learning under DP on the synthetic CT task (issue 20): the demo's
# three sites (fedrad synth --seed 7, non-IID), ctnet at 32x32, patient-level
# DP at EPSILON per site (the kits' default, 3; each site aims at 0.3 below
# it by the last round), every image z-scored, the plan of
# configs/federation.toml otherwise. The same federation runs from:
#   random         the plan's seeded fresh weights;
#   fmnist         weights trained centrally, without DP, on Fashion-MNIST
#                  (public data of another domain, imported with fedrad
#                  import; 10 classes, so [model] init re-initialises the
#                  head for the CT task's 2);
#   fmnist-frozen  the same start with its convolutions and norms frozen
#                  ([model] freeze): only fc1 and fc2 train and travel;
#   public-ct      weights trained centrally, without DP, on a public
#                  synthetic CT set of the same finding from other patients
#                  (fedrad synth --seed 99, 2,000 patients), as a public
#                  dataset of the same modality would be used.
# Prints, per start, each site's validation accuracy, balanced accuracy and
# ROC AUC of the last global model (fedrad-node evaluate, exact, local), and
# the first round whose global model predicts more than one class at every
# site (from the nodes' own exact evaluations).
# Usage: bench/transfer_learning.sh [build-dir]
# Environment: EPSILON (3), PATIENTS (per site, 1000), ROUNDS (20),
# PRETRAIN_IMAGES (Fashion-MNIST training images, 60000), PRETRAIN_EPOCHS (3),
# PUBLIC_PATIENTS (2000), STARTS ("random fmnist fmnist-frozen public-ct").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/lib.sh"
bash "$root/scripts/setup.sh" --bench  # Debian's dataset-fashion-mnist
bin="${1:-$root/build}"
epsilon="${EPSILON:-3}"
patients="${PATIENTS:-1000}"
rounds="${ROUNDS:-20}"
pretrain_images="${PRETRAIN_IMAGES:-60000}"
pretrain_epochs="${PRETRAIN_EPOCHS:-3}"
public_patients="${PUBLIC_PATIENTS:-2000}"
starts="${STARTS:-random fmnist fmnist-frozen public-ct}"
target=$(awk -v e="$epsilon" 'BEGIN { print e - 0.3 }')
work="${FEDRAD_BENCH_WORK:-$(mktemp -d)}"
mkdir -p "$work"
echo "workspace: $work"
cd "$work"
fm=/usr/share/datasets/fashion-mnist
sites="hospital-a hospital-b hospital-c"

# The CT sites, and a kit whose node.toml serves as the template below.
rm -rf data kits-template kits-template-ca
quiet "$bin/tools/fedrad" synth --sites 3 --seed 7 --patients "$patients" --images 1 --out data
sed "s/^rounds = .*/rounds = $rounds/" "$root/configs/federation.toml" > plan-template.toml
quiet "$bin/tools/fedrad" provision --plan plan-template.toml --out kits-template --data-root data

# pretrain NAME DATA WINDOW_CENTER WINDOW_WIDTH CLASSES: central training of
# ctnet on DATA without DP (public data), z-scored like the sites' images,
# into NAME.safetensors.
pretrain() {
  local name="$1" data="$2" center="$3" width="$4" classes="$5"
  sed -e "s|^dicom_dir = .*|dicom_dir = \"$data\"|" -e "s|^labels = .*|labels = \"$data/labels.csv\"|" \
    -e "s/^window_center = .*/window_center = $center/" -e "s/^window_width = .*/window_width = $width/" \
    -e 's/^normalize = .*/normalize = "zscore"/' -e 's/^enabled = true/enabled = false/' -e 's/^threads = .*/threads = 0/' \
    kits-template/hospital-a/node.toml > "kits-template/hospital-a/$name.toml"  # beside its kit's files
  local started
  started=$(date +%s)
  "$bin/node/fedrad-node" train-local --config "kits-template/hospital-a/$name.toml" --model ctnet --size 32 \
    --classes "$classes" --epochs "$pretrain_epochs" --batch 64 --lr 0.05 --momentum 0.9 --save "$name.safetensors" \
    > "$name.log" 2>&1 || { echo "bench: pretraining on $name failed:"; cat "$name.log"; exit 1; }
  echo "pretrained on $name ($pretrain_epochs epochs, $(($(date +%s) - started)) s):" \
    "$(grep -E '^held-out accuracy' "$name.log" | head -1)"
}
# Fashion-MNIST: 8-bit images, window 0..255.
case " $starts " in *" fmnist"*)
  [ -d fmnist ] || quiet "$bin/tools/fedrad" import --idx-images $fm/train-images-idx3-ubyte.gz \
    --idx-labels $fm/train-labels-idx1-ubyte.gz --limit "$pretrain_images" --out fmnist
  pretrain fmnist "$work/fmnist" 127.5 255 10 ;;
esac
case " $starts " in *" public-ct "*)
  [ -d public ] || quiet "$bin/tools/fedrad" synth --sites 1 --names public --seed 99 --patients "$public_patients" \
    --images 1 --out .
  pretrain public-ct "$work/public" 40 400 2 ;;
esac

run() {
  local start="$1" dir="run-$1"
  rm -rf "$dir"
  mkdir -p "$dir"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  sed "s/127.0.0.1:50051/127.0.0.1:$port/" plan-template.toml > "$dir/plan.toml"
  if [ "$start" != random ]; then
    local weights="${start%-frozen}.safetensors"
    cp "$weights" "$dir/"
    sed -i "s/^# init = .*/init = \"$weights\"/" "$dir/plan.toml"
  fi
  if [ "$start" = fmnist-frozen ]; then
    sed -i 's/^# freeze = .*/freeze = ["conv1", "norm1", "conv2", "norm2", "conv3", "norm3"]/' "$dir/plan.toml"
  fi
  (cd "$dir" && quiet "$bin/tools/fedrad" provision --plan plan.toml --out kits --data-root ../data)
  for s in $sites; do
    sed -i -e 's/^threads = 0/threads = 1/' -e "s/^epsilon_max = .*/epsilon_max = $epsilon/" \
      -e "s/^target_epsilon = .*/target_epsilon = $target/" -e 's/^normalize = .*/normalize = "zscore"/' \
      "$dir/kits/$s/node.toml"
  done
  local started
  started=$(date +%s)
  (cd "$dir" && "$bin/coordinator/fedrad-coordinator" serve --config kits/coordinator/coordinator.toml \
    > coordinator.out 2> coordinator.log) &
  local coord=$!
  sleep 1
  local pids=()
  for s in $sites; do
    (cd "$dir/kits/$s" && exec "$bin/node/fedrad-node" run --config node.toml) > "$dir/$s.log" 2>&1 &
    pids+=("$!")
  done
  wait "$coord" || { echo "bench: the coordinator of '$start' failed:"; tail -20 "$dir/coordinator.log"; exit 1; }
  for p in "${pids[@]}"; do wait "$p" || true; done
  local model
  model=$(sqlite3 "$dir/kits/coordinator/state/state.db" "SELECT sha256 FROM models ORDER BY round DESC LIMIT 1")
  # The first round whose global model predicts more than one class at
  # every site, from the nodes' exact local evaluations (their logs).
  local learns="" r
  for r in $(seq 1 "$rounds"); do
    if ! cat "$dir"/hospital-*.log | grep -q "round $r: the global model on this site's validation images: every one"; then
      learns=$r
      break
    fi
  done
  echo "$start: wall_s=$(($(date +%s) - started)) rounds=$rounds epsilon=$epsilon model=${model:0:12}" \
    "first_round_not_one_class=${learns:-none}"
  for s in $sites; do
    "$bin/node/fedrad-node" evaluate --config "$dir/kits/$s/node.toml" --json --bootstrap 200 \
      --model "$dir/kits/coordinator/state/models/$model.safetensors" 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)["metrics"]
print("  %s %s: accuracy %.3f, balanced accuracy %.3f, ROC AUC %.3f" % (sys.argv[1], sys.argv[2],
      m["accuracy"]["value"], m["balanced_accuracy"]["value"], m["roc_auc"]["value"]))' "$start" "$s"
  done
}
for start in $starts; do run "$start"; done
