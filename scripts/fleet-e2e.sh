#!/usr/bin/env bash
# Fleet end-to-end test: two built trackrelay nodes on one PostgreSQL, in
# capture mode, with the same accounts, secret and base_url, each with its
# own data_dir and ports. The script plays the load balancer: tracking URLs
# name the fleet's base_url, and each request goes to one node's own address
# with X-Forwarded-For, which tracking.trusted_proxies lets it set.
#
#   1. mail sent through node A is found on node B right after its 250;
#      its pixel and a link are hit through node B; the API and the feed
#      answer the same on both nodes (a feed cursor of one works on the other)
#   2. DELETE on one node: a 404 on both; later hits on the message's links
#      still redirect and are not stored
#   3. pixel load (a click in five) spread over both nodes, node B killed
#      with kill -9 in the middle and restarted: no answered hit missing
#   4. the same load while PostgreSQL is stopped for ten seconds: every pixel
#      and link answered throughout, /readyz degraded (not "not ready"), mail
#      still accepted, and once the database is back no answered hit missing
#   5. PostgreSQL stopped again, node B killed with kill -9 while its answered
#      hits are only in its hit log, restarted without the database, then
#      PostgreSQL started: no answered hit missing
#
# The load goes to the nodes in turn; a refused connection is tried on the
# other node, as a load balancer does. Every request carries a unique marker
# in its user agent, so the feed is checked hit by hit.
#
# Needs: go, /usr/bin/python3, curl, Debian's postgresql (server binaries under
# /usr/lib/postgresql/NN/bin; as root, initdb and pg_ctl run as the user
# postgres on a temporary directory it owns, listening on 127.0.0.1 only).
# Usage:  bash scripts/fleet-e2e.sh      (from anywhere)
# Env:    FLEET_KEEP=1            keep the work directory even when everything passed
#         FLEET_SKIP_OUTAGE=1     leave out steps 4 and 5 (reported as SKIP)
#         FLEET_BIN=path          use this binary instead of building one
set -euo pipefail

PY=/usr/bin/python3
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPER="$ROOT/scripts/fleet_helper.py"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/trackrelay-fleet.XXXXXX")
# The fleet's public name: what the load balancer answers to.
BASE=https://t.fleet.test
OUTAGE_SECONDS=10

PASSED=0
FAILED=0
SUMMARY_DONE=0
FATAL=0
PG_STARTED=0
LOAD_PID=""
declare -A NODE_PID=()

pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }
info() { echo "INFO $*"; }
# Counts the PASS/FAIL lines of a helper's output, echoes everything.
tally() {
    local line
    while IFS= read -r line; do
        case $line in
        "PASS "*) PASSED=$((PASSED + 1)); echo "$line" ;;
        "FAIL "*) FAILED=$((FAILED + 1)); echo "$line" ;;
        *) echo "$line" ;;
        esac
    done
}
# helper args...: runs fleet_helper.py, counting its PASS/FAIL lines; its
# exit status is the helper's.
helper() {
    local rc=0
    "$PY" "$HELPER" "$@" >"$WORK/helper.out" 2>&1 || rc=$?
    tally <"$WORK/helper.out"
    return "$rc"
}

summary() {
    [ "$SUMMARY_DONE" = 1 ] && return 0
    SUMMARY_DONE=1
    echo "fleet-e2e: $PASSED passed, $FAILED failed"
}

PGBIN=""
# Its own directory, not under WORK (mode 0700, root's): the user postgres owns it.
PGDIR=$(mktemp -d "${TMPDIR:-/tmp}/trackrelay-fleet-pg.XXXXXX")
# pg prog args...: a PostgreSQL server program, as the user postgres when root
# (initdb refuses root).
pg() {
    local prog=$1
    shift
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$PGBIN/$prog" "$@"
    else
        "$PGBIN/$prog" "$@"
    fi
}
pg_start() {
    pg pg_ctl -D "$PGDIR/data" -l "$PGDIR/log" -w -t 60 \
        -o "-p $PG_PORT -k $PGDIR -c listen_addresses=127.0.0.1" start >/dev/null
}
pg_stop() { pg pg_ctl -D "$PGDIR/data" -m fast -w -t 60 stop >/dev/null; }

cleanup() {
    local rc=$?
    set +e
    if [ "$rc" != 0 ] && [ "$FATAL" = 0 ]; then
        fail "fleet-e2e.sh stopped early (exit status $rc, line ${ERR_LINE:-?})"
    fi
    [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null
    local n pid
    for n in "${!NODE_PID[@]}"; do kill "${NODE_PID[$n]}" 2>/dev/null; done
    for n in "${!NODE_PID[@]}"; do
        pid=${NODE_PID[$n]}
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    [ "$PG_STARTED" = 1 ] && pg_stop 2>/dev/null
    if [ "$FAILED" != 0 ] || [ "$rc" != 0 ]; then
        for f in "$WORK/a.log" "$WORK/b.log" "$PGDIR/log"; do
            if [ -s "$f" ]; then
                echo "---- last lines of $f ----"
                tail -n 30 "$f"
            fi
        done
        echo "work directories kept: $WORK $PGDIR"
    elif [ "${FLEET_KEEP:-0}" = 1 ]; then
        echo "work directories kept: $WORK $PGDIR"
    else
        rm -rf "$WORK" "$PGDIR"
    fi
    summary
    if [ "$FAILED" != 0 ]; then exit 1; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'ERR_LINE=$LINENO' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# fatal "what": records a failure and stops (the trap cleans up).
fatal() {
    fail "$*"
    FATAL=1
    exit 1
}

for tool in go curl "$PY"; do
    command -v "$tool" >/dev/null || fatal "required tool missing: $tool"
done
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n | tail -n 1)
[ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ] ||
    fatal "PostgreSQL server binaries missing (/usr/lib/postgresql/NN/bin; Debian package postgresql)"
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || fatal "running as root needs the user postgres (Debian package postgresql)"
fi
echo "== work directory: $WORK"

# ---------------------------------------------------------------- build
BIN="$WORK/trackrelay"
if [ -n "${FLEET_BIN:-}" ]; then
    cp "$FLEET_BIN" "$BIN"
    pass "binary given: $FLEET_BIN"
elif (cd "$ROOT" && go build -o "$BIN" ./cmd/trackrelay) >"$WORK/build.log" 2>&1; then
    pass "go build ./cmd/trackrelay"
else
    cat "$WORK/build.log"
    fatal "go build ./cmd/trackrelay"
fi

# ---------------------------------------------------------------- PostgreSQL
read -r PG_PORT A_SMTP A_HTTP A_METRICS B_SMTP B_HTTP B_METRICS < <("$PY" "$HELPER" ports 7)
if [ "$(id -u)" = 0 ]; then chown postgres: "$PGDIR"; fi
if pg initdb -D "$PGDIR/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$WORK/initdb.log" 2>&1; then
    pass "initdb ($PGBIN)"
else
    cat "$WORK/initdb.log"
    fatal "initdb"
fi
pg_start || { cat "$PGDIR/log"; fatal "pg_ctl start"; }
PG_STARTED=1
DSN="postgres://postgres@127.0.0.1:$PG_PORT/trackrelay?sslmode=disable&connect_timeout=5"
"$PGBIN/psql" -q -v ON_ERROR_STOP=1 "postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable" \
    -c 'CREATE DATABASE trackrelay' >"$WORK/psql.log" 2>&1 || { cat "$WORK/psql.log"; fatal "CREATE DATABASE"; }
pass "PostgreSQL on 127.0.0.1:$PG_PORT (fsync on), database trackrelay"

# ---------------------------------------------------------------- two nodes
echo "$DSN" >"$WORK/postgres.dsn"
openssl rand -base64 32 >"$WORK/secret" 2>/dev/null || head -c 32 /dev/urandom | base64 >"$WORK/secret"
KEY=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
KEY_SHA=$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)
chmod 600 "$WORK/secret" "$WORK/postgres.dsn"

# node NAME SMTP HTTP METRICS: writes the node's config; everything but
# data_dir and the ports is the same on both.
node_config() {
    cat >"$WORK/$1.yaml" <<EOF
data_dir: $WORK/$1
smtp:
  listen: 127.0.0.1:$2
  hostname: $1.fleet.test
http:
  listen: 127.0.0.1:$3
metrics:
  listen: 127.0.0.1:$4
tracking:
  base_url: $BASE
  secret_file: $WORK/secret
  trusted_proxies: ["127.0.0.1/32"]
  scanner_window: 1s
  # The load comes from 250 addresses at hundreds of hits a second: keep
  # every hit in detail, so that the feed can be checked hit by hit.
  record_rate: -1
  max_events_per_recipient: 1000000
store:
  postgres:
    dsn_file: $WORK/postgres.dsn
    max_connections: 8
log:
  level: info
accounts:
  - name: fleet
    api_key_sha256: "$KEY_SHA"
    networks: ["127.0.0.0/8"]
EOF
}
node_config a "$A_SMTP" "$A_HTTP" "$A_METRICS"
node_config b "$B_SMTP" "$B_HTTP" "$B_METRICS"
A="http://127.0.0.1:$A_HTTP"
B="http://127.0.0.1:$B_HTTP"
for n in a b; do
    "$BIN" check-config -config "$WORK/$n.yaml" >"$WORK/check-$n.log" 2>&1 ||
        { cat "$WORK/check-$n.log"; fatal "check-config $n.yaml"; }
done

start_node() {
    "$BIN" serve -config "$WORK/$1.yaml" >>"$WORK/$1.log" 2>&1 &
    NODE_PID[$1]=$!
}
# wait_healthy NAME URL: until the node's /healthz answers (60 s at most).
wait_healthy() {
    local i
    for ((i = 0; i < 600; i++)); do
        if curl -fsS -o /dev/null --max-time 2 "$2/healthz" 2>/dev/null; then return 0; fi
        kill -0 "${NODE_PID[$1]}" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
# Both at the same moment, on an empty database: the schema is made once.
start_node a
start_node b
wait_healthy a "$A" || fatal "node A did not start (see a.log)"
wait_healthy b "$B" || fatal "node B did not start (see b.log)"
pass "two nodes started together on the empty database"

# ---------------------------------------------------------------- 1. send on A, hit and read on B
echo "== send through A, open and click through B, read both"
QID=$("$PY" "$HELPER" send --port "$A_SMTP" --to "bob@example.net,carol@example.net" --subject "fleet quote" \
    --found-on "$B" --key "$KEY" 2>"$WORK/send1.err") || { cat "$WORK/send1.err"; fatal "send through node A"; }
pass "node A accepted $QID"
tally <"$WORK/send1.err"
helper copies --outbox "$WORK/a/outbox" --qid "$QID" --n 2 --base "$BASE" --out "$WORK/copies1.json" ||
    fatal "copies of $QID"
helper wait-delivered --node "$B" --qid "$QID" --key "$KEY" --name "node B"
# The hits must come after tracking.scanner_window (1s) past delivery.
sleep 1.5
helper hit --node "$B" --copies "$WORK/copies1.json" --base "$BASE" --name "node B" --copy 0
helper same-view --a "$A" --b "$B" --qid "$QID" --key "$KEY" --copy 0
helper same-feed --a "$A" --b "$B" --qid "$QID" --key "$KEY" --cursor "$WORK/cursor1"

# ---------------------------------------------------------------- 2. erase
echo "== erase on one node"
helper erase --a "$A" --b "$B" --qid "$QID" --key "$KEY" --copies "$WORK/copies1.json" --base "$BASE"

# ---------------------------------------------------------------- load message
LOAD_RCPTS=$(for i in 1 2 3 4 5 6 7 8; do printf 'r%d@example.net,' "$i"; done)
LQID=$("$PY" "$HELPER" send --port "$B_SMTP" --to "${LOAD_RCPTS%,}" --subject "fleet load") ||
    fatal "send the load message through node B"
pass "node B accepted $LQID (8 recipients) for the load"
helper copies --outbox "$WORK/b/outbox" --qid "$LQID" --n 8 --base "$BASE" --out "$WORK/copies2.json" ||
    fatal "copies of $LQID"

# load_start TAG: starts the load on both nodes in the background.
load_start() {
    rm -f "$WORK/stop"
    "$PY" "$HELPER" load --nodes "$A,$B" --copies "$WORK/copies2.json" --base "$BASE" \
        --out "$WORK/load-$1.txt" --stop "$WORK/stop" --tag "$1" --workers 4 --rate 400 --seconds 180 \
        --max 60000 >"$WORK/load-$1.log" 2>&1 &
    LOAD_PID=$!
}
load_stop() {
    touch "$WORK/stop"
    wait "$LOAD_PID" || true
    LOAD_PID=""
}
answered() { "$PY" "$HELPER" count "$WORK/load-$1.txt"; }
# wait_answered TAG N: until N requests of the load were answered (120 s at most).
wait_answered() {
    local i
    for ((i = 0; i < 1200; i++)); do
        [ "$(answered "$1")" -ge "$2" ] && return 0
        kill -0 "$LOAD_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- 3. kill -9 under load
echo "== kill -9 node B under pixel load, restart it"
BEFORE=$("$PY" "$HELPER" events-total --node "$A" --qid "$LQID" --key "$KEY")
load_start kill
wait_answered kill 600 || fatal "load before the kill"
kill -9 "${NODE_PID[b]}"
wait "${NODE_PID[b]}" 2>/dev/null || true
info "node B killed with kill -9 after $(answered kill) answered hits"
n=$(answered kill)
wait_answered kill $((n + 300)) || fatal "load on node A alone"
start_node b
wait_healthy b "$B" || fatal "node B did not restart (see b.log)"
pass "node B restarted"
n=$(answered kill)
wait_answered kill $((n + 300)) || fatal "load after the restart"
load_stop
helper stats --load "$WORK/load-kill.txt" --name "kill -9"
helper no-loss --nodes "$A,$B" --load "$WORK/load-kill.txt" --key "$KEY" --qid "$LQID" --name "kill -9" \
    --tag kill --before "$BEFORE" --timeout 60

# ---------------------------------------------------------------- 4. PostgreSQL stopped under load
if [ "${FLEET_SKIP_OUTAGE:-0}" = 1 ]; then
    echo "SKIP PostgreSQL outages under load (FLEET_SKIP_OUTAGE=1)"
else
    echo "== PostgreSQL stopped for ${OUTAGE_SECONDS}s under load"
    BEFORE=$("$PY" "$HELPER" events-total --node "$A" --qid "$LQID" --key "$KEY")
    load_start outage
    wait_answered outage 300 || fatal "load before the outage"
    down_at=$(date +%s.%N)
    pg_stop || fatal "pg_ctl stop"
    PG_STARTED=0
    info "PostgreSQL stopped after $(answered outage) answered hits"
    sleep 2
    helper readyz --node "http://127.0.0.1:$A_METRICS" --name "node A"
    # Mail is still accepted: the spool is durable; the record follows.
    if OQID=$("$PY" "$HELPER" send --port "$A_SMTP" --to "dave@example.net" --subject "fleet outage" --timeout 10); then
        pass "node A accepted $OQID while PostgreSQL was down"
    else
        fail "node A accepts mail while PostgreSQL is down"
        OQID=""
    fi
    sleep $((OUTAGE_SECONDS - 2))
    pg_start || fatal "pg_ctl start after the outage"
    PG_STARTED=1
    up_at=$(date +%s.%N)
    info "PostgreSQL started again after ${OUTAGE_SECONDS}s"
    n=$(answered outage)
    wait_answered outage $((n + 300)) || fatal "load after the outage"
    load_stop
    helper stats --load "$WORK/load-outage.txt" --name "outage" --window "$down_at,$up_at" --all-answered
    helper no-loss --nodes "$A,$B" --load "$WORK/load-outage.txt" --key "$KEY" --qid "$LQID" --name "outage" \
        --tag outage --before "$BEFORE" --timeout 90
    if [ -n "$OQID" ]; then
        helper wait-found --node "$B" --qid "$OQID" --key "$KEY" --name "node B" --timeout 60
        # Delivered (captured) during the outage: its status follows too.
        helper wait-delivered --node "$B" --qid "$OQID" --key "$KEY" --name "node B" --timeout 30
    fi

    # ------------------------------------------------------------ 5. kill -9 while PostgreSQL is down
    # The hits node B answers now exist only in its hit log: killed, it must
    # come back without the database, and ship them once it is back.
    echo "== kill -9 node B while PostgreSQL is down, restart it, then PostgreSQL"
    BEFORE=$("$PY" "$HELPER" events-total --node "$A" --qid "$LQID" --key "$KEY")
    load_start logged
    wait_answered logged 300 || fatal "load before the second outage"
    pg_stop || fatal "pg_ctl stop"
    PG_STARTED=0
    n=$(answered logged)
    wait_answered logged $((n + 600)) || fatal "load while PostgreSQL is down"
    kill -9 "${NODE_PID[b]}"
    wait "${NODE_PID[b]}" 2>/dev/null || true
    info "node B killed with kill -9 while PostgreSQL was down, after $(answered logged) answered hits"
    start_node b
    if wait_healthy b "$B"; then
        pass "node B restarted while PostgreSQL was down"
    else
        fatal "node B did not restart while PostgreSQL was down (see b.log)"
    fi
    n=$(answered logged)
    wait_answered logged $((n + 300)) || fatal "load after the restart"
    pg_start || fatal "pg_ctl start after the second outage"
    PG_STARTED=1
    n=$(answered logged)
    wait_answered logged $((n + 300)) || fatal "load after the second outage"
    load_stop
    helper stats --load "$WORK/load-logged.txt" --name "kill -9 during the outage"
    helper no-loss --nodes "$A,$B" --load "$WORK/load-logged.txt" --key "$KEY" --qid "$LQID" \
        --name "kill -9 during the outage" --tag logged --before "$BEFORE" --timeout 90
fi

for n in a b; do
    kill -0 "${NODE_PID[$n]}" 2>/dev/null && pass "node ${n^^} still runs" || fail "node ${n^^} exited (see $n.log)"
done
