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
# Needs wrk (apt-get install wrk), curl and python3. Every hit is kept as a
# detailed event (max_events_per_recipient is set very high), the worst
# case for the store.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
DURATION=${1:-5s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-"64 256 1024"}
WRK=${WRK:-/usr/bin/wrk}
WORK=$(mktemp -d /tmp/trackrelay-trackbench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

command -v "$WRK" >/dev/null || { echo "bench: wrk not found (apt-get install wrk)"; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# BIN=/path/to/trackrelay measures that binary instead of building one
# (to compare builds, e.g. one made with go build -pgo=off).
if [ -n "${BIN:-}" ]; then cp "$BIN" "$WORK/trackrelay"; else go build -o "$WORK/trackrelay" ./cmd/trackrelay; fi

# write_config NAME: a config for one server, on fresh ports.
write_config() {
    local name=$1 smtp http
    smtp=$(free_port); http=$(free_port)
    cat >"$WORK/$name.yaml" <<YAML
data_dir: $WORK/$name
smtp:
  listen: 127.0.0.1:$smtp
  hostname: relay.bench
http:
  listen: 127.0.0.1:$http
metrics:
  listen: ""
tracking:
  base_url: http://127.0.0.1:$http
  mode: all
  max_events_per_recipient: 1000000000
  record_rate: -1
log:
  level: warn
accounts:
  - name: bench
    networks: [127.0.0.0/8]
YAML
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

# run PORT PATH CONNS: prints "req/s p99_ms".
run() {
    local out
    out=$("$WRK" -t2 -c"$3" -d"$DURATION" --timeout 5s --latency "http://127.0.0.1:$1$2")
    echo "$out" >>"$WORK/wrk.log"
    echo "$out" | awk '
        /Requests\/sec:/ { rps = $2 }
        $1 == "99%" { v = $2; u = v; gsub(/[0-9.]/, "", u); sub(/[a-z]+$/, "", v)
                      ms = (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : (u == "m") ? v * 60000 : v }
        /Non-2xx or 3xx/ { bad = $NF }
        END { printf "%.0f %.2f %s\n", rps, ms, (bad == "" ? 0 : bad) }'
}

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
            read -r crps cp99 cbad < <(run "$HTTP_NOREC" "$path" "$c")
            read -r rrps rp99 rbad < <(run "$HTTP_REC" "$path" "$c")
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
