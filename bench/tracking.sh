#!/usr/bin/env bash
# Tracking benchmark of the built binary on loopback, with Debian's wrk:
# one message goes through trackrelay in capture mode to mint real /o/ and
# /c/ URLs; then wrk (2 threads) hits each at 64, 256 and 1024 connections,
# against the binary recording every hit (each committed and fsynced before
# its response) and against the same binary with recording disabled
# (TRACKRELAY_BENCH_NO_RECORD=1, a benchmark-only switch) as the ceiling.
# Both servers run side by side on copies of one data dir. Each cell takes
# ROUNDS turns (ceiling, then recording, DURATION each) and reports the
# medians, and the median and range of the rounds' paired ratios: on a
# shared machine one pair of runs can be 10 points off either way.
#
#   bash bench/tracking.sh [DURATION]      (default 5s; ROUNDS=3)
#
# With STORES=1 it compares the stores instead: a bbolt-backed node and a
# PostgreSQL-backed node, both recording every hit durably before its
# response, in turns (ROUNDS=5, CONNS=256 by default). It starts its own
# throwaway PostgreSQL (fsync and synchronous_commit on, as scripts/
# fleet-e2e.sh does) and reports, per store and connection count, the
# median events/s (each answered hit is one recorded event), p50 and p99,
# PostgreSQL's share of bbolt's rate (median and range of the rounds'
# ratios), the p99 ratio, and how many hits took the fallback to the
# node's hit log (trackrelay_store_fallback_hits_total; the goal is none).
# PROFILE=FILE also writes the PostgreSQL node's CPU profile of the whole
# run to FILE (go tool pprof FILE).
#
# By default (MESSAGES=1) every hit goes to one copy of one message, the
# worst case for PostgreSQL: each batch waits for that message's lock.
# MESSAGES=N sends N messages, each to three recipients, and wrk
# (bench/tracking_spread.lua) cycles through all their copies' open pixels,
# as real traffic spreads over many messages.
#
#   STORES=1 [MESSAGES=200] bash bench/tracking.sh [DURATION]
#
# CAP=N sets tracking.max_events_per_recipient (default 10^9: every hit
# kept in detail). With PostgreSQL a copy under the cap is counted under an
# exclusive lock, so CAP=100 (the default of the config) with many copies
# (MESSAGES=2000) measures batches that wait for each other's locks.
#
# Needs wrk (apt-get install wrk), curl and python3; STORES=1 needs
# Debian's postgresql too. Every hit is kept as a detailed event
# (max_events_per_recipient is set very high), the worst case for the
# store.
set -euo pipefail

PROFILE=${PROFILE:+$(realpath -m "$PROFILE")}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DURATION=${1:-5s}
ROUNDS_SET=${ROUNDS:-}
CONNS_SET=${CONNS:-}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-"64 256 1024"}
WRK=${WRK:-/usr/bin/wrk}
WORK=$(mktemp -d /tmp/trackrelay-trackbench.XXXXXX)
PIDS=()
PGDIR=""
PGBIN=""
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "$PGDIR" ] && [ -f "$PGDIR/data/postmaster.pid" ]; then
        pg pg_ctl -D "$PGDIR/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK" ${PGDIR:+"$PGDIR"}
}
trap cleanup EXIT

command -v "$WRK" >/dev/null || { echo "bench: wrk not found (apt-get install wrk)"; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# BIN=/path/to/trackrelay measures that binary instead of building one
# (to compare builds, e.g. one made with go build -pgo=off).
if [ -n "${BIN:-}" ]; then cp "$BIN" "$WORK/trackrelay"; else go build -o "$WORK/trackrelay" ./cmd/trackrelay; fi

# pg prog args...: a PostgreSQL server program, as the user postgres when
# root (initdb refuses root).
pg() {
    local prog=$1
    shift
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$PGBIN/$prog" "$@"; else "$PGBIN/$prog" "$@"; fi
}

# write_config NAME [DSN_FILE [METRICS_PORT]]: a config for one server, on
# fresh ports; with DSN_FILE, on that PostgreSQL.
write_config() {
    local name=$1 dsn=${2:-} metrics=${3:-} smtp http
    smtp=$(free_port); http=$(free_port)
    cat >"$WORK/$name.yaml" <<YAML
data_dir: $WORK/$name
smtp:
  listen: 127.0.0.1:$smtp
  hostname: relay.bench
http:
  listen: 127.0.0.1:$http
metrics:
  listen: "${metrics:+127.0.0.1:$metrics}"
tracking:
  base_url: http://127.0.0.1:$http
  mode: all
  max_events_per_recipient: ${CAP:-1000000000}
  record_rate: -1
log:
  level: warn
accounts:
  - name: bench
    networks: [127.0.0.0/8]
YAML
    if [ -n "$dsn" ]; then
        printf 'store:\n  postgres:\n    dsn_file: %s\n' "$dsn" >>"$WORK/$name.yaml"
    fi
    echo "$smtp $http"
}

# start NAME [ENV...]: runs a server and waits for /healthz.
start() {
    local name=$1; shift
    env "$@" "$WORK/trackrelay" serve -config "$WORK/$name.yaml" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    local http
    http=$(awk -F: '/^http:/ {getline; print $3}' "$WORK/$name.yaml")
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$http/healthz" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "bench: $name did not start"; cat "$WORK/$name.log"; exit 1
}

# run PORT PATH CONNS [PATHS_FILE]: prints "req/s p99_ms non2xx p50_ms".
# With PATHS_FILE, wrk cycles through its paths instead of fetching PATH.
run() {
    local out spread=()
    if [ -n "${4:-}" ]; then spread=(-s bench/tracking_spread.lua); fi
    out=$("$WRK" -t2 -c"$3" -d"$DURATION" --timeout 5s --latency "${spread[@]}" "http://127.0.0.1:$1$2" ${4:+-- "$4"}) ||
        echo "bench: wrk failed: $out" >&2
    echo "$out" >>"$WORK/wrk.log"
    echo "$out" | awk '
        function ms(v,  u) { u = v; gsub(/[0-9.]/, "", u); sub(/[a-z]+$/, "", v)
                             return (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : (u == "m") ? v * 60000 : v }
        /Requests\/sec:/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        /Non-2xx or 3xx/ { bad = $NF }
        END { printf "%.0f %.2f %s %.2f\n", rps, p99, (bad == "" ? 0 : bad), p50 }'
}

# metric PORT NAME: the sum of a metric's series on a node's /metrics.
metric() {
    curl -sf "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.0f\n", s }'
}

# The stores compared: a bbolt-backed node and a PostgreSQL-backed node.
if [ "${STORES:-}" = 1 ]; then
    CONNS=${CONNS_SET:-256}
    ROUNDS=${ROUNDS_SET:-5}
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n | tail -n 1)
    [ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ] ||
        { echo "bench: PostgreSQL server binaries missing (Debian package postgresql)"; exit 1; }
    # Its own directory, outside WORK (root's, mode 0700): postgres owns it.
    PGDIR=$(mktemp -d /tmp/trackrelay-trackbench-pg.XXXXXX)
    if [ "$(id -u)" = 0 ]; then chown postgres: "$PGDIR"; fi
    pg initdb -D "$PGDIR/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$WORK/initdb.log" 2>&1 ||
        { cat "$WORK/initdb.log"; exit 1; }
    PG_PORT=$(free_port)
    # fsync and synchronous_commit stay on (the defaults): every hit is
    # durable before its response. pg_stat_statements counts the
    # statements of a batch.
    pg pg_ctl -D "$PGDIR/data" -l "$PGDIR/log" -w -t 60 -o "-p $PG_PORT -k $PGDIR -c listen_addresses=127.0.0.1 \
        -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all" start >/dev/null ||
        { cat "$PGDIR/log"; exit 1; }
    PSQL=("$PGBIN/psql" -qAt -v ON_ERROR_STOP=1)
    "${PSQL[@]}" "postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable" -c 'CREATE DATABASE trackrelay' >/dev/null
    echo "postgres://postgres@127.0.0.1:$PG_PORT/trackrelay?sslmode=disable" >"$WORK/postgres.dsn"
    chmod 600 "$WORK/postgres.dsn"

    BM=$(free_port)
    read -r SMTP_B HTTP_B < <(write_config bbolt "" "$BM")
    PGM=$(free_port)
    read -r SMTP_P HTTP_P < <(write_config postgres "$WORK/postgres.dsn" "$PGM")
    start bbolt
    PROF=()
    if [ -n "${PROFILE:-}" ]; then PROF=(-cpuprofile "$PROFILE"); fi
    env "$WORK/trackrelay" serve -config "$WORK/postgres.yaml" "${PROF[@]}" >"$WORK/postgres.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$HTTP_P/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
    curl -sf "http://127.0.0.1:$HTTP_P/healthz" >/dev/null || { echo "bench: postgres did not start"; cat "$WORK/postgres.log"; exit 1; }
    MESSAGES=${MESSAGES:-1}
    PATHS_B="" PATHS_P=""
    if [ "$MESSAGES" = 1 ]; then
        read -r OPEN_B _ < <(python3 bench/tracking_urls.py "$SMTP_B" "$WORK/bbolt/outbox")
        read -r OPEN_P _ < <(python3 bench/tracking_urls.py "$SMTP_P" "$WORK/postgres/outbox")
    else
        # Every copy's open pixel, one path a line, for tracking_spread.lua.
        python3 bench/tracking_urls.py "$SMTP_B" "$WORK/bbolt/outbox" "$MESSAGES" >"$WORK/urls.bbolt" || exit 1
        python3 bench/tracking_urls.py "$SMTP_P" "$WORK/postgres/outbox" "$MESSAGES" >"$WORK/urls.postgres" || exit 1
        PATHS_B=$WORK/paths.bbolt PATHS_P=$WORK/paths.postgres
        awk '{print $1}' "$WORK/urls.bbolt" | sed "s#^http://127.0.0.1:$HTTP_B##" >"$PATHS_B"
        awk '{print $1}' "$WORK/urls.postgres" | sed "s#^http://127.0.0.1:$HTTP_P##" >"$PATHS_P"
        OPEN_B=$(head -n 1 "$PATHS_B") OPEN_P=$(head -n 1 "$PATHS_P")
        echo "bench: $MESSAGES messages, $(wc -l <"$PATHS_P") copies a node; hits cycle through their open pixels"
    fi
    [ -n "$OPEN_B" ] && [ -n "$OPEN_P" ] || exit 1
    OPEN_B=${OPEN_B#http://127.0.0.1:$HTTP_B}
    OPEN_P=${OPEN_P#http://127.0.0.1:$HTTP_P}
    DURATION=2s run "$HTTP_B" "$OPEN_B" 64 "$PATHS_B" >/dev/null
    DURATION=2s run "$HTTP_P" "$OPEN_P" 64 "$PATHS_P" >/dev/null
    "${PSQL[@]}" "$(cat "$WORK/postgres.dsn")" -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements' \
        -c 'SELECT pg_stat_statements_reset()' >/dev/null
    lostb0=$(metric "$BM" trackrelay_tracking_events_lost_total); lostp0=$(metric "$PGM" trackrelay_tracking_events_lost_total)
    fell0=$(metric "$PGM" trackrelay_store_fallback_hits_total)
    bs0=$(metric "$PGM" trackrelay_store_commit_batch_size_sum); bc0=$(metric "$PGM" trackrelay_store_commit_batch_size_count)
    cd0=$(metric "$PGM" trackrelay_store_commit_duration_seconds_sum)

    echo "bench: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) before the runs; $("$PGBIN/postgres" --version)"
    printf '\n%-5s %5s | %10s %7s %7s | %10s %7s %7s | %6s %9s %9s\n' path conns "bbolt ev/s" "p50 ms" "p99 ms" "pg ev/s" "p50 ms" "p99 ms" ratio "(range)" "p99 ratio"
    for c in $CONNS; do
        rounds=()
        for _ in $(seq "$ROUNDS"); do
            read -r brps bp99 bbad bp50 < <(run "$HTTP_B" "$OPEN_B" "$c" "$PATHS_B")
            read -r prps pp99 pbad pp50 < <(run "$HTTP_P" "$OPEN_P" "$c" "$PATHS_P")
            rounds+=("$brps $bp50 $bp99 $prps $pp50 $pp99")
            if [ "$bbad$pbad" != "00" ]; then echo "  (unexpected status codes: bbolt $bbad, postgres $pbad)"; fi
        done
        printf '%s\n' "${rounds[@]}" | python3 -c '
import statistics as st, sys
r = [list(map(float, l.split())) for l in sys.stdin]
med = lambda i: st.median(x[i] for x in r)
ratios = [x[3] / x[0] * 100 for x in r if x[0]]
print("%-5s %5s | %10.0f %7.2f %7.2f | %10.0f %7.2f %7.2f | %5.0f%% %9s %8.1fx" % (sys.argv[1], sys.argv[2],
      med(0), med(1), med(2), med(3), med(4), med(5), st.median(ratios),
      "%.0f-%.0f%%" % (min(ratios), max(ratios)), med(5) / med(2) if med(2) else 0))
' /o/ "$c"
    done
    fell=$(( $(metric "$PGM" trackrelay_store_fallback_hits_total) - fell0 ))
    bs=$(( $(metric "$PGM" trackrelay_store_commit_batch_size_sum) - bs0 ))
    bc=$(( $(metric "$PGM" trackrelay_store_commit_batch_size_count) - bc0 ))
    cd1=$(metric "$PGM" trackrelay_store_commit_duration_seconds_sum)
    echo
    echo "postgres: $bs events in $bc batches ($(python3 -c "print('%.1f events a batch, commit mean %.1f ms' % ($bs / max($bc, 1), ($cd1 - $cd0) * 1000 / max($bc, 1)))"))"
    echo "postgres: hits that took the fallback to the hit log: $fell"
    echo "hits answered but not recorded (trackrelay_tracking_events_lost_total): bbolt $(( $(metric "$BM" trackrelay_tracking_events_lost_total) - lostb0 )), postgres $(( $(metric "$PGM" trackrelay_tracking_events_lost_total) - lostp0 ))"
    echo "postgres: statements per batch (pg_stat_statements, calls / batches), the top ten by total time:"
    "${PSQL[@]}" -F ' | ' "$(cat "$WORK/postgres.dsn")" -c "SELECT round(calls::numeric / greatest($bc, 1), 2), round(mean_exec_time::numeric, 3) || ' ms', round(total_exec_time::numeric) || ' ms', left(regexp_replace(query, '\s+', ' ', 'g'), 70)
        FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'trackrelay') ORDER BY total_exec_time DESC LIMIT 10" | sed 's/^/  /'
    echo "postgres: scans of the tables (pg_stat_user_tables: name, sequential scans, rows they read, index scans):"
    "${PSQL[@]}" -F ' | ' "$(cat "$WORK/postgres.dsn")" -c "SELECT relname, seq_scan, seq_tup_read, idx_scan FROM pg_stat_user_tables
        WHERE relname IN ('events', 'feed', 'messages', 'deliveries', 'tallies', 'erased') ORDER BY relname" | sed 's/^/  /'
    grep -h "event lost\|level=ERROR" "$WORK"/bbolt.log "$WORK"/postgres.log | head -5 || true
    exit 0
fi

read -r SMTP HTTP_REC < <(write_config rec)
start rec

# One message through SMTP, delivered to the outbox in capture mode.
read -r OPEN CLICK < <(python3 bench/tracking_urls.py "$SMTP" "$WORK/rec/outbox")
[ -n "$CLICK" ] || exit 1
OPEN_PATH=${OPEN#http://127.0.0.1:$HTTP_REC}
CLICK_PATH=${CLICK#http://127.0.0.1:$HTTP_REC}
echo "open:  $OPEN_PATH"
echo "click: $CLICK_PATH"

# The ceiling: the same binary on a copy of the data dir (same secret and
# message), with recording disabled.
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()
read -r _ HTTP_NOREC < <(write_config norec)
cp -a "$WORK/rec" "$WORK/norec"
sed -i "s#data_dir: .*#data_dir: $WORK/norec#" "$WORK/norec.yaml"
start rec
start norec TRACKRELAY_BENCH_NO_RECORD=1

# Warm up both.
"$WRK" -t2 -c64 -d2s "http://127.0.0.1:$HTTP_REC$OPEN_PATH" >/dev/null
"$WRK" -t2 -c64 -d2s "http://127.0.0.1:$HTTP_NOREC$OPEN_PATH" >/dev/null

echo "bench: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) before the runs"
printf '\n%-6s %6s | %12s %9s | %12s %9s | %6s %10s\n' path conns "ceiling r/s" "p99 ms" "record r/s" "p99 ms" ratio "(range)"
for p in open click; do
    path=$OPEN_PATH; [ "$p" = click ] && path=$CLICK_PATH
    for c in $CONNS; do
        rounds=()
        for _ in $(seq "$ROUNDS"); do
            read -r crps cp99 cbad _ < <(run "$HTTP_NOREC" "$path" "$c")
            read -r rrps rp99 rbad _ < <(run "$HTTP_REC" "$path" "$c")
            rounds+=("$crps $cp99 $rrps $rp99")
            if [ "$cbad$rbad" != "00" ]; then echo "  (unexpected status codes: ceiling $cbad, recording $rbad)"; fi
        done
        printf '%s\n' "${rounds[@]}" | python3 -c '
import statistics as st, sys
r = [list(map(float, l.split())) for l in sys.stdin]
med = lambda i: st.median(x[i] for x in r)
ratios = [x[2] / x[0] * 100 for x in r if x[0]]
rng = "%.0f-%.0f%%" % (min(ratios), max(ratios)) if ratios else "-"
print("%-6s %6s | %12.0f %9.2f | %12.0f %9.2f | %5.0f%% %10s" % (sys.argv[1], sys.argv[2],
      med(0), med(1), med(2), med(3), st.median(ratios) if ratios else 0, rng))
' "/${p:0:1}/" "$c"
    done
done
echo
grep -h "event lost\|level=ERROR" "$WORK"/rec.log | head -5 || true
echo "recording server log lines about lost events: $(grep -c 'event lost' "$WORK/rec.log" || true)"
