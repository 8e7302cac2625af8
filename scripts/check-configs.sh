#!/usr/bin/env bash
# Checks the files an operator deploys from configs/ with the real tools:
#   - trackrelay.example.yaml   trackrelay check-config
#   - trackrelay.service        systemd-analyze verify, systemd-analyze security
#   - alerts.yml                promtool check rules, promtool test rules (alerts_test.yml)
#   - haproxy.cfg               haproxy -c, then haproxy run in front of two stub
#                               nodes (the fleet's load balancer: routes, X-Forwarded-For,
#                               health checks, /readyz not exposed)
#   - grafana-dashboard.json    valid JSON; every PromQL expression (and every
#                               alert expression) names metrics and labels the
#                               binary exports (go test TestConfigsUseExportedMetrics)
#
# Needs: go, promtool (Debian: prometheus), systemd-analyze (Debian: systemd),
# haproxy (Debian: haproxy), /usr/bin/python3. A missing tool is a failure, not a skip, unless
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

# ---------------------------------------------------------------- load balancer
# haproxy.cfg is checked by haproxy -c, then run (listeners and servers moved
# to free ports of 127.0.0.1) in front of two stub nodes: /o/ /c/ /api/ /ui/
# and /healthz reach a node with the client's address in X-Forwarded-For,
# both nodes get requests, /readyz and /metrics are a 404, plain http
# redirects to https, and with one node gone every request still reaches the
# other.
if need haproxy "haproxy.cfg"; then
    HP="$WORK/haproxy"
    mkdir -p "$HP"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=t.example.com \
        -keyout "$HP/key" -out "$HP/crt" >/dev/null 2>&1 ||
        fail "openssl req (a certificate for configs/haproxy.cfg)"
    cat "$HP/crt" "$HP/key" >"$HP/t.example.com.pem"
    sed "s#/etc/haproxy/certs/#$HP/#g" "$CONFIGS/haproxy.cfg" >"$HP/haproxy.cfg"
    run "haproxy -c configs/haproxy.cfg (the certificate under a temporary dir)" \
        haproxy -c -f "$HP/haproxy.cfg"
    read -r P_HTTPS P_HTTP P_NODE1 P_NODE2 < <("$PY" -c '
import socket
s = [socket.socket() for _ in range(4)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')
    sed -e "s#^    bind :443 #    bind 127.0.0.1:$P_HTTPS #" -e "s#^    bind :80\$#    bind 127.0.0.1:$P_HTTP#" \
        -e "s#10.0.0.11:8080#127.0.0.1:$P_NODE1#" -e "s#10.0.0.12:8080#127.0.0.1:$P_NODE2#" \
        -e "s#^    log /dev/log local0#    log stderr format short local0#" \
        -e '/^    user haproxy$/d' -e '/^    group haproxy$/d' "$HP/haproxy.cfg" >"$HP/run.cfg"
    cat >"$HP/lb_check.py" <<'EOF'
import http.server, ssl, subprocess, sys, threading, time, urllib.error, urllib.request
cfg, https, plain, n1, n2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
failed = 0


def check(ok, what, detail=""):
    global failed
    print(("PASS " if ok else "FAIL ") + what + ("" if ok else ": %s" % (detail,)), flush=True)
    failed += 0 if ok else 1


class Node(http.server.BaseHTTPRequestHandler):
    """A stub node: /healthz is ok, anything else names the node and the
    X-Forwarded-For it got."""

    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok"
        else:
            body = ("%s %s" % (self.server.name, self.headers.get("X-Forwarded-For", "-"))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


nodes = []
for name, port in (("node1", n1), ("node2", n2)):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Node)
    srv.name = name
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    nodes.append(srv)
proxy = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a):
        return None


opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=ctx))


def get(url):
    try:
        with opener.open(url, timeout=5) as r:
            return r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers
    except OSError as e:
        return 0, repr(e), {}


base = "https://127.0.0.1:%d" % https
try:
    for _ in range(100):
        if get(base + "/healthz")[0] == 200:
            break
        time.sleep(0.1)
    seen = set()
    for path in ("/o/tok.gif", "/c/tok", "/api/v1/events", "/ui/login") * 2:
        st, body, _ = get(base + path)
        check(st == 200 and body.endswith(" 127.0.0.1"), "haproxy.cfg passes %s to a node, with X-Forwarded-For" % path, (st, body))
        seen.add(body.split(" ")[0])
    check(seen == {"node1", "node2"}, "haproxy.cfg spreads requests over both nodes", seen)
    st, body, _ = get(base + "/healthz")
    check(st == 200 and body == "ok", "haproxy.cfg passes /healthz", (st, body))
    for path in ("/readyz", "/metrics", "/"):
        st, body, _ = get(base + path)
        check(st == 404, "haproxy.cfg answers %s with its own 404" % path, (st, body))
    st, _, h = get("http://127.0.0.1:%d/o/tok.gif" % plain)
    check(st == 301 and h.get("Location", "").startswith("https://"), "haproxy.cfg redirects plain http to https",
          (st, h.get("Location")))
    nodes[0].shutdown()
    nodes[0].server_close()
    got = [get(base + "/o/tok.gif")[:2] for _ in range(10)]
    check(all(st == 200 and b.startswith("node2 ") for st, b in got),
          "haproxy.cfg: with node1 gone, every request reaches node2", got)
finally:
    proxy.terminate()
    out, _ = proxy.communicate(timeout=10)
    if failed:
        print(out.decode(errors="replace"))
sys.exit(1 if failed else 0)
EOF
    echo "\$ haproxy -db -f haproxy.cfg (ports moved) in front of two stub nodes"
    while IFS= read -r line; do
        case $line in
        "PASS "*) pass "${line#PASS }" ;;
        "FAIL "*) fail "${line#FAIL }" ;;
        *) echo "    $line" ;;
        esac
    done < <("$PY" "$HP/lb_check.py" "$HP/run.cfg" "$P_HTTPS" "$P_HTTP" "$P_NODE1" "$P_NODE2" 2>&1)
fi

# ---------------------------------------------------------------- dashboard
run "configs/grafana-dashboard.json is valid JSON" "$PY" -m json.tool "$CONFIGS/grafana-dashboard.json" /dev/null
run "dashboard and alerts reference only exported metrics and labels" \
    go test -count=1 -run 'TestConfigsUseExportedMetrics|TestCheckExprCatchesMistakes' ./cmd/trackrelay

echo "check-configs: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
