#!/usr/bin/env bash
# Run from anywhere after `cargo build --release`; needs nginx (scripts/nginx.sh). Results in BENCHMARKS.md.
# The cutover of a store move under load: a region of 3 processes behind nginx
# (scripts/cluster.sh), one store of 10,000 products taking orders from `godown load` through
# nginx (32 clients, 20 s); after 8 s the store moves to another node (`godown cluster move`).
# Per round: the move's report (copy_ms, cutover_ms, records tailed) and the load's totals
# (orders/s, 503s, p99). 3 rounds, each on a fresh region.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
G=${GODOWN:-$here/target/release/godown}
export GODOWN=$G CLUSTER_PORT=8300 GODOWN_ADMIN_TOKEN=move-bench-token
store=LOAD-S0000
for round in 1 2 3; do
  dir=/tmp/godown-move-bench
  bash "$here/scripts/cluster.sh" stop $dir >/dev/null 2>&1; rm -rf $dir
  bash "$here/scripts/cluster.sh" start $dir 3 >/dev/null
  $G load --target http://127.0.0.1:8300 --scenario throughput --stores 1 --products 10000 \
    --clients 32 --duration 20 --json > $dir/load.json 2>/dev/null &
  load=$!
  sleep 8
  moved=""
  for node in n2 n3 n1; do
    if out=$($G cluster move --nodes $dir/nodes.json --store $store --to $node \
        --nginx-conf $dir/nginx.conf --nginx-pid $dir/nginx.pid 2>$dir/move.err); then
      moved=$out; break
    fi
  done
  wait $load
  python3 - "$round" "$moved" $dir/load.json <<'PY'
import json, sys
rnd, moved, load = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
m = json.loads(moved) if moved else {}
print(f"round {rnd}: move {m.get('from')}->{m.get('to')} copy_ms={m.get('copy_ms')} "
      f"cutover_ms={m.get('cutover_ms')} orders={m.get('orders')} answers={m.get('answers')} "
      f"tail_rounds={m.get('tail_rounds')} records live/frozen={m.get('records_live')}/{m.get('records_frozen')} "
      f"| load {round(load['requests_per_s'])} req/s ok={load['ok']} failed={load['failed']} "
      f"p50={load['latency_us']['p50']}us p99={load['latency_us']['p99']}us max={load['latency_us'].get('max')}us")
PY
  [[ -n $moved ]] || cat $dir/move.err
  bash "$here/scripts/cluster.sh" stop $dir >/dev/null
done
