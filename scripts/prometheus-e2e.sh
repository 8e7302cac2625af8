#!/usr/bin/env bash
# trackrelay as a real Prometheus sees it. Builds the binary, runs it on
# loopback delivering to a capturing upstream (scripts/capture_smtpd.py),
# lints the live /metrics with `promtool check metrics`, starts a real
# Prometheus (scrape interval 1s, configs/alerts.yml loaded) that scrapes the
# relay while mail is sent and its tracking URLs are fetched, and asserts
# through Prometheus's HTTP query API that the target is up and that the
# accepted, delivered and opens counters moved.
#
# Needs: go, prometheus and promtool (Debian: prometheus), /usr/bin/python3
# with python3-aiosmtpd, curl; swaks is used when present.
# Usage: bash scripts/prometheus-e2e.sh
# Env:   PROM_E2E_KEEP=1  keep the work directory
#        PROM_E2E_BIN=path use this binary instead of building one
set -uo pipefail

PY=/usr/bin/python3
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/trackrelay-prom.XXXXXX")
UA='Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36'
export PATH="$PATH:/usr/local/go/bin"

PASSED=0
FAILED=0
PIDS=()
pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }
info() { echo "INFO $*"; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ "$FAILED" != 0 ]; then
        for f in serve.log sink.log prometheus.log; do
            if [ -s "$WORK/$f" ]; then
                echo "---- last lines of $f ----"
                tail -n 30 "$WORK/$f"
            fi
        done
        echo "work directory kept: $WORK"
    elif [ "${PROM_E2E_KEEP:-0}" = 1 ]; then
        echo "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    echo "prometheus-e2e: $PASSED passed, $FAILED failed"
    [ "$FAILED" = 0 ]
}
trap 'cleanup; exit $?' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fatal() {
    fail "$*"
    exit 1
}

for tool in go prometheus promtool curl "$PY"; do
    command -v "$tool" >/dev/null || fatal "required tool missing: $tool"
done
"$PY" -c 'import aiosmtpd' 2>/dev/null || fatal "python3-aiosmtpd missing for $PY"

# wait_until SECONDS cmd args...: until the command succeeds.
wait_until() {
    local secs=$1 i
    shift
    for ((i = 0; i < secs * 10; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- build
BIN="$WORK/trackrelay"
if [ -n "${PROM_E2E_BIN:-}" ]; then
    cp "$PROM_E2E_BIN" "$BIN"
elif (cd "$ROOT" && go build -o "$BIN" ./cmd/trackrelay) >"$WORK/build.log" 2>&1; then
    pass "go build ./cmd/trackrelay"
else
    cat "$WORK/build.log"
    fatal "go build ./cmd/trackrelay"
fi

read -r SMTP_PORT HTTP_PORT METRICS_PORT SINK_PORT PROM_PORT < <("$PY" - <<'EOF'
import socket
socks = []
for _ in range(5):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)
BASE="http://127.0.0.1:$HTTP_PORT"
METRICS_BASE="http://127.0.0.1:$METRICS_PORT"
METRICS="$METRICS_BASE/metrics"
PROM="http://127.0.0.1:$PROM_PORT"
info "ports: smtp=$SMTP_PORT http=$HTTP_PORT metrics=$METRICS_PORT sink=$SINK_PORT prometheus=$PROM_PORT"

# The account sends from loopback without AUTH; hits arrive through a
# trusted proxy (127.0.0.1) that names another client, so that an open
# is a person's, not the sender's own.
head -c 32 /dev/urandom | base64 >"$WORK/secret"
cat >"$WORK/trackrelay.yaml" <<EOF
data_dir: $WORK/data
smtp:
  listen: "127.0.0.1:$SMTP_PORT"
  hostname: relay.prom.test
upstream:
  address: "127.0.0.1:$SINK_PORT"
  tls: none
http:
  listen: "127.0.0.1:$HTTP_PORT"
metrics:
  listen: "127.0.0.1:$METRICS_PORT"
tracking:
  base_url: "$BASE"
  secret_file: $WORK/secret
  trusted_proxies: ["127.0.0.1/32"]
  scanner_window: 1s
accounts:
  - name: app
    networks: ["127.0.0.1/32"]
EOF

# ---------------------------------------------------------------- servers
mkdir -p "$WORK/sink"
"$PY" "$ROOT/scripts/capture_smtpd.py" --port "$SINK_PORT" --dir "$WORK/sink" >"$WORK/sink.log" 2>&1 &
PIDS+=($!)
"$BIN" serve -config "$WORK/trackrelay.yaml" >"$WORK/serve.log" 2>&1 &
RELAY_PID=$!
PIDS+=("$RELAY_PID")
if wait_until 30 curl -fsS --max-time 2 "$BASE/healthz" && wait_until 10 curl -fsS --max-time 2 "$METRICS"; then
    pass "trackrelay serve: /healthz and /metrics answer"
else
    fatal "trackrelay serve did not come up"
fi

# lint_metrics WHAT: promtool check metrics on the live /metrics output.
lint_metrics() {
    local rc=0
    curl -fsS --max-time 10 "$METRICS" >"$WORK/metrics.txt" || fatal "GET $METRICS"
    promtool check metrics <"$WORK/metrics.txt" >"$WORK/lint.out" 2>&1 || rc=$?
    echo "\$ curl -s $METRICS | promtool check metrics   # $1"
    sed 's/^/    /' "$WORK/lint.out"
    if [ "$rc" = 0 ] && [ ! -s "$WORK/lint.out" ]; then
        pass "promtool check metrics, $1: exit 0, no findings ($(grep -c '^trackrelay_' "$WORK/metrics.txt") trackrelay_ samples)"
    else
        fail "promtool check metrics, $1: exit $rc"
    fi
}
lint_metrics "before any traffic"

# /readyz is operator information: on the metrics listener, never the public one.
body=$(curl -s --max-time 10 -w ' %{http_code}' "$METRICS_BASE/readyz" | tr -d '\n' || true)
if [[ $body == *'"ready":true'*' 200' ]]; then
    pass "GET /readyz on the metrics listener: 200 $body"
else
    fail "GET /readyz on the metrics listener: $body"
fi
code=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' "$BASE/readyz" || true)
if [ "$code" = 404 ]; then
    pass "GET /readyz on the public listener: 404"
else
    fail "GET /readyz on the public listener: $code, want 404"
fi

cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/configs/alerts.yml
scrape_configs:
  - job_name: trackrelay
    static_configs:
      - targets: ["127.0.0.1:$METRICS_PORT"]
EOF
promtool check config "$WORK/prometheus.yml" >"$WORK/promcfg.out" 2>&1 ||
    { cat "$WORK/promcfg.out"; fatal "promtool check config"; }
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --storage.tsdb.retention.time=1h \
    >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
if wait_until 60 curl -fsS --max-time 2 "$PROM/-/ready"; then
    pass "prometheus $(prometheus --version 2>&1 | awk 'NR == 1 { print $3 }') ready on $PROM"
else
    fatal "prometheus not ready within 60s"
fi

# q QUERY: the value of an instant query's single result; "none" when the
# result is empty, "error" when the query failed.
q() {
    curl -fsS --max-time 5 -G --data-urlencode "query=$1" "$PROM/api/v1/query" 2>/dev/null |
        "$PY" -c '
import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    print("error"); sys.exit()
if d.get("status") != "success":
    print("error"); sys.exit()
r = d["data"]["result"]
print(r[0]["value"][1] if r else "none")'
}
# q_at_least QUERY MIN: the query's value is >= MIN.
q_at_least() {
    local v
    v=$(q "$1")
    [ "$v" != none ] && [ "$v" != error ] && "$PY" -c 'import sys; sys.exit(float(sys.argv[1]) < float(sys.argv[2]))' "$v" "$2"
}
# expect_query WHAT QUERY MIN SECONDS: waits until the query reaches MIN.
expect_query() {
    local what=$1 query=$2 min=$3 secs=$4
    if wait_until "$secs" q_at_least "$query" "$min"; then
        pass "$what: $query = $(q "$query") (>= $min)"
    else
        fail "$what: $query = $(q "$query"), want >= $min within ${secs}s"
    fi
}

expect_query "Prometheus scrapes the relay" 'up{job="trackrelay"}' 1 30
# Values before traffic (a labelled counter not yet incremented is absent: 0).
base() {
    local v
    v=$(q "$1")
    case $v in none | error) echo 0 ;; *) echo "$v" ;; esac
}
ACCEPTED='sum(trackrelay_smtp_messages_total{job="trackrelay", result="accepted"})'
DELIVERED='sum(trackrelay_delivery_attempts_total{job="trackrelay", result="delivered"})'
OPENS='sum(trackrelay_tracking_events_total{job="trackrelay", type="open"})'
HUMAN_OPENS='sum(trackrelay_tracking_events_total{job="trackrelay", type="open", class="human"})'
CLICKS='sum(trackrelay_tracking_events_total{job="trackrelay", type="click"})'
A0=$(base "$ACCEPTED")
D0=$(base "$DELIVERED")
O0=$(base "$OPENS")
H0=$(base "$HUMAN_OPENS")
C0=$(base "$CLICKS")
info "before: accepted=$A0 delivered=$D0 opens=$O0 human_opens=$H0 clicks=$C0"

# ---------------------------------------------------------------- traffic
mkmsg() { # mkmsg FILE TO N
    cat >"$1" <<EOF
From: app@example.com
To: $2
Subject: Quote $3
Message-ID: <prom-e2e-$3.$$@example.com>
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8

<html><body><p>Here is <a href="https://example.com/quote/$3?x=1&amp;y=2">your quote</a>.</p></body></html>
EOF
}
SENT=0
COPIES=0
if command -v swaks >/dev/null; then
    mkmsg "$WORK/m1.eml" "client1@example.net" 1
    if timeout 60 swaks --server 127.0.0.1 --port "$SMTP_PORT" --ehlo prom.test \
        --from app@example.com --to client1@example.net,client2@example.org \
        --data "$WORK/m1.eml" >"$WORK/swaks.out" 2>&1; then
        pass "swaks: message to 2 recipients accepted ($(grep -o 'queued as [A-Za-z0-9]*' "$WORK/swaks.out" | head -n1))"
        SENT=$((SENT + 1))
        COPIES=$((COPIES + 2))
    else
        tail -n 15 "$WORK/swaks.out"
        fail "swaks send"
    fi
else
    info "swaks not installed; sending with smtplib only"
fi
for n in 2 3; do
    mkmsg "$WORK/m$n.eml" "client$n@example.net" "$n"
done
if "$PY" - "$SMTP_PORT" "$WORK/m2.eml" "$WORK/m3.eml" >"$WORK/smtplib.out" 2>&1 <<'EOF'; then
import smtplib, sys
port = int(sys.argv[1])
with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
    for i, path in enumerate(sys.argv[2:], 2):
        s.sendmail("app@example.com", ["client%d@example.net" % i], open(path, "rb").read())
        print("sent", path)
EOF
    pass "smtplib: 2 messages accepted"
    SENT=$((SENT + 2))
    COPIES=$((COPIES + 2))
else
    cat "$WORK/smtplib.out"
    fail "smtplib send"
fi
expect_query "accepted counter moved" "$ACCEPTED" "$(($(printf '%.0f' "$A0") + SENT))" 30
expect_query "delivered counter moved" "$DELIVERED" "$(($(printf '%.0f' "$D0") + COPIES))" 60

# The tracking URLs of one delivered copy.
wait_until 30 sh -c "ls '$WORK/sink' | grep -q '\.eml\$'" || fail "no copy reached the capture sink"
COPY=$(ls "$WORK/sink"/*.eml 2>/dev/null | head -n 1)
PIXEL=$(grep -o "$BASE/o/[^\"' <>]*" "$COPY" 2>/dev/null | head -n 1 || true)
CLICK=$(grep -o "$BASE/c/[^\"' <>]*" "$COPY" 2>/dev/null | head -n 1 || true)
if [ -n "$PIXEL" ] && [ -n "$CLICK" ]; then
    pass "the delivered copy carries a pixel and a click URL"
else
    fail "no pixel or click URL in $COPY"
fi
sleep 1.2 # past tracking.scanner_window, so the click is not taken for a scanner's
if [ -n "$PIXEL" ]; then
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -A "$UA" -H 'X-Forwarded-For: 198.51.100.7' "$PIXEL" || true)
    if [ "$code" = 200 ]; then pass "pixel: 200"; else fail "pixel: HTTP $code"; fi
fi
if [ -n "$CLICK" ]; then
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -A "$UA" -H 'X-Forwarded-For: 198.51.100.7' "$CLICK" || true)
    if [ "$code" = 302 ]; then pass "click: 302"; else fail "click: HTTP $code"; fi
fi
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$BASE/o/not-a-token" || true)
if [ "$code" = 404 ]; then pass "bad token: 404"; else fail "bad token: HTTP $code"; fi

expect_query "opens counter moved" "$OPENS" "$(($(printf '%.0f' "$O0") + 1))" 30
expect_query "human opens counter moved" "$HUMAN_OPENS" "$(($(printf '%.0f' "$H0") + 1))" 30
expect_query "clicks counter moved" "$CLICKS" "$(($(printf '%.0f' "$C0") + 1))" 30
expect_query "tracking requests recorded by handler and code" \
    'sum(trackrelay_tracking_requests_total{job="trackrelay", handler="open", code="200"})' 1 30
expect_query "invalid tokens counted" 'sum(trackrelay_tracking_invalid_tokens_total{job="trackrelay"})' 1 30
expect_query "delivery latency histogram observed" \
    'sum(trackrelay_delivery_attempt_duration_seconds_count{job="trackrelay", result="delivered"})' "$COPIES" 30
expect_query "store commits observed" 'sum(trackrelay_store_commit_batch_size_count{job="trackrelay"})' 1 30
expect_query "queue gauge exported" 'count(trackrelay_queue_recipients{job="trackrelay"})' 1 30

# ---------------------------------------------------------------- rules
# Prometheus loaded configs/alerts.yml and evaluates every rule without error;
# nothing fires on this healthy relay.
if "$PY" - "$PROM" "$ROOT/configs/alerts.yml" >"$WORK/rules.out" 2>&1 <<'EOF'; then
import json, re, sys, time, urllib.request
prom, path = sys.argv[1], sys.argv[2]
want = len(re.findall(r"^\s*- alert:", open(path).read(), re.M))
deadline = time.time() + 30
while True:
    d = json.load(urllib.request.urlopen(prom + "/api/v1/rules"))
    rules = [r for g in d["data"]["groups"] for r in g["rules"]]
    evaluated = [r for r in rules if r.get("lastEvaluation", "").startswith("0001") is False]
    bad = [(r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"]
    if len(rules) == want and not bad and len(evaluated) == want:
        break
    if time.time() > deadline:
        print("rules loaded: %d of %d; unhealthy: %s" % (len(rules), want, bad))
        sys.exit(1)
    time.sleep(0.5)
firing = [r["name"] for r in rules if r.get("state") == "firing"]
print("%d alert rules loaded and evaluated, health ok; firing: %s" % (len(rules), firing or "none"))
sys.exit(1 if firing else 0)
EOF
    pass "$(cat "$WORK/rules.out")"
else
    fail "alert rules in Prometheus: $(cat "$WORK/rules.out")"
fi

lint_metrics "after traffic"

# ---------------------------------------------------------------- shutdown
kill -TERM "$RELAY_PID"
rc=0
for _ in $(seq 400); do kill -0 "$RELAY_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$RELAY_PID" 2>/dev/null; then
    fail "SIGTERM: trackrelay still running after 40s"
else
    wait "$RELAY_PID" || rc=$?
    if [ "$rc" = 0 ]; then pass "SIGTERM: trackrelay exits 0"; else fail "SIGTERM: exit $rc"; fi
fi
expect_query "Prometheus sees the relay go down" 'up{job="trackrelay"} == 0' 0 15
