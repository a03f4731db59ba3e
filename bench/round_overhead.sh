#!/usr/bin/env bash
# Round overhead of the coordinator: a real coordinator and NODES real
# fedrad-node processes with trainer = "noop" (no data, no training) on
# 127.0.0.1 over mutual TLS, a "flat" model of PARAMS float32 parameters,
# 7 rounds of FedAvg, each followed by its federated evaluation. Prints, as
# its last line,
#   cycle_s=<median of rounds 2-6> round_s=<median of rounds 2-6> coordinator_rss_mib=<peak RSS>
# cycle_s: from a round's start to the next round's start (what a user waits
# for: the training round, the new model to every node, its evaluation);
# round_s: from a round's start to its close (tasks out, updates in, the
# aggregate committed). Both from the rounds table's timestamps; the peak RSS
# from /usr/bin/time -v. Usage: bench/round_overhead.sh PARAMS NODES [build-dir]
# PARAMS: an integer with an optional K, M or G suffix (10M, 268M).
# UPDATE_DTYPE=bfloat16 or float16 sends updates at half size (default float32).
# CHUNK_BYTES=N sets the plan's chunk_bytes (default 1 MiB).
# MAX_STREAMS=K sets the coordinator's max_concurrent_streams (default 16).
# Logs and databases stay in the workspace (FEDRAD_BENCH_WORK, or a new
# temporary folder); model files and spooled updates are deleted at the end.
# SWARM=1 runs the nodes as one fedrad-bench-swarm process (a full node
# runtime, TLS connection and node.db per site, without a LibTorch process
# each), which is how 1,000 nodes fit on one machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 2 ] || { echo "usage: $0 PARAMS NODES [build-dir]" >&2; exit 2; }
params_arg="$1"
nodes="$2"
bin="${3:-$root/build}"
case "$params_arg" in
  *K) params=$(( ${params_arg%K} * 1000 )) ;;
  *M) params=$(( ${params_arg%M} * 1000000 )) ;;
  *G) params=$(( ${params_arg%G} * 1000000000 )) ;;
  *) params="$params_arg" ;;
esac
[[ "$params" =~ ^[0-9]+$ && "$nodes" =~ ^[0-9]+$ && "$nodes" -ge 1 ]] || { echo "bad PARAMS or NODES" >&2; exit 2; }
work="${FEDRAD_BENCH_WORK:-$(mktemp -d)}"
mkdir -p "$work"
cd "$work"
rm -rf kits kits-ca logs plan.toml
mkdir -p logs
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
{
  cat <<PLAN
[federation]
name = "overhead"
rounds = 7
min_nodes = $nodes
round_deadline_s = 1200
eval_deadline_s = 600
start_grace_s = 600
seed = 1
update_dtype = "${UPDATE_DTYPE:-float32}"
chunk_bytes = ${CHUNK_BYTES:-1048576}

[model]
architecture = "flat"
parameters = $params

[training]
local_epochs = 1

[coordinator]
address = "127.0.0.1:$port"
hosts = ["127.0.0.1"]
PLAN
  for i in $(seq -f "%04g" 1 "$nodes"); do printf '\n[[site]]\nname = "node-%s"\n' "$i"; done
} > plan.toml
"$bin/tools/fedrad" provision --plan plan.toml --out kits > logs/provision.log 2>&1
for d in kits/node-*; do
  sed -i 's/^trainer = "torch"/trainer = "noop"/; s/^threads = 0/threads = 1/; s/^max_backoff_s = 10/max_backoff_s = 1/' "$d/node.toml"
done
[ -n "${MAX_STREAMS:-}" ] && sed -i "s/^max_concurrent_streams = .*/max_concurrent_streams = $MAX_STREAMS/" kits/coordinator/coordinator.toml
/usr/bin/time -v ${FEDRAD_BENCH_WRAP:-} "$bin/coordinator/fedrad-coordinator" serve --config kits/coordinator/coordinator.toml \
  > logs/coordinator.out 2> logs/coordinator.log &
coord=$!
for _ in $(seq 1 600); do
  grep -q "listening on" logs/coordinator.log 2>/dev/null && break
  sleep 0.1
done
pids=()
if [ "${SWARM:-0}" = 1 ]; then
  "$bin/bench/fedrad-bench-swarm" kits/node-* > logs/swarm.log 2>&1 &
  pids+=("$!")
else
  for d in kits/node-*; do
    (cd "$d" && exec "$bin/node/fedrad-node" run --config node.toml) > "logs/$(basename "$d").log" 2>&1 &
    pids+=("$!")
  done
fi
status=0
wait "$coord" || status=$?
nodes_status=0
for p in "${pids[@]}"; do wait "$p" || nodes_status=$?; done
[ "${SWARM:-0}" = 1 ] && tail -1 logs/swarm.log
[ "$nodes_status" -eq 0 ] || echo "warning: a node exited with status $nodes_status; logs in $work/logs" >&2
if [ "$status" -ne 0 ]; then
  tail -20 logs/coordinator.log
  echo "the coordinator failed (status $status); logs in $work/logs" >&2
  exit 1
fi
round_s=$(sqlite3 kits/coordinator/state/state.db \
  "SELECT (closed_at_ms - started_at_ms) / 1000.0 FROM rounds WHERE status = 'applied' AND round BETWEEN 2 AND 6 ORDER BY 1" |
  awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; print v[int((NR + 1) / 2)] }')
cycle_s=$(sqlite3 kits/coordinator/state/state.db \
  "SELECT (b.started_at_ms - a.started_at_ms) / 1000.0 FROM rounds a JOIN rounds b ON b.round = a.round + 1 \
   WHERE a.status = 'applied' AND b.status = 'applied' AND a.round BETWEEN 2 AND 6 ORDER BY 1" |
  awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; print v[int((NR + 1) / 2)] }')
rss_kib=$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' logs/coordinator.log)
# Keep the logs and databases; the model files (up to a GiB each, per round
# and per node) would fill the disk over a matrix of runs.
find kits -name '*.safetensors' -delete
rm -rf kits/coordinator/state/spool
echo "params=$params nodes=$nodes update_dtype=${UPDATE_DTYPE:-float32} model_mib=$(( params * 4 / 1048576 )) workspace=$work"
echo "cycle_s=$cycle_s round_s=$round_s coordinator_rss_mib=$(( rss_kib / 1024 ))"
