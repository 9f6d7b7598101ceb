#!/usr/bin/env bash
# The server's CPU per durable order: `godown load --scenario throughput` (64 clients) against
# a fresh `godown serve`, reading the server's user + system CPU time (/proc/PID/stat) when
# the load's set-up ends and when the load ends: the work an order costs rather than the
# wall time (it still moves with the box's other tenants: 90–150 µs in one half hour here).
# Alternates the binaries given (A/B), ROUNDS each; results in BENCHMARKS.md.
#   bash benches/cpu.sh target/release/godown /tmp/godown-b    [ROUNDS=3 DURATION=20]
set -u
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-20}; PORT=${PORT:-8311}
SCENARIO=${SCENARIO:-throughput} # or trivial (GET /health): the HTTP floor per request
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
TICK=$(getconf CLK_TCK)
cpu_s() { awk -v t="$TICK" '{printf "%.3f", ($14 + $15) / t}' "/proc/$1/stat"; }
for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    rm -rf "$W/db"
    GODOWN_ADMIN_TOKEN=s "$bin" serve --listen "127.0.0.1:$PORT" --data-dir "$W/db" >/dev/null 2>&1 &
    pid=$!
    until curl -fs "127.0.0.1:$PORT/ready" >/dev/null; do sleep 0.1; done
    start=""
    while IFS= read -r line; do
      case "$line" in
        "set-up done"*) start=$(cpu_s "$pid") ;;
        *" ok, "*) answers=$line ;;
        *[0-9]" "*[0-9]" "*[0-9]" "*[0-9]" "*[0-9]" "*[0-9]" "*[0-9]" "*[0-9]) row=$line ;;
      esac
    done < <(GODOWN_ADMIN_TOKEN=s "$bin" load --target "http://127.0.0.1:$PORT" \
      --scenario "$SCENARIO" --clients 64 --duration "$DURATION" 2>&1)
    end=$(cpu_s "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null
    read -r reqs rps p50 _ p99 _ <<<"$row"
    echo "round=$round bin=$bin $SCENARIO requests=$reqs req/s=$rps p50_us=$p50 p99_us=$p99" \
      "server_cpu_us_per_request=$(python3 -c "print(round(($end-$start)*1e6/$reqs, 1))")" \
      "($answers)"
  done
done
