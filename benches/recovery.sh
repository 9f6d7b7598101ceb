#!/usr/bin/env bash
# Recovery at scale, one run: 1,000,000 products over 1,000 stores (in snapshots) plus
# 1,000,000 order records in the WAL after them, then kill -9 and a timed restart.
#
#   bash benches/recovery.sh            # ≈ 3–5 min on a 2-core machine; needs ~3 GB in /tmp
#
# Prints the restart's recovery report (records replayed, milliseconds), the time until
# /ready answers 200, and the RSS (at /ready and 10 s later) with the products only, live
# before the kill, and after recovery. GODOWN=path runs a given build. Everything runs on 127.0.0.1:8092 with
# data in a temporary directory that is removed at the end (kept with KEEP=1).
# STORES, PRODUCTS and ORDERS change the sizes.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ADDR=127.0.0.1:8092
STORES=${STORES:-1000}
PRODUCTS=${PRODUCTS:-1000}
ORDERS=${ORDERS:-1000000}
export GODOWN_ADMIN_TOKEN=recovery-bench-admin
TMP=$(mktemp -d /tmp/godown-recovery.XXXXXX)
PID=

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
cleanup() {
    [[ -n "$PID" ]] && kill -9 "$PID" 2>/dev/null || true
    if [[ -n "${KEEP:-}" ]]; then echo "kept: $TMP/db" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# GODOWN=path runs that binary instead of building this checkout (to compare two builds).
if [[ -z "${GODOWN:-}" ]]; then
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
    GODOWN=$ROOT/target/release/godown
fi

start() { # extra serve args...
    "$GODOWN" serve --listen "$ADDR" --data-dir "$TMP/db" "$@" >>"$TMP/server.log" 2>&1 &
    PID=$!
    local t0=$EPOCHREALTIME
    until curl -sf "http://$ADDR/ready" >/dev/null; do
        kill -0 "$PID" 2>/dev/null || {
            tail -n 20 "$TMP/server.log" >&2
            exit 1
        }
        sleep 0.05
    done
    READY_S=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
}
rss_mb() { echo $(($(ps -o rss= -p "$PID") / 1024)); }

# No snapshot may happen while the orders are written: every one of them must be replayed.
NO_SNAPSHOTS=(--snapshot-every-records 100000000 --snapshot-interval-seconds 100000)

log "1. loading $STORES stores × $PRODUCTS products through the API"
start
"$GODOWN" load --target "http://$ADDR" --scenario throughput --stores "$STORES" \
    --products "$PRODUCTS" --requests 1 --quiet >/dev/null
log "   loaded; stopping politely so that every store is snapshotted"
kill -TERM "$PID"
wait "$PID" || true

log "2. writing $ORDERS orders to the WAL (no snapshots)"
start "${NO_SNAPSHOTS[@]}"
echo "products only: ready after ${READY_S} s; RSS $(rss_mb) MB"
# Recovery's reading buffers are given back to the OS over the next seconds.
sleep 10
echo "products only, 10 s later: RSS $(rss_mb) MB"
"$GODOWN" load --target "http://$ADDR" --scenario throughput --stores "$STORES" \
    --products "$PRODUCTS" --requests "$ORDERS" --skip-setup --quiet --json >"$TMP/orders.json"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("   %d orders at %.0f/s, failed %s" % (r["requests"], r["requests_per_s"], r["failed"]))' "$TMP/orders.json" >&2
echo "live with the same data (before kill -9): RSS $(rss_mb) MB"
log "   kill -9"
kill -9 "$PID"
wait "$PID" 2>/dev/null || true
PID=
du -sh "$TMP/db" >&2

log "3. restart and recover"
: >"$TMP/server.log"
start "${NO_SNAPSHOTS[@]}"
grep -E "recovery done" "$TMP/server.log" | sed -e 's/\x1b\[[0-9;]*m//g' >&2
echo "products + $ORDERS records: ready after ${READY_S} s (process start to /ready = 200); RSS $(rss_mb) MB"
sleep 10
echo "RSS 10 s later: $(rss_mb) MB"
