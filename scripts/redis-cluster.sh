#!/usr/bin/env bash
# A local Redis Cluster for trying the service (and its load tests) on one:
# three masters and three replicas on 127.0.0.1, nothing persisted.
#
#   bash scripts/redis-cluster.sh start [BASE_PORT]   # ports BASE..BASE+5 (default 7100)
#   bash scripts/redis-cluster.sh stop  [BASE_PORT]
#   bash scripts/redis-cluster.sh nodes [BASE_PORT]   # the COMMERCE__REDIS__CLUSTER_NODES value
#
# Then run the service with COMMERCE__REDIS__CLUSTER_NODES="$(bash scripts/redis-cluster.sh nodes)"
# (or the load-test runner with --set redis.cluster_nodes=...). Bus ports are
# BASE+1000.., so keep BASE below 64000.
set -euo pipefail
cmd="${1:-}"
base="${2:-7100}"
dir="${REDIS_CLUSTER_DIR:-/tmp/commerce-redis-cluster-$base}"
ports=()
for i in 0 1 2 3 4 5; do ports+=($((base + i))); done

nodes() {
  local out=()
  for p in "${ports[@]}"; do out+=("127.0.0.1:$p"); done
  (IFS=,; echo "${out[*]}")
}

case "$cmd" in
  start)
    command -v redis-server >/dev/null || { echo "redis-server is not installed (bash scripts/deps.sh)" >&2; exit 1; }
    mkdir -p "$dir"
    for p in "${ports[@]}"; do
      if redis-cli -p "$p" ping >/dev/null 2>&1; then
        echo "port $p already answers; stop it first (bash scripts/redis-cluster.sh stop $base)" >&2
        exit 1
      fi
      mkdir -p "$dir/$p"
      rm -f "$dir/$p/nodes.conf"
      redis-server --port "$p" --cluster-port $((p + 1000)) --bind 127.0.0.1 \
        --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 1000 \
        --save "" --appendonly no --dir "$dir/$p" --daemonize yes \
        --logfile "$dir/$p/redis.log" --pidfile "$dir/$p/redis.pid"
    done
    for p in "${ports[@]}"; do
      for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.05; done
    done
    addrs=()
    for p in "${ports[@]}"; do addrs+=("127.0.0.1:$p"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
    for _ in $(seq 300); do
      ok=1
      for p in "${ports[@]}"; do
        redis-cli -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || ok=0
      done
      [ "$ok" = 1 ] && break
      sleep 0.1
    done
    [ "$ok" = 1 ] || { echo "the cluster did not reach cluster_state:ok" >&2; exit 1; }
    echo "Redis Cluster up: COMMERCE__REDIS__CLUSTER_NODES=$(nodes)"
    ;;
  stop)
    for p in "${ports[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
    rm -rf "$dir"
    ;;
  nodes)
    nodes
    ;;
  *)
    sed -n '2,11p' "$0"
    exit 2
    ;;
esac
