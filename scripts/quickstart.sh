#!/usr/bin/env bash
# Runs the README's Quickstart exactly as written, so that it cannot go
# stale: every ```sh block of the "## Quickstart" section, in order, in one
# shell, in an empty directory. The first block (the server) runs in the
# background; `go run ./cmd/trackrelay` is the freshly built binary.
# It needs the embedded defaults' ports free: 2525, 8080, 9725.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
WORK=$(mktemp -d /tmp/trackrelay-quickstart.XXXXXX)
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

go build -o "$WORK/trackrelay" ./cmd/trackrelay

# Extract the blocks of the Quickstart section into numbered files.
awk -v dir="$WORK" '
    /^## / { inqs = ($0 == "## Quickstart") }
    inqs && /^```sh$/ { n++; f = sprintf("%s/block%02d.sh", dir, n); inblock = 1; next }
    inblock && /^```$/ { inblock = 0; close(f); next }
    inblock { print > f }
' README.md
blocks=("$WORK"/block*.sh)
[ "${#blocks[@]}" -ge 4 ] || { echo "quickstart: found only ${#blocks[@]} blocks in README.md"; exit 1; }

cd "$WORK"
server=$(sed "s#go run ./cmd/trackrelay#$WORK/trackrelay#" "${blocks[0]}")
bash -c "$server" >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do
    curl -s -o /dev/null http://127.0.0.1:8080/healthz && break
    sleep 0.1
done

# The other blocks run in one shell, as a reader would type them.
: >"$WORK/all.sh"
for b in "${blocks[@]:1}"; do
    sed "s#go run ./cmd/trackrelay#$WORK/trackrelay#" "$b" >>"$WORK/all.sh"
    printf '\nsleep 0.3\n' >>"$WORK/all.sh" # the copy is delivered a moment after the 250
done
out=$(bash -e "$WORK/all.sh" 2>&1) || { echo "$out"; echo "quickstart: a block failed"; echo "quickstart: 0 passed, 1 failed"; exit 1; }

pass=0; fail=0
check() {
    if printf '%s' "$out" | grep -qF -- "$2"; then pass=$((pass + 1)); echo "PASS $1"
    else fail=$((fail + 1)); echo "FAIL $1: output lacks $2"; fi
}
grep -q 'API key of account "default"' "$WORK/server.out" && { pass=$((pass + 1)); echo "PASS API key printed"; } || { fail=$((fail + 1)); echo "FAIL API key not printed"; }
check "swaks got a queue id" "250 2.0.0 OK: queued as "
check "smtplib got a queue id" "(250, b'2.0.0 OK: queued as "
check "pixel answered 200" "200"
check "click redirected to the original URL" "302 https://example.com/quote/42?x=1&y=2"
check "the API shows the open" '"type":"open"'
check "the API shows the click" '"type":"click"'
check "the API classes our own hits as self" '"class":"self"'
check "the console logged in" "303"
check "the console shows the subject" "<h1>Your quote</h1>"
if [ "$fail" -ne 0 ]; then
    echo "$out" | tail -n 40
fi
echo "quickstart: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
