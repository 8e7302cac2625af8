#!/usr/bin/env bash
# DKIM end to end, checked by an independent implementation: builds the
# binary, makes keys with `trackrelay dkim-keygen`, runs the relay with a
# dkim: config against a capturing upstream (scripts/capture_smtpd.py),
# sends HTML mail, and verifies every captured copy with dkimpy
# (Debian's python3-dkim), whose DNS look-ups are answered from the TXT
# records that dkim-keygen printed.
#
# Cases: RSA-2048 (two recipients), Ed25519, a message already signed for
# our own domain (re-signed after instrumenting), and one signed for a
# domain we hold no key for (delivered unchanged, its signature intact).
#
# Needs: go, /usr/bin/python3 with python3-aiosmtpd and python3-dkim, curl.
# Usage: bash scripts/dkim-verify.sh     Env: DKIM_KEEP=1 keeps the work dir.
set -euo pipefail

PY=/usr/bin/python3
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPTS="$ROOT/scripts"
HELPER="$SCRIPTS/dkim_verify.py"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/trackrelay-dkim.XXXXXX")
PASSED=0
FAILED=0
PIDS=()

pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }
tally() {
    local line
    while IFS= read -r line; do
        case $line in
        "PASS "*) PASSED=$((PASSED + 1)) ;;
        "FAIL "*) FAILED=$((FAILED + 1)) ;;
        esac
        echo "$line"
    done
}
cleanup() {
    local rc=$? pid
    set +e
    if [ "$rc" != 0 ] && [ "$FAILED" = 0 ]; then fail "dkim-verify.sh stopped early (exit status $rc)"; fi
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ "$FAILED" != 0 ]; then
        for f in serve.log sink.log; do
            [ -s "$WORK/$f" ] && { echo "---- last lines of $f ----"; tail -n 30 "$WORK/$f"; }
        done
        echo "work directory kept: $WORK"
    elif [ "${DKIM_KEEP:-0}" = 1 ]; then
        echo "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    echo "dkim-verify: $PASSED passed, $FAILED failed"
    [ "$FAILED" = 0 ] || exit 1
    exit "$rc"
}
trap cleanup EXIT
fatal() { fail "$*"; exit 1; }

"$PY" -c 'import dkim, aiosmtpd' 2>/dev/null || fatal "python3-dkim and python3-aiosmtpd are needed for $PY"

BIN="$WORK/trackrelay"
(cd "$ROOT" && go build -o "$BIN" ./cmd/trackrelay) || fatal "go build ./cmd/trackrelay"
pass "go build ./cmd/trackrelay"

# ---------------------------------------------------------------- keys
: >"$WORK/records"
# keygen DOMAIN SELECTOR TYPE: writes $WORK/DOMAIN.pem, appends its TXT record.
keygen() {
    local out name value
    out=$("$BIN" dkim-keygen -domain "$1" -selector "$2" -type "$3" -out "$WORK/$1.pem") ||
        fatal "dkim-keygen -domain $1 -type $3"
    name=$(printf '%s\n' "$out" | sed -n 's/^  name:  //p')
    value=$(printf '%s\n' "$out" | sed -n 's/^  value: //p')
    if [ "$name" = "$2._domainkey.$1" ] && [[ $value == "v=DKIM1; k=$3; p="* ]] &&
        [ "$(stat -c %a "$WORK/$1.pem")" = 600 ]; then
        pass "dkim-keygen $3 for $1: key file 0600, TXT record $name"
    else
        fatal "dkim-keygen $3 for $1: unexpected output: $out"
    fi
    echo "$name $value" >>"$WORK/records"
}
keygen example.com tr2026 rsa
keygen example.org ed2026 ed25519
keygen esp.example esp rsa # a foreign signer: the relay has no key for it

# ---------------------------------------------------------------- relay
read -r SMTP_PORT HTTP_PORT METRICS_PORT SINK_PORT < <("$PY" "$SCRIPTS/e2e_helper.py" ports 4)
CFG="$WORK/trackrelay.yaml"
cat >"$CFG" <<EOF
data_dir: $WORK/data
smtp:
  listen: "127.0.0.1:$SMTP_PORT"
  hostname: relay.dkim.test
upstream:
  address: "127.0.0.1:$SINK_PORT"
  tls: none
http:
  listen: "127.0.0.1:$HTTP_PORT"
metrics:
  listen: "127.0.0.1:$METRICS_PORT"
tracking:
  base_url: "http://127.0.0.1:$HTTP_PORT"
  mode: all
accounts:
  - name: app
    networks: ["127.0.0.0/8"]
dkim:
  - domain: example.com
    selector: tr2026
    key_file: $WORK/example.com.pem
  - domain: example.org
    selector: ed2026
    key_file: $WORK/example.org.pem
EOF
"$BIN" check-config -config "$CFG" >"$WORK/check.out" 2>&1 || { cat "$WORK/check.out"; fatal "check-config rejects the dkim config"; }
pass "check-config accepts the dkim config"

mkdir -p "$WORK/sink"
"$PY" "$SCRIPTS/capture_smtpd.py" --port "$SINK_PORT" --dir "$WORK/sink" >"$WORK/sink.log" 2>&1 &
PIDS+=($!)
"$PY" "$SCRIPTS/e2e_helper.py" wait-port --smtp "$SINK_PORT" 15 || fatal "capture SMTP server did not start"
"$BIN" serve -config "$CFG" >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
"$PY" "$SCRIPTS/e2e_helper.py" wait-port --smtp "$SMTP_PORT" 30 || fatal "trackrelay serve did not start"
pass "relay and capture sink running"

# ---------------------------------------------------------------- mail
send() { # send FILE FROM TO...
    local file=$1 from=$2
    shift 2
    local to=() r
    for r in "$@"; do to+=(--to "$r"); done
    "$PY" "$HELPER" send --port "$SMTP_PORT" --from "$from" "${to[@]}" "$file" || fatal "sending $file"
}
"$PY" "$HELPER" mkmsg --from quotes@example.com --to client@example.net --subject "rsa quote" >"$WORK/m1.eml"
send "$WORK/m1.eml" quotes@example.com client@example.net second@example.net
"$PY" "$HELPER" mkmsg --from sales@example.org --to client@example.net --subject "ed25519 quote" >"$WORK/m2.eml"
send "$WORK/m2.eml" sales@example.org client@example.net
"$PY" "$HELPER" mkmsg --from quotes@example.com --to client@example.net --subject "presigned ours" \
    --sign-key "$WORK/example.com.pem" --sign-domain example.com --sign-selector tr2026 >"$WORK/m3.eml"
send "$WORK/m3.eml" quotes@example.com client@example.net
"$PY" "$HELPER" mkmsg --from quotes@example.com --to client@example.net --subject "presigned foreign" \
    --sign-key "$WORK/esp.example.pem" --sign-domain esp.example --sign-selector esp >"$WORK/m4.eml"
send "$WORK/m4.eml" quotes@example.com client@example.net
pass "5 copies submitted"

"$PY" "$HELPER" verify --sink "$WORK/sink" --count 5 --records "$WORK/records" \
    --expect "rsa quote=example.com:instrumented" \
    --expect "ed25519 quote=example.org:instrumented" \
    --expect "presigned ours=example.com:instrumented" \
    --expect "presigned foreign=esp.example:unchanged" >"$WORK/verify.out" 2>&1 || true
tally <"$WORK/verify.out"

# The relay's own count: four copies signed, none failed.
metrics=$(curl -fsS --max-time 10 "http://127.0.0.1:$METRICS_PORT/metrics" || true)
signed=$(printf '%s\n' "$metrics" | sed -n 's/^trackrelay_dkim_signatures_total{result="signed"} //p')
errors=$(printf '%s\n' "$metrics" | sed -n 's/^trackrelay_dkim_signatures_total{result="error"} //p')
if [ "$signed" = 4 ] && [ "$errors" = 0 ]; then
    pass "metrics: trackrelay_dkim_signatures_total signed=4 error=0"
else
    fail "metrics: trackrelay_dkim_signatures_total signed=$signed error=$errors (want 4, 0)"
fi
