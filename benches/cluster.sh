#!/usr/bin/env bash
# Run from anywhere after `cargo build --release`; needs nginx (scripts/nginx.sh). Results in BENCHMARKS.md.
# direct vs nginx->1 node vs nginx->3 nodes, godown load throughput, 3 rounds alternated
set -u
G=${GODOWN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/godown}
export GODOWN_ADMIN_TOKEN=secret
run() { # name target
  $G load --target "$2" --scenario throughput --clients 64 --duration 10 --json 2>/dev/null | python3 -c "
import json,sys; r=json.load(sys.stdin); print('$1', round(r['requests_per_s']), r['ok'], r['short'], r['failed'], r['latency_us']['p50'], r['latency_us']['p99'])" 2>/dev/null || echo "$1 failed"
}
start_nodes() { # n
  rm -rf /tmp/sc; mkdir -p /tmp/sc; nodes=""
  for k in $(seq 1 $1); do
    $G serve --listen 127.0.0.1:$((8200+k)) --data-dir /tmp/sc/n$k > /dev/null 2>&1 &
    nodes+="${nodes:+,}{\"name\":\"n$k\",\"addr\":\"127.0.0.1:$((8200+k))\"}"
  done
  echo "{\"listen\":\"127.0.0.1:8200\",\"nodes\":[$nodes]}" > /tmp/sc/nodes.json
  $G cluster nginx --nodes /tmp/sc/nodes.json --out /tmp/sc/nginx.conf
  for k in $(seq 1 $1); do until curl -fs 127.0.0.1:$((8200+k))/ready >/dev/null; do sleep 0.1; done; done
}
stop_all() { [ -f /tmp/sc/nginx.pid ] && kill -QUIT $(cat /tmp/sc/nginx.pid); pkill -f "godown serve --listen 127.0.0.1:82"; sleep 1; }
for round in 1 2 3; do
  start_nodes 1; run "direct-r$round" http://127.0.0.1:8201; stop_all
  start_nodes 1; nginx -p /tmp/sc -c /tmp/sc/nginx.conf; sleep 0.3; run "nginx1-r$round" http://127.0.0.1:8200; stop_all
  start_nodes 3; nginx -p /tmp/sc -c /tmp/sc/nginx.conf; sleep 0.3; run "nginx3-r$round" http://127.0.0.1:8200; stop_all
done
