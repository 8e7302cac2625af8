#!/usr/bin/env bash
# Delivery benchmark of the built binary, end to end: Postfix's smtp-source
# (8 sessions) submits into trackrelay, which spools durably, instruments
# each copy (tracking on) and delivers it to Postfix's smtp-sink. In the same
# run, smtp-source straight into smtp-sink gives the ceiling.
#
#   bash bench/delivery.sh [RUNS]        (default 3 runs; medians reported)
#
# With PEER_SMTPRELAY=/path/to/smtprelay (github.com/decke/smtprelay, built
# by hand), each run also measures that pass-through relay into the same
# sink, for scale.
#
# Needs Debian's postfix package (smtp-source, smtp-sink) and the sample
# messages in ../shared/bench. Everything listens on 127.0.0.1.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS=${1:-3}
SHARED=${SHARED:-../shared/bench}
WORK=$(mktemp -d /tmp/trackrelay-bench.XXXXXX)
SINK_PID=""
RELAY_PID=""
cleanup() {
    [ -n "$RELAY_PID" ] && kill -9 "$RELAY_PID" 2>/dev/null || true
    [ -n "$SINK_PID" ] && kill -9 "$SINK_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

for tool in smtp-source smtp-sink; do
    command -v "$tool" >/dev/null || PATH="$PATH:/usr/sbin"
    command -v "$tool" >/dev/null || { echo "bench: $tool not found (apt-get install postfix)"; exit 1; }
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

# BIN=/path/to/trackrelay measures that binary instead of building one
# (to compare builds, e.g. one made with go build -pgo=off).
if [ -n "${BIN:-}" ]; then cp "$BIN" "$WORK/trackrelay"; else go build -o "$WORK/trackrelay" ./cmd/trackrelay; fi
SINK_PORT=$(free_port)
# smtp-sink as root needs -u; -c would print a counter, we count at the relay.
smtp-sink -u nobody 127.0.0.1:"$SINK_PORT" 256 >/dev/null 2>&1 &
SINK_PID=$!
sleep 0.3

# delivered_count reads the relay's counter of delivered copies.
delivered_count() {
    curl -s "http://127.0.0.1:$METRICS_PORT/metrics" |
        awk '/^trackrelay_delivery_attempts_total\{result="delivered"\}/ {print $2; f=1} END {if (!f) print 0}'
}

start_relay() {
    SMTP_PORT=$(free_port); HTTP_PORT=$(free_port); METRICS_PORT=$(free_port)
    rm -rf "$WORK/data"
    cat >"$WORK/config.yaml" <<EOF
data_dir: $WORK/data
smtp:
  listen: 127.0.0.1:$SMTP_PORT
  hostname: relay.bench
  max_connections_per_ip: 1000
upstream:
  address: 127.0.0.1:$SINK_PORT
  tls: none
  max_connections: 8
http:
  listen: 127.0.0.1:$HTTP_PORT
metrics:
  listen: 127.0.0.1:$METRICS_PORT
tracking:
  base_url: https://t.example.com
  mode: all
log:
  level: warn
accounts:
  - name: bench
    networks: [127.0.0.0/8]
EOF
    if [ -n "${DKIM:-}" ]; then
        [ -f "$WORK/dkim.pem" ] || "$WORK/trackrelay" dkim-keygen -domain lindqvist-cycling.example.com \
            -selector bench -type "$DKIM" -out "$WORK/dkim.pem" >/dev/null
        printf 'dkim:\n  - domain: lindqvist-cycling.example.com\n    selector: bench\n    key_file: %s\n' \
            "$WORK/dkim.pem" >>"$WORK/config.yaml"
    fi
    "$WORK/trackrelay" serve -config "$WORK/config.yaml" >"$WORK/relay.log" 2>&1 &
    RELAY_PID=$!
    for _ in $(seq 100); do
        curl -s "http://127.0.0.1:$METRICS_PORT/metrics" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "bench: relay did not start"; cat "$WORK/relay.log"; exit 1
}

stop_relay() {
    kill -TERM "$RELAY_PID"
    wait "$RELAY_PID" 2>/dev/null || true
    RELAY_PID=""
}

# ceiling FILE M [-d]: msgs/s of smtp-source straight into smtp-sink.
ceiling() {
    local t0 t1
    t0=$(now)
    smtp-source -s 8 -m "$2" $3 -f sender@bench.test -t rcpt@example.net -F "$1" 127.0.0.1:"$SINK_PORT"
    t1=$(now)
    python3 -c "print(f'{$2/($t1-$t0):.1f}')"
}

# relayed FILE M [-d]: msgs/s from the first submission to the last copy
# delivered upstream; also records the relay's peak RSS in $WORK/rss.
relayed() {
    local t0 t1 n
    start_relay
    t0=$(now)
    smtp-source -s 8 -m "$2" $3 -f sender@bench.test -t rcpt@example.net -F "$1" 127.0.0.1:"$SMTP_PORT"
    [ -n "${VERBOSE:-}" ] && echo "submitted in $(python3 -c "print(f'{$(now)-$t0:.2f}')")s, delivered so far $(delivered_count)" >&2
    for _ in $(seq 6000); do
        n=$(delivered_count)
        [ "${n%.*}" -ge "$2" ] && break
        sleep 0.01
    done
    t1=$(now)
    awk '/VmHWM/ {print $2}' "/proc/$RELAY_PID/status" >"$WORK/rss"
    if [ -n "${DKIM:-}" ]; then
        curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | grep '^trackrelay_dkim_signatures_total' >&2
    fi
    stop_relay
    [ "${n%.*}" -ge "$2" ] || { echo "bench: only $n of $2 delivered"; exit 1; }
    python3 -c "print(f'{$2/($t1-$t0):.1f}')"
}

# peer FILE M [-d]: msgs/s through a peer relay, when PEER_SMTPRELAY names
# a decke/smtprelay binary (built by hand; it is not part of this project):
# a pass-through relay on go-smtp that neither stores nor rewrites, into the
# same sink, for scale.
peer() {
    local t0 t1 port pid
    port=$(free_port)
    "$PEER_SMTPRELAY" -listen 127.0.0.1:"$port" -remotes smtp://127.0.0.1:"$SINK_PORT" -log_level error \
        -allowed_nets 127.0.0.0/8 -max_connections -1 -max_message_size 64000000 >"$WORK/peer.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
        sleep 0.05
    done
    t0=$(now)
    smtp-source -s 8 -m "$2" $3 -f sender@bench.test -t rcpt@example.net -F "$1" 127.0.0.1:"$port"
    t1=$(now)
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    python3 -c "print(f'{$2/($t1-$t0):.1f}')"
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

report() { # name file M flags
    local c=() r=() rss=() p=()
    for _ in $(seq "$RUNS"); do
        c+=("$(ceiling "$2" "$3" "$4")")
        r+=("$(relayed "$2" "$3" "$4")")
        rss+=("$(cat "$WORK/rss")")
        [ -n "${PEER_SMTPRELAY:-}" ] && p+=("$(peer "$2" "$3" "$4")")
    done
    # Each run's ratio is against the ceiling measured just before it, so
    # that a machine whose speed drifts between runs still gives fair
    # ratios; the ratio reported is the median of the runs' ratios.
    local cm rm rssm pm
    cm=$(printf '%s\n' "${c[@]}" | median)
    rm=$(printf '%s\n' "${r[@]}" | median)
    rssm=$(printf '%s\n' "${rss[@]}" | sort -n | tail -n1)
    printf '%-28s ceiling %8s msg/s   trackrelay %8s msg/s   %5.1f%% of ceiling   peak RSS %d MB   (runs: ceiling %s; trackrelay %s)\n' \
        "$1" "$cm" "$rm" "$(ratios c r | median)" $((rssm / 1024)) "${c[*]}" "${r[*]}"
    if [ -n "${PEER_SMTPRELAY:-}" ]; then
        pm=$(printf '%s\n' "${p[@]}" | median)
        printf '%-28s ceiling %8s msg/s   smtprelay  %8s msg/s   %5.1f%% of ceiling   (pass-through peer; runs: %s)\n' \
            "" "$cm" "$pm" "$(ratios c p | median)" "${p[*]}"
        # The two relays in the same runs: steadier than either's ratio to
        # a ceiling that moves with the machine.
        printf '%-28s trackrelay at %.0f%% of smtprelay'"'"'s rate (median of the runs)\n' "" "$(ratios p r | median)"
    fi
}

# ratios BASE OTHER: 100*OTHER[i]/BASE[i] for each run, one a line (the
# arrays are report's locals, named).
ratios() {
    local -n base=$1 other=$2
    local i
    for i in "${!base[@]}"; do
        python3 -c "print(100*${other[$i]}/${base[$i]})"
    done
}

echo "bench: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $RUNS runs each, medians; peak RSS is the largest of the runs"
# ONLY=20k, ONLY=20k-reuse or ONLY=5m runs one case; VERBOSE=1 also says
# when the submissions ended, to tell accepting from delivering; DKIM=rsa or
# DKIM=ed25519 signs every copy (the samples' From domain gets a key).
[ -n "${DKIM:-}" ] && echo "bench: every copy DKIM-signed ($DKIM)"
case "${ONLY:-all}" in all|20k) report "20 KB, M=2000" "$SHARED/msg-html-20k.eml" 2000 "" ;; esac
case "${ONLY:-all}" in all|20k-reuse) report "20 KB, M=2000, reuse (-d)" "$SHARED/msg-html-20k.eml" 2000 "-d" ;; esac
case "${ONLY:-all}" in all|5m) report "5 MB, M=50" "$SHARED/msg-attach-5m.eml" 50 "" ;; esac
