#!/usr/bin/env bash
# A region on one machine: N godown processes on loopback behind Debian's nginx.
#
#   scripts/cluster.sh start DIR [N]   # N processes (default 3); node n1 gets the demo data
#   scripts/cluster.sh stop DIR        # stops nginx and every process started in DIR
#   scripts/cluster.sh move DIR STORE NODE   # moves a store to node NODE (n2…) while live
#
# nginx listens on 127.0.0.1:$CLUSTER_PORT (default 8080) and node nK on the port after
# it plus K-1. The nodes file ($DIR/nodes.json) pins the three demo stores to n1; any
# other store goes to a node by consistent hashing of its id. The configuration is written
# by `godown cluster nginx --nodes $DIR/nodes.json`. Logs: $DIR/*.log, $DIR/error.log.
# The nodes share one order id key ($DIR/order-ids.key, copied into each data directory)
# and node nK issues order numbers of partition K-1: an order keeps its id when its store
# moves to another node (`godown cluster move`, which also pins it there and reloads nginx).
# Uses target/release/godown (build it first: cargo build --release) or $GODOWN.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[[ -n $cmd && -n $dir ]] || { echo "usage: $0 start|stop|move DIR …" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
godown=${GODOWN:-$here/target/release/godown}
port=${CLUSTER_PORT:-8080}
# Every node takes the same admin token (from the environment, or this demo one).
export GODOWN_ADMIN_TOKEN=${GODOWN_ADMIN_TOKEN:-cluster-admin-token}

stop() {
  if [[ -f $dir/nginx.pid ]]; then
    kill -QUIT "$(cat "$dir/nginx.pid")" 2>/dev/null || true
  fi
  for pidfile in "$dir"/n*.pid; do
    [[ -f $pidfile ]] || continue
    kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

case $cmd in
  stop) stop; echo "cluster in $dir stopped" ;;
  move)
    store=${3:-}
    node=${4:-}
    [[ -n $store && -n $node ]] || { echo "usage: $0 move DIR STORE NODE" >&2; exit 2; }
    "$godown" cluster move --nodes "$dir/nodes.json" --store "$store" --to "$node" \
      --nginx-conf "$dir/nginx.conf" --nginx-pid "$dir/nginx.pid"
    ;;
  start)
    n=${3:-3}
    [[ -x $godown ]] || { echo "no $godown: run cargo build --release first" >&2; exit 1; }
    nginx=$("$here/scripts/nginx.sh" | tail -n 1)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    nodes=""
    for k in $(seq 1 "$n"); do
      stores='[]'
      if [[ $k -eq 1 ]]; then
        stores='["STORE-01K8NJ40V9KFKX2Y2FMK466WFH", "STORE-01K8NJ2GK6R7RXHFJZF6K32KXF", "STORE-01K8NJW1AKNX2WGKSZ30XV6W9P"]'
      fi
      nodes+="${nodes:+,}"$'\n'"  {\"name\": \"n$k\", \"addr\": \"127.0.0.1:$((port + k))\", \"data_dir\": \"$dir/n$k\", \"stores\": $stores}"
    done
    printf '{"listen": "127.0.0.1:%s", "nodes": [%s\n]}\n' "$port" "$nodes" > "$dir/nodes.json"
    "$godown" cluster nginx --nodes "$dir/nodes.json" --out "$dir/nginx.conf"
    [[ -f $dir/order-ids.key ]] || head -c 32 /dev/urandom > "$dir/order-ids.key"
    for k in $(seq 1 "$n"); do
      mkdir -p "$dir/n$k"
      [[ -f $dir/n$k/order-ids.key ]] || cp "$dir/order-ids.key" "$dir/n$k/order-ids.key"
    done
    for k in $(seq 1 "$n"); do
      demo=()
      [[ $k -eq 1 ]] && demo=(--demo)
      "$godown" serve --listen "127.0.0.1:$((port + k))" --data-dir "$dir/n$k" "${demo[@]}" \
        --cluster-proxy "127.0.0.1:$port" --order-partition "$((k - 1))" \
        > "$dir/n$k.out" 2> "$dir/n$k.log" &
      echo $! > "$dir/n$k.pid"
    done
    for k in $(seq 1 "$n"); do
      for _ in $(seq 1 600); do
        curl -fsS "http://127.0.0.1:$((port + k))/ready" >/dev/null 2>&1 && break
        sleep 0.1
      done
    done
    "$nginx" -p "$dir" -c "$dir/nginx.conf"
    echo "nginx on http://127.0.0.1:$port in front of $n godown processes (ports $((port + 1))-$((port + n))); admin token: $GODOWN_ADMIN_TOKEN"
    ;;
  *) echo "usage: $0 start|stop|move DIR …" >&2; exit 2 ;;
esac
