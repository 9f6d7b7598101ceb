#!/usr/bin/env bash
# Side-by-side benchmark: godown against PostgreSQL and Redis, driven by the same
# closed-loop generator (`godown load`), same scenarios, same clients, same histogram.
#
#   bash benches/peers/run.sh                     # 3 runs × 10 s, 64 clients
#   RUNS=1 DURATION=5 bash benches/peers/run.sh   # a quick look
#   RUNS=1 DURATION=5 SYSTEMS=postgres SCENARIOS="throughput flash" bash benches/peers/run.sh
#
# Environment: CLIENTS (64), DURATION (10 s), RUNS (3), OUT (benches/peers/results/<date>/),
# SYSTEMS (space-separated, of "godown postgres redis"; all by default) and SCENARIOS (of
# "throughput flash mixed"; all by default). Only the selected systems are installed and
# started; godown's `trivial` run (the HTTP ceiling) comes with godown.
# Runs as root: installs postgresql/redis-server with apt-get when missing, runs PostgreSQL
# as the `postgres` user. Everything lives in one temp dir, removed on exit; every process
# started here is stopped on exit, failure included. Ports: PostgreSQL 5433, Redis 6380,
# godown 8090, all on 127.0.0.1.
#
# Two durability columns:
#   fsync    godown --durability flush | PostgreSQL synchronous_commit=on | Redis appendfsync always
#   relaxed  godown --durability none  | PostgreSQL synchronous_commit=off | Redis appendfsync everysec
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)

CLIENTS=${CLIENTS:-64}
DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
read -r -a SCENARIOS <<<"${SCENARIOS:-throughput flash mixed}"
read -r -a SYSTEMS <<<"${SYSTEMS:-godown postgres redis}"
PG_PORT=5433
REDIS_PORT=6380
GODOWN_ADDR=127.0.0.1:8090
FLASH_STOCK=100000000
export GODOWN_ADMIN_TOKEN=${GODOWN_ADMIN_TOKEN:-peers-bench-admin}

if [[ -z "${OUT:-}" ]]; then
    OUT=benches/peers/results/$(date +%Y-%m-%d)
    # Never mix two invocations' runs into one set of medians.
    if [[ -d "$OUT" && -n "$(ls -A "$OUT" 2>/dev/null)" ]]; then
        OUT=benches/peers/results/$(date +%Y-%m-%d-%H%M%S)
    fi
fi

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for s in "${SCENARIOS[@]}"; do
    [[ $s == @(throughput|flash|mixed|batch) ]] || die "unknown scenario $s in SCENARIOS (throughput flash mixed batch)"
done
for s in "${SYSTEMS[@]}"; do
    [[ $s == @(godown|postgres|redis) ]] || die "unknown system $s in SYSTEMS (godown postgres redis)"
done
((${#SCENARIOS[@]})) || die "SCENARIOS is empty"
((${#SYSTEMS[@]})) || die "SYSTEMS is empty"
selected() { [[ " ${SYSTEMS[*]} " == *" $1 "* ]]; }

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and runs PostgreSQL as user postgres)"

# --- tools -------------------------------------------------------------------------------

pg_bin_dir() {
    local d best=""
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/pg_ctl" ]] && best=$d
    done
    if [[ -z "$best" ]] && command -v pg_ctl >/dev/null; then
        best=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
    fi
    printf '%s' "$best"
}

missing=()
if selected postgres && [[ -z "$(pg_bin_dir)" ]]; then missing+=(postgresql); fi
if selected redis && ! command -v redis-server >/dev/null; then missing+=(redis-server); fi
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    # Keep the packages from starting their own services (a cluster on 5432, a Redis on
    # 6379): only what this script starts should run, and it stops all of it.
    added_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        added_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    if [[ -n "$added_policy" ]]; then rm -f /usr/sbin/policy-rc.d; fi
fi
ports=()
if selected postgres; then
    PGBIN=$(pg_bin_dir)
    [[ -n "$PGBIN" ]] || die "no pg_ctl after installing postgresql"
    getent passwd postgres >/dev/null || die "no user postgres (the postgresql package creates it)"
    ports+=("$PG_PORT")
fi
if selected redis; then
    command -v redis-server >/dev/null || die "no redis-server after installing it"
    command -v redis-cli >/dev/null || die "no redis-cli (package redis-tools)"
    ports+=("$REDIS_PORT")
fi
if selected godown; then
    command -v curl >/dev/null || die "curl is needed"
    ports+=("${GODOWN_ADDR##*:}")
fi
command -v python3 >/dev/null || die "python3 is needed"

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "${ports[@]}"; do
    if port_in_use "$p"; then die "port $p on 127.0.0.1 is already taken"; fi
done

# --- clean-up ----------------------------------------------------------------------------

TMP=""
GODOWN_PID=""
REDIS_PID=""
PG_STARTED=""

stop_pid() { # pid name: SIGTERM, then SIGKILL after 15 s
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    log "$2 did not stop on SIGTERM; killing it"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if ((rc != 0)) && [[ -n "$TMP" ]]; then
        for f in "$TMP"/godown*.log "$TMP/redis.log" "$TMP/pg.log"; do
            [[ -s "$f" ]] && { log "last lines of $(basename "$f"):"; tail -n 15 "$f" >&2; }
        done
    fi
    [[ -n "$GODOWN_PID" ]] && stop_pid "$GODOWN_PID" godown
    [[ -n "$REDIS_PID" ]] && stop_pid "$REDIS_PID" redis-server
    [[ -n "$PG_STARTED" ]] &&
        (cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$TMP/pg" -m fast -w stop) >/dev/null 2>&1
    [[ -n "$TMP" && -d "$TMP" ]] && rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_for() { # what seconds command...
    local what=$1 secs=$2 i
    shift 2
    for ((i = 0; i < secs * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "$what not ready after ${secs} s"
}

TMP=$(mktemp -d /tmp/godown-peers.XXXXXX)
if selected postgres; then chown postgres: "$TMP"; fi
chmod 711 "$TMP"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
MANIFEST=$OUT/runs.tsv
: >"$MANIFEST"

# --- PostgreSQL --------------------------------------------------------------------------

if selected postgres; then
    log "PostgreSQL: initdb in $TMP/pg ($("$PGBIN/postgres" --version))"
    as_postgres() { (cd / && runuser -u postgres -- "$@"); }
    as_postgres "$PGBIN/initdb" -D "$TMP/pg" -U postgres --auth=trust -E UTF8 --locale=C \
        >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
    cat >>"$TMP/pg/postgresql.conf" <<EOF
# godown peers benchmark
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$TMP'
max_connections = 200
fsync = on
synchronous_commit = on
EOF
    as_postgres "$PGBIN/pg_ctl" -D "$TMP/pg" -l "$TMP/pg.log" -w -t 60 start >/dev/null
    PG_STARTED=1
    PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    psql_c() { "$PGBIN/psql" -X -q -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"; }
    wait_for PostgreSQL 30 psql_c -c "SELECT 1"
fi

# --- Redis -------------------------------------------------------------------------------

if selected redis; then
    log "Redis: $(redis-server --version | head -n 1)"
    mkdir -p "$TMP/redis"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize no \
        --appendonly yes --appendfsync always --save '' \
        --dir "$TMP/redis" --logfile "$TMP/redis.log" &
    REDIS_PID=$!
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
    wait_for Redis 30 rcli ping
fi

# --- godown ------------------------------------------------------------------------------

log "building godown (release, --features peers)"
cargo build --release --features peers --quiet
GODOWN=$ROOT/target/release/godown

start_godown() { # durability
    local data="$TMP/godown-$1"
    rm -rf "$data"
    "$GODOWN" serve --listen "$GODOWN_ADDR" --data-dir "$data" --durability "$1" \
        >"$TMP/godown-$1.log" 2>&1 &
    GODOWN_PID=$!
    wait_for "godown ($1)" 60 curl -sf "http://$GODOWN_ADDR/health"
    kill -0 "$GODOWN_PID" 2>/dev/null || die "godown exited at start"
}
if selected godown; then start_godown flush; fi

{
    echo "date: $(date -Is)"
    echo "godown: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty tree)')"
    if selected postgres; then echo "postgres: $("$PGBIN/postgres" --version)"; fi
    if selected redis; then echo "redis: $(redis-server --version | head -n 1)"; fi
    echo "cpus: $(nproc)  kernel: $(uname -r)"
    echo "clients: $CLIENTS  duration: ${DURATION}s  runs: $RUNS  flash stock: $FLASH_STOCK"
    echo "systems: ${SYSTEMS[*]}  scenarios: ${SCENARIOS[*]}"
} >"$OUT/env.txt"

# --- the runs ----------------------------------------------------------------------------

FAILED_RUNS=0

target_of() {
    case $1 in
    godown) echo "http://$GODOWN_ADDR" ;;
    postgres) echo "$PG_URL" ;;
    redis) echo "$REDIS_URL" ;;
    esac
}

load_run() { # system durability scenario run
    local system=$1 durability=$2 scenario=$3 run=$4 rc=0
    local file="$OUT/${system}_${durability}_${scenario}_${run}.json"
    local args=(load --target "$(target_of "$system")" --scenario "$scenario"
        --clients "$CLIENTS" --duration "$DURATION" --json --quiet)
    if [[ $scenario == flash ]]; then args+=(--flash-stock "$FLASH_STOCK"); fi
    if ((run > 1)); then args+=(--skip-setup); fi
    "$GODOWN" "${args[@]}" >"$file" 2>"${file%.json}.err" || rc=$?
    # 0: clean; 3: a report, but with errors or a failed flash check; else: no report.
    if ((rc != 0 && rc != 3)); then
        log "  $system $durability $scenario run $run FAILED (exit $rc): $(tail -n 3 "${file%.json}.err" | tr '\n' ' ')"
        rm -f "$file"
        FAILED_RUNS=$((FAILED_RUNS + 1))
    else
        [[ -s "${file%.json}.err" ]] || rm -f "${file%.json}.err"
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("  %-8s %-7s %-10s run %s: %9.0f req/s  p50 %6d µs  p99 %7d µs%s" % (sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], r["requests_per_s"], r["latency_us"]["p50"], r["latency_us"]["p99"], "" if (not r["failed"] and (r["flash_check"] or "ok").startswith("ok")) else "  UNCLEAN: failed=%s flash=%s" % (r["failed"], r["flash_check"])))' \
            "$file" "$system" "$durability" "$scenario" "$run" >&2
        if ((rc == 3)); then FAILED_RUNS=$((FAILED_RUNS + 1)); fi
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$system" "$durability" "$scenario" "$run" "$rc" "$(basename "$file")" >>"$MANIFEST"
}

pass() { # durability
    local scenario system run
    for scenario in "${SCENARIOS[@]}"; do
        for system in "${SYSTEMS[@]}"; do
            for ((run = 1; run <= RUNS; run++)); do
                load_run "$system" "$1" "$scenario" "$run"
            done
        done
    done
}

log "pass 1: fsync durability ($CLIENTS clients, ${DURATION}s × $RUNS runs)"
if selected godown; then load_run godown fsync trivial 1; fi
pass fsync

log "pass 2: relaxed durability"
if selected postgres; then
    psql_c -c "ALTER SYSTEM SET synchronous_commit = off" >/dev/null
    psql_c -c "SELECT pg_reload_conf()" >/dev/null
    [[ $(psql_c -c "SHOW synchronous_commit") == off ]] || die "synchronous_commit is still on"
fi
if selected redis; then
    rcli CONFIG SET appendfsync everysec >/dev/null
    [[ $(rcli CONFIG GET appendfsync | tail -n 1) == everysec ]] || die "appendfsync not changed"
fi
if selected godown; then
    stop_pid "$GODOWN_PID" godown
    GODOWN_PID=""
    start_godown none
fi
pass relaxed

# --- summary -----------------------------------------------------------------------------

python3 - "$OUT" "$CLIENTS" "$DURATION" "$RUNS" >"$OUT/summary.md" <<'PY'
import json, os, statistics, sys

out, clients, duration, runs = sys.argv[1:5]
setting = {
    ("godown", "fsync"): "flush", ("godown", "relaxed"): "none",
    ("postgres", "fsync"): "synchronous_commit=on", ("postgres", "relaxed"): "synchronous_commit=off",
    ("redis", "fsync"): "appendfsync always", ("redis", "relaxed"): "appendfsync everysec",
}
groups = {}
order = []
with open(os.path.join(out, "runs.tsv")) as f:
    for line in f:
        system, durability, scenario, run, rc, name = line.rstrip("\n").split("\t")
        key = (system, durability, scenario)
        if key not in groups:
            groups[key] = {"reports": [], "failed": 0, "unclean": 0}
            order.append(key)
        g = groups[key]
        if rc not in ("0", "3"):
            g["failed"] += 1
            continue
        r = json.load(open(os.path.join(out, name)))
        g["reports"].append(r)
        if rc == "3":
            g["unclean"] += 1

def med(g, f):
    return statistics.median(f(r) for r in g["reports"]) if g["reports"] else None

def fmt(v, d=0):
    return "—" if v is None else f"{v:,.{d}f}"

print(f"{clients} clients, {duration} s a run, median of {runs} run(s) each.\n")
print("| system | durability | scenario | runs | req/s | p50 µs | p99 µs | notes |")
print("|---|---|---|---:|---:|---:|---:|---|")
rps = {}
for key in sorted(order, key=lambda k: (k[1] != "fsync", ["trivial", "throughput", "flash", "mixed"].index(k[2]), ["godown", "postgres", "redis"].index(k[0]))):
    system, durability, scenario = key
    g = groups[key]
    r = med(g, lambda r: r["requests_per_s"])
    rps[key] = r
    notes = []
    if g["failed"]:
        notes.append(f"{g['failed']} run(s) failed")
    if g["unclean"]:
        errs = {}
        for rep in g["reports"]:
            for k, v in rep["failed"].items():
                errs[k] = errs.get(k, 0) + v
        bad_flash = [rep["flash_check"] for rep in g["reports"] if rep["flash_check"] and not rep["flash_check"].startswith("ok")]
        notes.append(f"{g['unclean']} unclean run(s): errors {errs or '-'}" + (f"; {bad_flash[0]}" if bad_flash else ""))
    if scenario == "flash" and g["reports"]:
        short = sum(rep["short"] for rep in g["reports"])
        if short:
            notes.append(f"{short} refused for stock")
    if scenario == "trivial":
        notes.append("GET /health: the HTTP ceiling")
    print(f"| {system} | {durability} ({setting[(system, durability)]}) | {scenario} | {len(g['reports'])} | {fmt(r)} "
          f"| {fmt(med(g, lambda r: r['latency_us']['p50']))} | {fmt(med(g, lambda r: r['latency_us']['p99']))} "
          f"| {'; '.join(notes)} |")

print("\n| durability | scenario | godown req/s | godown / PostgreSQL | godown / Redis |")
print("|---|---|---:|---:|---:|")
for durability in ("fsync", "relaxed"):
    for scenario in ("throughput", "flash", "mixed"):
        g = rps.get(("godown", durability, scenario))
        def ratio(peer):
            p = rps.get((peer, durability, scenario))
            return "—" if not g or not p else f"{g / p:.2f}×"
        print(f"| {durability} | {scenario} | {fmt(g)} | {ratio('postgres')} | {ratio('redis')} |")
PY

echo
cat "$OUT/summary.md"
echo
log "results in $OUT; total $SECONDS s (installs and build included)"
if ((FAILED_RUNS)); then
    log "$FAILED_RUNS run(s) failed or were unclean (see the notes column and the .err files)"
    exit 1
fi
