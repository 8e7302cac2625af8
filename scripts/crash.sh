#!/usr/bin/env bash
# Crash test: 1,000 messages from 8 parallel senders into the built binary,
# `kill -9` in the middle, restart, and count at the upstream sink: every
# message that got a 250 must be delivered at least once. Duplicates (a
# message delivered twice because the crash came between delivery and its
# record) are reported, not failed: delivery is at-least-once.
#
#   bash scripts/crash.sh [MESSAGES]
#
# Needs Debian's python3-aiosmtpd (the sink runs on /usr/bin/python3).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
N=${1:-1000}
SENDERS=8
WORK=$(mktemp -d /tmp/trackrelay-crash.XXXXXX)
PIDS=()
SEND_PIDS=()
cleanup() {
    for p in "${PIDS[@]}" "${SEND_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    [ -n "${RELAY_PID:-}" ] && kill -9 "$RELAY_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

go build -o "$WORK/trackrelay" ./cmd/trackrelay
SMTP_PORT=$(free_port); HTTP_PORT=$(free_port); SINK_PORT=$(free_port)
mkdir -p "$WORK/sink"
/usr/bin/python3 scripts/capture_smtpd.py --port "$SINK_PORT" --dir "$WORK/sink" >"$WORK/sink.log" 2>&1 &
PIDS+=($!)

cat >"$WORK/config.yaml" <<EOF
data_dir: $WORK/data
smtp:
  listen: 127.0.0.1:$SMTP_PORT
  hostname: relay.test
upstream:
  address: 127.0.0.1:$SINK_PORT
  tls: none
  max_connections: 8
http:
  listen: 127.0.0.1:$HTTP_PORT
metrics:
  listen: ""
tracking:
  base_url: http://127.0.0.1:$HTTP_PORT
delivery:
  retry_initial: 200ms
  retry_max: 1s
log:
  level: warn
accounts:
  - name: crash
    networks: [127.0.0.0/8]
EOF

start_relay() {
    "$WORK/trackrelay" serve -config "$WORK/config.yaml" >>"$WORK/relay.log" 2>&1 &
    RELAY_PID=$!
    for _ in $(seq 100); do
        if /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1', $SMTP_PORT), 0.2)" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "crash: relay did not start"; cat "$WORK/relay.log"; exit 1
}
start_relay

# Each sender submits its share of the numbered messages; a message counts
# as accepted only when its 250 arrived. A refused or cut connection is
# retried (bounded), as a real client would.
cat >"$WORK/send.py" <<'EOF'
import smtplib, sys, time
port, first, last, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
html = "<html><body><p>Message {n}</p><a href=\"https://example.com/q?n={n}&amp;x=1\">quote</a></body></html>"
with open(out, "a", buffering=1) as acked:
    for n in range(first, last):
        msg = ("From: crash@example.com\r\nTo: client@example.net\r\nSubject: crash {n}\r\n"
               "X-Seq: {n}\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
               + html + "\r\n").format(n=n)
        deadline = time.time() + 60
        while True:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                    s.sendmail("crash@example.com", ["client@example.net"], msg)
                acked.write("%d\n" % n)
                break
            except (OSError, smtplib.SMTPException):
                if time.time() > deadline:
                    sys.exit("sender gave up on message %d" % n)
                time.sleep(0.05)
EOF
per=$(( (N + SENDERS - 1) / SENDERS ))
for i in $(seq 0 $((SENDERS - 1))); do
    first=$((i * per)); last=$(( (i + 1) * per < N ? (i + 1) * per : N ))
    python3 "$WORK/send.py" "$SMTP_PORT" "$first" "$last" "$WORK/acked.$i" &
    SEND_PIDS+=($!)
done

# Kill the relay the hard way once about a third of the messages are in.
while :; do
    acked=$({ cat "$WORK"/acked.* 2>/dev/null || true; } | wc -l)
    [ "$acked" -ge $((N / 3)) ] && break
    sleep 0.05
done
kill -9 "$RELAY_PID"
wait "$RELAY_PID" 2>/dev/null || true
echo "crash: kill -9 after $acked acknowledged messages"
sleep 1
start_relay
echo "crash: relay restarted"

for p in "${SEND_PIDS[@]}"; do wait "$p"; done
sort -n "$WORK"/acked.* | uniq >"$WORK/acked"
ACKED=$(wc -l <"$WORK/acked")

# Wait (bounded) until every acknowledged message reached the sink.
seqs() { { grep -h '^X-Seq:' "$WORK"/sink/*.eml 2>/dev/null || true; } | tr -d '\r' | awk '{print $2}'; }
for _ in $(seq 600); do
    got=$(seqs | sort -n | uniq | wc -l)
    [ "$got" -ge "$ACKED" ] && break
    sleep 0.1
done
seqs | sort -n | uniq >"$WORK/delivered"
missing=$(comm -23 "$WORK/acked" "$WORK/delivered" | wc -l)
total=$(seqs | wc -l)
unique=$(wc -l <"$WORK/delivered")
dups=$((total - unique))
echo "crash: acknowledged=$ACKED delivered_unique=$unique delivered_total=$total duplicates=$dups missing=$missing"
if [ "$missing" -ne 0 ]; then
    echo "crash: LOST acknowledged messages:"; comm -23 "$WORK/acked" "$WORK/delivered" | head
    echo "crash: 0 passed, 1 failed"
    exit 1
fi
echo "crash: 1 passed, 0 failed"
