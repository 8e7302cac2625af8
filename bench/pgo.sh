#!/usr/bin/env bash
# Makes cmd/trackrelay/default.pgo, the CPU profile that `go build` uses
# for profile-guided optimisation of the binary (Go's -pgo=auto, the
# default). The profile is of the built binary under the benchmarks' loads:
#   1. relaying: Postfix's smtp-source (8 sessions) into trackrelay, which
#      delivers to smtp-sink: the 20 KB sample with a connection per message
#      and with reuse (-d), then the 5 MB one (tracking on, as bench/delivery.sh);
#   2. tracking: wrk on an /o/ and a /c/ URL of a delivered copy, every hit
#      recorded (as bench/tracking.sh).
# The two runs' profiles are merged. Rerun it after a change to a hot path,
# and compare with bench/delivery.sh and bench/tracking.sh before and after.
#
#   bash bench/pgo.sh
#
# Needs Debian's postfix (smtp-source, smtp-sink) and wrk, curl, python3, and
# the sample messages in ../shared/bench. Everything listens on 127.0.0.1.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHARED=${SHARED:-../shared/bench}
WORK=$(mktemp -d /tmp/trackrelay-pgo.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

for tool in smtp-source smtp-sink; do
    command -v "$tool" >/dev/null || PATH="$PATH:/usr/sbin"
    command -v "$tool" >/dev/null || { echo "pgo: $tool not found (apt-get install postfix)"; exit 1; }
done
command -v wrk >/dev/null || { echo "pgo: wrk not found (apt-get install wrk)"; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

go build -o "$WORK/trackrelay" ./cmd/trackrelay
SINK_PORT=$(free_port)
smtp-sink -u nobody 127.0.0.1:"$SINK_PORT" 256 >/dev/null 2>&1 &
PIDS+=($!)

# start NAME UPSTREAM: runs the relay with a CPU profile; UPSTREAM empty is
# capture mode.
start() {
    SMTP_PORT=$(free_port); HTTP_PORT=$(free_port); METRICS_PORT=$(free_port)
    {
        echo "data_dir: $WORK/$1"
        echo "smtp: {listen: 127.0.0.1:$SMTP_PORT, hostname: relay.bench, max_connections_per_ip: 1000}"
        [ -n "$2" ] && echo "upstream: {address: $2, tls: none, max_connections: 8}"
        echo "http: {listen: 127.0.0.1:$HTTP_PORT}"
        echo "metrics: {listen: 127.0.0.1:$METRICS_PORT}"
        echo "tracking: {base_url: http://127.0.0.1:$HTTP_PORT, mode: all, max_events_per_recipient: 1000000000, record_rate: -1}"
        echo "log: {level: warn}"
        echo "accounts: [{name: bench, networks: [127.0.0.0/8]}]"
    } >"$WORK/$1.yaml"
    "$WORK/trackrelay" serve -config "$WORK/$1.yaml" -cpuprofile "$WORK/$1.pprof" >"$WORK/$1.log" 2>&1 &
    RELAY_PID=$!
    PIDS+=($RELAY_PID)
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "pgo: relay did not start"; cat "$WORK/$1.log"; exit 1
}

# stop: SIGTERM, which writes the profile.
stop() {
    kill -TERM "$RELAY_PID"
    wait "$RELAY_PID" 2>/dev/null || true
    [ -s "$WORK/$1.pprof" ] || { echo "pgo: no profile from $1"; cat "$WORK/$1.log"; exit 1; }
}

delivered() {
    curl -s "http://127.0.0.1:$METRICS_PORT/metrics" |
        awk '/^trackrelay_delivery_attempts_total\{result="delivered"\}/ {print $2; f=1} END {if (!f) print 0}'
}

echo "pgo: relaying"
start relay "127.0.0.1:$SINK_PORT"
total=0
for load in "msg-html-20k.eml 3000" "msg-html-20k.eml 2000 -d" "msg-attach-5m.eml 50"; do
    set -- $load
    smtp-source -s 8 -m "$2" ${3:-} -f sender@bench.test -t rcpt@example.net -F "$SHARED/$1" 127.0.0.1:"$SMTP_PORT"
    total=$((total + $2))
done
for _ in $(seq 6000); do
    n=$(delivered)
    [ "${n%.*}" -ge "$total" ] && break
    sleep 0.01
done
stop relay

echo "pgo: tracking"
start track ""
read -r OPEN CLICK < <(python3 bench/tracking_urls.py "$SMTP_PORT" "$WORK/track/outbox")
[ -n "$CLICK" ] || exit 1
for url in "$OPEN" "$CLICK"; do
    wrk -t2 -c256 -d8s "$url" >/dev/null
done
stop track

go tool pprof -proto "$WORK/relay.pprof" "$WORK/track.pprof" >"$WORK/merged.pgo" 2>/dev/null
mv "$WORK/merged.pgo" cmd/trackrelay/default.pgo
echo "pgo: wrote cmd/trackrelay/default.pgo ($(wc -c <cmd/trackrelay/default.pgo) bytes); rebuild and compare with bench/delivery.sh and bench/tracking.sh"
