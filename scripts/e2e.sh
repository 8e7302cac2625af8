#!/usr/bin/env bash
# End-to-end test of trackrelay: builds the binary, runs it against a capturing
# upstream SMTP server (scripts/capture_smtpd.py, Debian's python3-aiosmtpd),
# sends mail with swaks and smtplib (also with SMTPUTF8), follows the tracking
# URLs and reads the API.
#
# Needs: go, /usr/bin/python3 with python3-aiosmtpd, swaks, openssl, curl.
# Usage:  bash scripts/e2e.sh            (from anywhere; the repo is found from here)
# Env:    E2E_KEEP=1          keep the work directory even when everything passed
#         E2E_UPSTREAM_AUTH=1 the sink requires AUTH; the relay uses upstream.username
#         E2E_BIN=path        use this binary instead of building one
set -euo pipefail

PY=/usr/bin/python3
# The helpers print UTF-8 addresses (the SMTPUTF8 check), whatever the locale.
export PYTHONIOENCODING=utf-8
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPTS="$ROOT/scripts"
HELPER="$SCRIPTS/e2e_helper.py"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/trackrelay-e2e.XXXXXX")
UA='Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36'

PASSED=0
FAILED=0
SUMMARY_DONE=0
FATAL=0
PIDS=()
RELAY_PID=""

pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }
info() { echo "INFO $*"; }
# check "what" cmd args...: PASS when the command succeeds.
check() {
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
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

summary() {
    [ "$SUMMARY_DONE" = 1 ] && return 0
    SUMMARY_DONE=1
    echo "e2e: $PASSED passed, $FAILED failed"
}

cleanup() {
    local rc=$?
    set +e
    if [ "$rc" != 0 ] && [ "$FATAL" = 0 ]; then
        fail "e2e.sh stopped early (exit status $rc, line ${ERR_LINE:-?})"
    fi
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ "$FAILED" != 0 ] || [ "$rc" != 0 ]; then
        for f in serve.log sink.log; do
            if [ -s "$WORK/$f" ]; then
                echo "---- last lines of $f ----"
                tail -n 40 "$WORK/$f"
            fi
        done
        echo "work directory kept: $WORK"
    elif [ "${E2E_KEEP:-0}" = 1 ]; then
        echo "work directory kept: $WORK"
    else
        rm -rf "$WORK"
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

# wait_http URL SECONDS: until the URL answers 200.
wait_http() {
    local url=$1 secs=$2 i
    for ((i = 0; i < secs * 10; i++)); do
        if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then return 0; fi
        if [ -n "$RELAY_PID" ] && ! kill -0 "$RELAY_PID" 2>/dev/null; then return 1; fi
        sleep 0.1
    done
    return 1
}

for tool in go swaks openssl curl sha256sum "$PY"; do
    command -v "$tool" >/dev/null || fatal "required tool missing: $tool"
done
"$PY" -c 'import aiosmtpd' 2>/dev/null || fatal "python3-aiosmtpd missing for $PY"

echo "== work directory: $WORK"

# ---------------------------------------------------------------- build
BIN="$WORK/trackrelay"
if [ -n "${E2E_BIN:-}" ]; then
    cp "$E2E_BIN" "$BIN"
    pass "binary given: $E2E_BIN"
elif (cd "$ROOT" && go build -o "$WORK/trackrelay" ./cmd/trackrelay) >"$WORK/build.log" 2>&1; then
    pass "go build ./cmd/trackrelay"
else
    cat "$WORK/build.log"
    fatal "go build ./cmd/trackrelay"
fi

# ---------------------------------------------------------------- material
read -r SMTP_PORT HTTP_PORT METRICS_PORT SINK_PORT < <("$PY" "$HELPER" ports 4)
BASE="http://127.0.0.1:$HTTP_PORT"
info "ports: smtp=$SMTP_PORT http=$HTTP_PORT metrics=$METRICS_PORT sink=$SINK_PORT"

if openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" \
    -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature,keyEncipherment" \
    -addext "extendedKeyUsage=serverAuth" >"$WORK/openssl.log" 2>&1; then
    pass "self-signed certificate for 127.0.0.1/localhost"
else
    cat "$WORK/openssl.log"
    fatal "openssl req"
fi

openssl rand -base64 32 >"$WORK/secret"
chmod 600 "$WORK/secret" "$WORK/tls.key"

PASSWORD="pw-$(openssl rand -hex 12)"
if HASH=$(printf '%s\n' "$PASSWORD" | "$BIN" hash-password 2>"$WORK/hash.err"); then
    HASH=$(printf '%s' "$HASH" | tr -d '\r' | awk 'NF { last = $0 } END { print last }')
    if [[ $HASH =~ ^\$2[aby]\$([0-9]{2})\$[./A-Za-z0-9]{53}$ ]] && ((10#${BASH_REMATCH[1]} >= 10)); then
        pass "hash-password prints a bcrypt hash with cost >= 10"
    else
        fatal "hash-password output is not a bcrypt hash (cost >= 10): '$HASH'"
    fi
else
    cat "$WORK/hash.err"
    fatal "trackrelay hash-password"
fi

API_KEY=$(openssl rand -hex 32)
API_KEY_SHA=$(printf '%s' "$API_KEY" | sha256sum | cut -d' ' -f1)
WRONG_KEY=$(openssl rand -hex 32)

UPSTREAM_EXTRA=""
SINK_ARGS=()
if [ "${E2E_UPSTREAM_AUTH:-0}" = 1 ]; then
    UP_PASS=$(openssl rand -hex 10)
    printf '%s\n' "$UP_PASS" >"$WORK/upstream.pass"
    SINK_ARGS=(--auth "relay@example.com:$UP_PASS")
    UPSTREAM_EXTRA="  username: relay@example.com
  password_file: $WORK/upstream.pass"
fi

CFG="$WORK/trackrelay.yaml"
write_config() { # write_config FILE [extra top-level yaml]
    cat >"$1" <<EOF
data_dir: $WORK/data
smtp:
  listen: "127.0.0.1:$SMTP_PORT"
  hostname: relay.e2e.test
  tls_cert_file: $WORK/tls.crt
  tls_key_file: $WORK/tls.key
upstream:
  address: "127.0.0.1:$SINK_PORT"
  tls: none
${UPSTREAM_EXTRA}
http:
  listen: "127.0.0.1:$HTTP_PORT"
metrics:
  listen: "127.0.0.1:$METRICS_PORT"
tracking:
  base_url: "$BASE"
  secret_file: $WORK/secret
  mode: all
accounts:
  - name: alice
    password_hash: '$HASH'
    api_key_sha256: "$API_KEY_SHA"
    networks: []
    self_addresses: ["alice@example.com"]
${2:-}
EOF
}
write_config "$CFG"

# ---------------------------------------------------------------- check-config
if "$BIN" check-config -config "$CFG" >"$WORK/check.out" 2>&1; then
    pass "check-config accepts the config"
else
    cat "$WORK/check.out"
    fatal "check-config accepts the config (exit status non-zero)"
fi

# expect_bad_config NAME KEY: check-config must fail and name KEY.
expect_bad_config() {
    local file=$1 key=$2 what=$3 rc=0
    "$BIN" check-config -config "$file" >"$WORK/bad.out" 2>&1 || rc=$?
    if [ "$rc" = 0 ]; then
        fail "check-config rejects $what (exit 0)"
    elif grep -qF -- "$key" "$WORK/bad.out"; then
        pass "check-config rejects $what, naming '$key' (exit $rc)"
    else
        fail "check-config rejects $what: message does not name '$key': $(head -c 300 "$WORK/bad.out")"
    fi
}
write_config "$WORK/bad1.yaml" "frobnicate_level: 3"
expect_bad_config "$WORK/bad1.yaml" frobnicate_level "an unknown top-level key"
sed "s/^  hostname: relay.e2e.test$/  hostname: relay.e2e.test\n  max_mesage_bytes: 1000/" "$CFG" >"$WORK/bad2.yaml"
expect_bad_config "$WORK/bad2.yaml" max_mesage_bytes "an unknown key under smtp"
sed "s/^  mode: all$/  mode: sometimes/" "$CFG" >"$WORK/bad3.yaml"
expect_bad_config "$WORK/bad3.yaml" mode "tracking.mode: sometimes"

# ---------------------------------------------------------------- servers
mkdir -p "$WORK/sink"
"$PY" "$SCRIPTS/capture_smtpd.py" --port "$SINK_PORT" --dir "$WORK/sink" \
    ${SINK_ARGS[@]+"${SINK_ARGS[@]}"} >"$WORK/sink.log" 2>&1 &
PIDS+=($!)
if "$PY" "$HELPER" wait-port --smtp "$SINK_PORT" 15; then
    pass "capture SMTP server listening on 127.0.0.1:$SINK_PORT"
else
    fatal "capture SMTP server did not start"
fi

"$BIN" serve -config "$CFG" >"$WORK/serve.log" 2>&1 &
RELAY_PID=$!
PIDS+=("$RELAY_PID")
if "$PY" "$HELPER" wait-port --smtp "$SMTP_PORT" 30 && kill -0 "$RELAY_PID" 2>/dev/null; then
    pass "trackrelay serve: SMTP listening on 127.0.0.1:$SMTP_PORT"
else
    fatal "trackrelay serve: SMTP not listening within 30s"
fi
if wait_http "$BASE/healthz" 30; then
    pass "trackrelay serve: GET /healthz is 200"
else
    fatal "trackrelay serve: /healthz not 200 within 30s"
fi
code=$(curl -s -o "$WORK/metrics.txt" -w '%{http_code}' --max-time 10 "http://127.0.0.1:$METRICS_PORT/metrics" || true)
if [ "$code" = 200 ] && grep -q '^trackrelay_' "$WORK/metrics.txt"; then
    pass "metrics: GET /metrics is 200 with trackrelay_ series"
else
    fail "metrics: GET http://127.0.0.1:$METRICS_PORT/metrics (HTTP $code)"
fi

# ---------------------------------------------------------------- send 1 (swaks)
MSGID=$("$PY" "$HELPER" mkmsg "$WORK/msg1.eml" "$WORK/msg1.json")
info "first message: $MSGID"
SWAKS=(swaks --server 127.0.0.1 --port "$SMTP_PORT" --ehlo e2e.test --timeout 30)
rc=0
timeout 90 "${SWAKS[@]}" --from alice@example.com --to bob@example.net,carol@example.org \
    --tls --auth PLAIN --auth-user alice --auth-password "$PASSWORD" \
    --data "$WORK/msg1.eml" >"$WORK/swaks1.out" 2>&1 || rc=$?
DATA_REPLY=$(awk '/^ *~> \.\r?$/ { grab = 1; next } grab && /^<~/ { print; exit }' "$WORK/swaks1.out" | tr -d '\r')
QID=$(printf '%s\n' "$DATA_REPLY" | sed -nE 's/^<~ +250[ -].*queued as ([A-Za-z0-9]+).*/\1/p')
if [ "$rc" = 0 ] && [ -n "$QID" ]; then
    pass "swaks STARTTLS + AUTH PLAIN send to 2 recipients: '$DATA_REPLY'"
else
    grep -E '^(<|\*\*\*)' "$WORK/swaks1.out" | tail -n 20
    fatal "swaks send (exit $rc), reply to DATA '$DATA_REPLY' names no queue id"
fi
info "queue id: $QID"

# ---------------------------------------------------------------- send 2 (smtplib)
rc=0
"$PY" "$HELPER" smtplib-send --port "$SMTP_PORT" --cafile "$WORK/tls.crt" \
    --user alice --password "$PASSWORD" --to dave@example.com \
    --meta "$WORK/msg2.json" --api "$BASE" --key "$API_KEY" >"$WORK/smtplib.out" 2>&1 || rc=$?
tally <"$WORK/smtplib.out"
REPLY2=$(sed -n 's/^REPLY //p' "$WORK/smtplib.out")
QID2=$(printf '%s\n' "$REPLY2" | sed -nE 's/^250 .*queued as ([A-Za-z0-9]+).*/\1/p')
if [ "$rc" = 0 ] && [ -n "$QID2" ]; then
    pass "smtplib STARTTLS (verified cert) + login send: 250 names queue id $QID2"
else
    fail "smtplib send (exit $rc): reply '$REPLY2'"
fi
if [ -n "$QID2" ]; then
    check "the two messages have different queue ids" test "$QID" != "$QID2"
fi
AT250=$(sed -n 's/^API_AT_250 //p' "$WORK/smtplib.out")
case "$AT250" in
    "200 queued" | "200 delivered") pass "the API knows the message as soon as the client has its 250: $AT250" ;;
    *) fail "the API right after the 250 answered '$AT250', want 200 (queued or delivered)" ;;
esac

# ---------------------------------------------------------------- send 3 (self copy)
# A copy to one of the account's self_addresses is never tracked.
MSGID3=$("$PY" "$HELPER" mkmsg "$WORK/msg3.eml" "$WORK/msg3.json")
info "self-address message: $MSGID3"
rc=0
timeout 90 "${SWAKS[@]}" --from alice@example.com --to alice@example.com \
    --tls --auth PLAIN --auth-user alice --auth-password "$PASSWORD" \
    --data "$WORK/msg3.eml" >"$WORK/swaks3.out" 2>&1 || rc=$?
QID3=$(awk '/^ *~> \.\r?$/ { grab = 1; next } grab && /^<~/ { print; exit }' "$WORK/swaks3.out" |
    tr -d '\r' | sed -nE 's/^<~ +250[ -].*queued as ([A-Za-z0-9]+).*/\1/p')
if [ "$rc" = 0 ] && [ -n "$QID3" ]; then
    pass "swaks send to the account's self address: queued as $QID3"
else
    fail "swaks send to the account's self address (exit $rc)"
fi

# ---------------------------------------------------------------- refusals
# swaks_expect NAME EXPECT_CODE_REGEX args...: swaks must fail and show the code.
swaks_expect() {
    local what=$1 re=$2 rc=0
    shift 2
    timeout 90 "${SWAKS[@]}" "$@" >"$WORK/neg.out" 2>&1 || rc=$?
    local err
    err=$(grep -E '^<[~-]?\*+ ' "$WORK/neg.out" | head -n 1 | tr -d '\r' || true)
    if [ "$rc" != 0 ] && [[ $err =~ ^\<[~-]?\*+\ +$re ]]; then
        pass "$what: swaks exit $rc, '$err'"
    else
        fail "$what: swaks exit $rc, first error reply '$err'"
        grep -E '^(<|\*\*\*)' "$WORK/neg.out" | tail -n 12
    fi
}
swaks_expect "no AUTH, plain session from loopback is refused" '5[0-9][0-9]' \
    --from alice@example.com --to bob@example.net --body "not relayed"
swaks_expect "no AUTH after STARTTLS is refused" '5[0-9][0-9]' \
    --from alice@example.com --to bob@example.net --tls --body "not relayed"
swaks_expect "no AUTH, outside sender and recipient is refused" '5[0-9][0-9]' \
    --from mallory@example.net --to victim@example.org --body "not relayed"
swaks_expect "wrong password is 535" '535' \
    --from alice@example.com --to bob@example.net --tls \
    --auth PLAIN --auth-user alice --auth-password "wrong-$PASSWORD" --body "not relayed"

# ---------------------------------------------------------------- delivered copies
tally < <("$PY" "$HELPER" copies --sink "$WORK/sink" --meta "$WORK/msg1.json" \
    --base "$BASE" --timeout 30 --out "$WORK/copies.json" 2>&1)
"$PY" "$HELPER" copy2 --sink "$WORK/sink" --meta "$WORK/msg2.json" --timeout 30 \
    >"$WORK/copy2.out" 2>&1 || true
tally <"$WORK/copy2.out"
MSGID2=$(sed -n 's/^MSGID //p' "$WORK/copy2.out")
tally < <("$PY" "$HELPER" untracked --sink "$WORK/sink" --meta "$WORK/msg3.json" \
    --eml "$WORK/msg3.eml" --rcpt alice@example.com --base "$BASE" \
    --label "copy to self address" --timeout 30 2>&1)
sleep 1
SINK_AFTER=$(ls "$WORK/sink" | grep -c '\.eml$' || true)
check "nothing from the refused sessions reached upstream ($SINK_AFTER copies in all)" \
    test "$SINK_AFTER" = 4

# ---------------------------------------------------------------- tracking URLs
jget() { "$PY" "$HELPER" jget "$@" 2>/dev/null || true; }
PIXEL=$(jget "$WORK/copies.json" bob@example.net pixel)
CLICK1=$(jget "$WORK/copies.json" bob@example.net clicks 0)
CLICK2=$(jget "$WORK/copies.json" bob@example.net clicks 1)
LINK1=$(jget "$WORK/msg1.json" links 0)
LINK2=$(jget "$WORK/msg1.json" links 1)

if [ -n "$PIXEL" ]; then
    out=$(curl -s -A "$UA" -o "$WORK/pixel.bin" -D "$WORK/pixel.hdr" --max-time 10 \
        -w '%{http_code} %{content_type} %{size_download}' "$PIXEL" || true)
    read -r pcode ptype psize <<<"$out"
    if [ "$pcode" = 200 ] && [[ ${ptype:-} == image/gif* ]] && [ "${psize:-}" = 43 ] &&
        [ "$(head -c 6 "$WORK/pixel.bin")" = GIF89a ]; then
        pass "pixel: 200 image/gif, 43 bytes ($PIXEL)"
    else
        fail "pixel $PIXEL: got '$out', want '200 image/gif 43' (GIF89a)"
    fi
    TAMPERED=$("$PY" "$HELPER" tamper "$PIXEL")
    code=$(curl -s -A "$UA" -o /dev/null --max-time 10 -w '%{http_code}' "$TAMPERED" || true)
    check "tampered pixel token is 404 (got $code)" test "$code" = 404
else
    fail "pixel: no pixel URL found in bob's copy"
fi

# follow_click URL WANT_LOCATION WHAT: one request, no redirect following.
follow_click() {
    local url=$1 want=$2 what=$3 code loc
    code=$(curl -s -A "$UA" -o /dev/null -D "$WORK/click.hdr" --max-time 10 -w '%{http_code}' "$url" || true)
    loc=$(grep -i '^location:' "$WORK/click.hdr" | head -n 1 | sed -E 's/^[Ll][Oo][Cc][Aa][Tt][Ii][Oo][Nn]: ?//' | tr -d '\r' || true)
    if [ "$code" = 302 ] && [ "$loc" = "$want" ]; then
        pass "$what: 302 to $want"
    else
        fail "$what: got $code Location '$loc', want 302 '$want'"
    fi
}
if [ -n "$CLICK1" ]; then
    follow_click "$CLICK1" "$LINK1" "click on link 1 (&amp; in the href)"
    [ -n "$CLICK2" ] && follow_click "$CLICK2" "$LINK2" "click on link 2"
    TAMPERED=$("$PY" "$HELPER" tamper "$CLICK1")
    code=$(curl -s -A "$UA" -o /dev/null -D "$WORK/tampered.hdr" --max-time 10 -w '%{http_code}' "$TAMPERED" || true)
    if [ "$code" = 404 ] && ! grep -qi '^location:' "$WORK/tampered.hdr"; then
        pass "tampered click token is 404, no redirect"
    else
        fail "tampered click token $TAMPERED: got $code, want 404"
    fi
    code=$(curl -s -A "$UA" -o /dev/null --max-time 10 -w '%{http_code}' "$BASE/c/not-a-token" || true)
    check "garbage click token is 404 (got $code)" test "$code" = 404
else
    fail "click: no click URL found in bob's copy"
fi

# ---------------------------------------------------------------- API
EXPECT1=$("$PY" -c '
import json, sys
m = json.load(open(sys.argv[1]))
print(json.dumps({"id": sys.argv[2], "message_id": m["message_id"], "account": "alice",
  "from": "alice@example.com", "mode": "all", "recipients": m["rcpts"], "delivered": True,
  "tracked": True, "links": m["links"], "events": ["open", "click"],
  "event_recipient": "bob@example.net", "user_agent": sys.argv[3],
  "self_hits": "bob@example.net"}))' "$WORK/msg1.json" "$QID" "$UA")
tally < <("$PY" "$HELPER" api --base "$BASE" --key "$API_KEY" --ref "$QID" \
    --label "API by queue id" --expect "$EXPECT1" --timeout 20 --dump "$WORK/api1.json" 2>&1)

code=$("$PY" "$HELPER" api-status --base "$BASE" --key "$WRONG_KEY" --ref "$QID")
check "API with a wrong key is 401 (got $code)" test "$code" = 401
code=$("$PY" "$HELPER" api-status --base "$BASE" --key - --ref "$QID")
check "API without a key is 401 (got $code)" test "$code" = 401
code=$("$PY" "$HELPER" api-status --base "$BASE" --key "$API_KEY" --ref "NOSUCHQUEUEID0")
check "API with an unknown ref is 404 (got $code)" test "$code" = 404

got=$("$PY" "$HELPER" api-field --base "$BASE" --key "$API_KEY" --ref "$MSGID" --field id || true)
check "API by Message-ID with <> finds $QID (got $got)" test "$got" = "$QID"
BARE=${MSGID#<}
BARE=${BARE%>}
got=$("$PY" "$HELPER" api-field --base "$BASE" --key "$API_KEY" --ref "$BARE" --field id || true)
check "API by Message-ID without <> finds $QID (got $got)" test "$got" = "$QID"

if [ -n "$QID2" ]; then
    EXPECT2=$("$PY" -c '
import json, sys
print(json.dumps({"id": sys.argv[1], "account": "alice", "recipients": ["dave@example.com"],
  "delivered": True, "message_id": sys.argv[2]}))' "$QID2" "$MSGID2")
    tally < <("$PY" "$HELPER" api --base "$BASE" --key "$API_KEY" --ref "$QID2" \
        --label "API for the smtplib message" --expect "$EXPECT2" --timeout 20 2>&1)
fi

if [ -n "$QID3" ]; then
    EXPECT3=$("$PY" -c '
import json, sys
m = json.load(open(sys.argv[2]))
print(json.dumps({"id": sys.argv[1], "message_id": m["message_id"], "account": "alice",
  "recipients": ["alice@example.com"], "delivered": True, "tracked_false": True}))' "$QID3" "$WORK/msg3.json")
    tally < <("$PY" "$HELPER" api --base "$BASE" --key "$API_KEY" --ref "$QID3" \
        --label "API for the self-address message" --expect "$EXPECT3" --timeout 20 2>&1)
fi

# ---------------------------------------------------------------- internationalized mail
# SMTPUTF8 (RFC 6531) with Python's smtplib: a UTF-8 sender and recipient, a
# domain in U-labels, UTF-8 header fields. The upstream (aiosmtpd offers
# SMTPUTF8) must get SMTPUTF8 on MAIL and the addresses as sent, and the API
# must show them.
rc=0
"$PY" "$HELPER" smtputf8-send --port "$SMTP_PORT" --cafile "$WORK/tls.crt" \
    --user alice --password "$PASSWORD" --meta "$WORK/msg4.json" >"$WORK/smtputf8.out" 2>&1 || rc=$?
tally <"$WORK/smtputf8.out"
check "smtplib SMTPUTF8 session ends cleanly (exit $rc)" test "$rc" = 0
tally < <("$PY" "$HELPER" smtputf8-copies --sink "$WORK/sink" --meta "$WORK/msg4.json" \
    --base "$BASE" --timeout 30 2>&1)
MSGID4=$(jget "$WORK/msg4.json" message_id)
if [ -n "$MSGID4" ]; then
    EXPECT4=$("$PY" -c '
import json, sys
m = json.load(open(sys.argv[1]))
print(json.dumps({"message_id": m["message_id"], "account": "alice", "from": m["from"],
  "recipients": m["rcpts"], "delivered": True}))' "$WORK/msg4.json")
    tally < <("$PY" "$HELPER" api --base "$BASE" --key "$API_KEY" --ref "$MSGID4" \
        --label "API for the SMTPUTF8 message" --expect "$EXPECT4" --timeout 20 2>&1)
fi

# ---------------------------------------------------------------- shutdown
kill -TERM "$RELAY_PID"
rc=0
for _ in $(seq 200); do kill -0 "$RELAY_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$RELAY_PID" 2>/dev/null; then
    fail "SIGTERM: trackrelay still running after 20s"
else
    wait "$RELAY_PID" || rc=$?
    check "SIGTERM: trackrelay exits with status 0 (got $rc)" test "$rc" = 0
fi
# The EXIT trap stops the rest and prints the summary line last.
