#!/usr/bin/env bash
# Checks the files an operator deploys from configs/ with the real tools:
#   - trackrelay.example.yaml   trackrelay check-config
#   - trackrelay.service        systemd-analyze verify, systemd-analyze security
#   - alerts.yml                promtool check rules, promtool test rules (alerts_test.yml)
#   - grafana-dashboard.json    valid JSON; every PromQL expression (and every
#                               alert expression) names metrics and labels the
#                               binary exports (go test TestConfigsUseExportedMetrics)
#
# Needs: go, promtool (Debian: prometheus), systemd-analyze (Debian: systemd),
# /usr/bin/python3. A missing tool is a failure, not a skip, unless
# CHECK_CONFIGS_ALLOW_MISSING=1.
# Usage: bash scripts/check-configs.sh   (from anywhere)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONFIGS="$ROOT/configs"
PY=/usr/bin/python3
WORK=$(mktemp -d "${TMPDIR:-/tmp}/trackrelay-configs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export PATH="$PATH:/usr/local/go/bin"

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }
# run "what" cmd args...: runs the command showing its output, PASS on exit 0.
run() {
    local what=$1 rc=0
    shift
    echo "\$ $*"
    "$@" >"$WORK/run.out" 2>&1 || rc=$?
    sed 's/^/    /' "$WORK/run.out"
    if [ "$rc" = 0 ]; then pass "$what"; else fail "$what (exit $rc)"; fi
}
need() {
    if command -v "$1" >/dev/null; then return 0; fi
    if [ "${CHECK_CONFIGS_ALLOW_MISSING:-0}" = 1 ]; then
        echo "SKIP $2: $1 is not installed"
    else
        fail "$2: $1 is not installed"
    fi
    return 1
}

cd "$ROOT" || exit 1

# ---------------------------------------------------------------- binary
BIN="$WORK/trackrelay"
if go build -o "$BIN" ./cmd/trackrelay >"$WORK/build.log" 2>&1; then
    pass "go build ./cmd/trackrelay"
else
    cat "$WORK/build.log"
    fail "go build ./cmd/trackrelay"
    BIN=""
fi

# ---------------------------------------------------------------- example config
# check-config opens the files the config names: give the example's
# /etc/trackrelay and /var/lib/trackrelay a stand-in under the work dir.
if [ -n "$BIN" ]; then
    mkdir -p "$WORK/etc" "$WORK/lib"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=relay.example.com \
        -keyout "$WORK/etc/tls.key" -out "$WORK/etc/tls.crt" >/dev/null 2>&1 ||
        fail "openssl req (a certificate for the example config)"
    openssl rand -base64 32 >"$WORK/etc/secret"
    echo "upstream password" >"$WORK/etc/upstream.pass"
    sed -e "s#/etc/trackrelay/#$WORK/etc/#g" -e "s#/var/lib/trackrelay#$WORK/lib#g" \
        "$CONFIGS/trackrelay.example.yaml" >"$WORK/example.yaml"
    run "check-config accepts configs/trackrelay.example.yaml (paths under a temporary dir)" \
        "$BIN" check-config -config "$WORK/example.yaml"
fi

# ---------------------------------------------------------------- systemd unit
UNIT="$CONFIGS/trackrelay.service"
if need systemd-analyze "systemd unit"; then
    # verify checks that ExecStart's program exists: point a copy of the
    # unit, identical but for that path, at the binary just built.
    mkdir -p "$WORK/unit"
    if [ -n "$BIN" ]; then
        sed "s#/usr/local/bin/trackrelay#$BIN#g" "$UNIT" >"$WORK/unit/trackrelay.service"
    else
        cp "$UNIT" "$WORK/unit/trackrelay.service"
    fi
    # systemd-analyze verify prints its findings and may still exit 0: any
    # output about our unit is a failure.
    echo "\$ systemd-analyze verify trackrelay.service"
    rc=0
    (cd "$WORK/unit" && systemd-analyze verify --man=no ./trackrelay.service) >"$WORK/verify.out" 2>&1 || rc=$?
    sed 's/^/    /' "$WORK/verify.out"
    if [ "$rc" = 0 ] && ! grep -q 'trackrelay' "$WORK/verify.out"; then
        pass "systemd-analyze verify configs/trackrelay.service (exit 0, no findings)"
    else
        fail "systemd-analyze verify configs/trackrelay.service (exit $rc)"
    fi
    # The exposure score of the sandbox (0 safest .. 10): keep it "OK".
    rc=0
    (cd "$WORK/unit" && systemd-analyze security --offline=true --threshold=20 ./trackrelay.service) \
        >"$WORK/security.out" 2>&1 || rc=$?
    score=$(grep -o 'Overall exposure level for trackrelay.service: .*' "$WORK/security.out" || true)
    echo "    $score"
    if [ "$rc" = 0 ] && [ -n "$score" ]; then
        pass "systemd-analyze security: $score (threshold 2.0)"
    else
        grep '✗' "$WORK/security.out" | sed 's/^/    /'
        fail "systemd-analyze security (exit $rc): ${score:-no score}"
    fi
fi
for key in 'DynamicUser=yes|User=trackrelay' 'StateDirectory=trackrelay' 'ProtectSystem=strict' \
    'NoNewPrivileges=yes' 'AmbientCapabilities=CAP_NET_BIND_SERVICE$' 'CapabilityBoundingSet=CAP_NET_BIND_SERVICE$' \
    'ExecStart=/usr/local/bin/trackrelay serve -config /etc/trackrelay/trackrelay.yaml$' 'KillSignal=SIGTERM'; do
    if grep -Eq "^($key)" "$UNIT"; then pass "unit sets $key"; else fail "unit lacks $key"; fi
done
# TimeoutStopSec must exceed the default shutdown grace (30s) plus the 5s
# the HTTP listeners get.
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$UNIT")
if [ -n "$stop" ] && [ "$stop" -gt 35 ]; then
    pass "TimeoutStopSec=${stop}s exceeds delivery.shutdown_grace (30s) + 5s"
else
    fail "TimeoutStopSec='${stop}' must be above 35s"
fi

# ---------------------------------------------------------------- alert rules
if need promtool "alert rules"; then
    run "promtool check rules configs/alerts.yml" promtool check rules "$CONFIGS/alerts.yml"
    run "promtool test rules configs/alerts_test.yml" promtool test rules "$CONFIGS/alerts_test.yml"
fi

# ---------------------------------------------------------------- dashboard
run "configs/grafana-dashboard.json is valid JSON" "$PY" -m json.tool "$CONFIGS/grafana-dashboard.json" /dev/null
run "dashboard and alerts reference only exported metrics and labels" \
    go test -count=1 -run 'TestConfigsUseExportedMetrics|TestCheckExprCatchesMistakes' ./cmd/trackrelay

echo "check-configs: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
