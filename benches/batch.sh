#!/usr/bin/env bash
# The batch path against single orders: wrk (64 connections, 10 s) posting the same order
# (2 lines, cod) alone to POST /api/v1/stores/W/orders, or 10 or 100 at a time to
# POST /api/v1/stores/W/orders/batch; a fresh data directory per run, 3 rounds alternated.
# Needs wrk (apt-get install wrk) and `cargo build --release`. Results in BENCHMARKS.md.
set -u
G=${GODOWN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/godown}
W=$(mktemp -d)
python3 - "$W" <<'PY'
import json, sys
d = sys.argv[1]
order = {"customer_phone": "9876543210", "customer_name": "Load", "delivery_address": "Loopback",
         "payment_method": "cod", "items": [{"product_id": "P1", "quantity": 1}, {"product_id": "P2", "quantity": 2}]}
for n in (1, 10, 100):
    body, path = (json.dumps(order), "/api/v1/stores/W/orders") if n == 1 else \
        (json.dumps({"orders": [order] * n}), "/api/v1/stores/W/orders/batch")
    open(f"{d}/b{n}.lua", "w").write(
        f'wrk.method="POST"\nwrk.path="{path}"\nwrk.headers["Content-Type"]="application/json"\nwrk.body=[[{body}]]\n')
PY
for round in 1 2 3; do
  for n in 1 10 100; do
    rm -rf "$W/db"; GODOWN_ADMIN_TOKEN=s "$G" serve --listen 127.0.0.1:8300 --data-dir "$W/db" >/dev/null 2>&1 &
    until curl -fs 127.0.0.1:8300/ready >/dev/null; do sleep 0.1; done
    A='authorization: Bearer s'; J='content-type: application/json'
    curl -fs -XPUT 127.0.0.1:8300/api/v1/stores/W -H "$A" -H "$J" -d '{"name":"w"}' >/dev/null
    for p in P1 P2; do
      curl -fs -XPUT "127.0.0.1:8300/api/v1/inventory/products/W/$p" -H "$A" -H "$J" \
        -d '{"product_name":"x","unit":"pieces","unit_price":10,"stock":900000000}' >/dev/null
    done
    out=$(wrk -t2 -c64 -d10s -s "$W/b$n.lua" http://127.0.0.1:8300 2>&1)
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
    # Every order takes 1 of P1: the stock sold checks the count.
    sold=$(curl -fs 127.0.0.1:8300/api/v1/inventory/products/W/P1 |
      python3 -c "import json,sys; print(900000000-json.load(sys.stdin)['on_hand'])")
    echo "round=$round batch=$n req/s=$rps orders/s=$(python3 -c "print(round($rps*$n))") P1_sold=$sold non2xx=${non2xx:-0}"
    pkill -f "listen 127.0.0.1:8300"; sleep 0.5
  done
done
rm -rf "$W"
