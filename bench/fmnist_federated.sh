#!/usr/bin/env bash
# Federated Fashion-MNIST: 4 sites, Dirichlet(alpha) label skew, the
# Tramer & Boneh CNN, FedAvg through the real coordinator and nodes over
# mutual TLS on 127.0.0.1; the final global model is scored on the 10,000
# test images. Usage: bench/fmnist_federated.sh [rounds] [alpha] [build-dir]
# Environment: EPSILON (per-site image-level DP budget at delta 1e-5, reached
# at the last round; "none" for non-private, the default), CLIP (DP clip norm,
# 0.1), LOCAL_EPOCHS (1), BATCH (64; under DP the expected batch), LR (0.05),
# MOMENTUM (0.9), STRATEGY (fedavg), SERVER_LR (1), SERVER_MOMENTUM (0.9),
# VALIDATION (0.1: each site's held-out share of patients, used only for the
# per-round log; the score is on the 10,000 test images), LIMIT and
# TEST_LIMIT (import at most this many training / test images; all by
# default; bench/smoke.sh runs a few hundred).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/lib.sh"
bash "$root/scripts/setup.sh" --bench  # Debian's dataset-fashion-mnist
rounds="${1:-30}"
alpha="${2:-1.0}"
bin="${3:-$root/build}"
epsilon="${EPSILON:-none}"
clip="${CLIP:-0.1}"
local_epochs="${LOCAL_EPOCHS:-1}"
batch="${BATCH:-64}"
lr="${LR:-0.05}"
momentum="${MOMENTUM:-0.9}"
strategy="${STRATEGY:-fedavg}"
server_lr="${SERVER_LR:-1}"
server_momentum="${SERVER_MOMENTUM:-0.9}"
validation="${VALIDATION:-0.1}"
limit=()
[ -n "${LIMIT:-}" ] && limit+=(--limit "$LIMIT")
test_limit=()
[ -n "${TEST_LIMIT:-}" ] && test_limit+=(--limit "$TEST_LIMIT")
work="${FEDRAD_BENCH_WORK:-$(mktemp -d)}"
mkdir -p "$work"
fm=/usr/share/datasets/fashion-mnist
echo "workspace: $work"
cd "$work"
[ -d train ] || quiet "$bin/tools/fedrad" import --idx-images $fm/train-images-idx3-ubyte.gz \
  --idx-labels $fm/train-labels-idx1-ubyte.gz "${limit[@]}" --out train
[ -d test ] || quiet "$bin/tools/fedrad" import --idx-images $fm/t10k-images-idx3-ubyte.gz \
  --idx-labels $fm/t10k-labels-idx1-ubyte.gz "${test_limit[@]}" --out test
rm -rf sites kits kits-ca
"$bin/tools/fedrad" partition --data train --sites 4 --mode dirichlet --alpha "$alpha" --seed 1 --out sites
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > plan.toml <<PLAN
[federation]
name = "fmnist"
rounds = $rounds
min_nodes = 4
round_deadline_s = 1200
start_grace_s = 60
seed = 1

[model]
architecture = "tbcnn28"
input_size = 28
num_classes = 10

[training]
local_epochs = $local_epochs
batch_size = $batch
learning_rate = $lr
momentum = $momentum

[strategy]
name = "$strategy"
server_learning_rate = $server_lr
server_momentum = $server_momentum

[coordinator]
address = "127.0.0.1:$port"
hosts = ["127.0.0.1"]

[[site]]
name = "hospital-a"
[[site]]
name = "hospital-b"
[[site]]
name = "hospital-c"
[[site]]
name = "hospital-d"
PLAN
quiet "$bin/tools/fedrad" provision --plan plan.toml --out kits --data-root sites
for s in hospital-a hospital-b hospital-c hospital-d; do
  # 8-bit images: the window maps 0..255 to [0, 1]; four nodes share two cores.
  sed -i "s/^window_center = .*/window_center = 127.5/; s/^window_width = .*/window_width = 255/; s/^threads = 0/threads = 1/; s/^loader_threads = 0/loader_threads = 1/; s/^validation_fraction = .*/validation_fraction = $validation/" kits/$s/node.toml
  if [ "$epsilon" = none ]; then
    sed -i 's/^enabled = true/enabled = false/' kits/$s/node.toml
  else
    sed -i "s/^unit = .*/unit = \"image\"/; s/^epsilon_max = .*/epsilon_max = $epsilon/; s/^target_epsilon = .*/target_epsilon = $epsilon/; s/^clip_norm = .*/clip_norm = $clip/" kits/$s/node.toml
  fi
done
start=$(date +%s)
"$bin/coordinator/fedrad-coordinator" serve --config kits/coordinator/coordinator.toml > coordinator.out 2> coordinator.log &
coord=$!
sleep 1
for s in hospital-a hospital-b hospital-c hospital-d; do
  (cd kits/$s && exec "$bin/node/fedrad-node" run --config node.toml) > $s.log 2>&1 &
done
wait $coord
wait
elapsed=$(( $(date +%s) - start ))
grep -E "round [0-9]+/[0-9]+: " coordinator.log | sed 's/^.*info: //' | tail -3
grep -E "^eps" coordinator.out || true
sha=$(sqlite3 kits/coordinator/state/state.db "SELECT sha256 FROM models ORDER BY round DESC LIMIT 1")
result=$("$bin/node/fedrad-node" evaluate --model kits/coordinator/state/models/$sha.safetensors --data test \
  --size 28 --classes 10 --window-center 127.5 --window-width 255 --bootstrap 200 |
  awk '/^accuracy / { print "accuracy " $2 " 95% CI " $3 " " $4 }')
echo "rounds=$rounds alpha=$alpha epsilon=$epsilon clip=$clip local_epochs=$local_epochs batch=$batch lr=$lr momentum=$momentum strategy=$strategy server_lr=$server_lr server_momentum=$server_momentum validation=$validation elapsed_s=$elapsed final_model=$sha"
echo "test $result"
