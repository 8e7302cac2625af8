#!/usr/bin/python3
"""Helpers for scripts/fleet-e2e.sh (standard library only; run with /usr/bin/python3).

The script plays the load balancer: tracking URLs carry the fleet's base_url
and are sent to a node's own address with X-Forwarded-For set, as a proxy
listed in tracking.trusted_proxies does.

Subcommands print result lines that fleet-e2e.sh counts:
    PASS <what>
    FAIL <what>: <detail>
    INFO <text>
Anything else is passed through as is.
"""

import argparse
import email
import email.policy
import glob
import html.parser
import http.client
import json
import os
import re
import smtplib
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

CRLF = "\r\n"
UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
      "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36")
# A reader's address, as the load balancer reports it (TEST-NET-2): not the
# submitter's, so hits are a person's.
READER_IP = "198.51.100.7"


def out(kind, what, detail=None):
    line = "%s %s" % (kind, what)
    if detail is not None:
        line += ": %s" % detail
    print(line, flush=True)


def check(cond, what, detail=None):
    out("PASS" if cond else "FAIL", what, None if cond else detail)
    return bool(cond)


def cmd_ports(args):
    socks = []
    for _ in range(args.n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


# --------------------------------------------------------------------------
# HTTP


def request(method, url, key=None, headers=None, timeout=10):
    """One request, redirects not followed: (status, headers, body)."""
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        h = dict(headers or {})
        if key is not None:
            h["Authorization"] = "Bearer " + key
        path = u.path + ("?" + u.query if u.query else "")
        c.request(method, path, headers=h)
        r = c.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        c.close()


def api_json(node, path, key):
    status, _, body = request("GET", node.rstrip("/") + path, key)
    doc = None
    if status == 200:
        doc = json.loads(body)
    return status, doc, body


def to_node(url, base, node):
    """The tracking URL url (on the fleet's base) sent to node instead."""
    if not url.startswith(base + "/"):
        raise ValueError("%s is not on %s" % (url, base))
    return node.rstrip("/") + url[len(base):]


# --------------------------------------------------------------------------
# mail


def cmd_send(args):
    """Sends one HTML message with two links; prints the queue id (and, with
    --found-on, a PASS or FAIL line on stderr: whether that node found the
    message right after the 250, before QUIT)."""
    rcpts = args.to.split(",")
    body = ("<html><body><p>Quote {s}</p>"
            "<p><a href=\"https://example.com/quote?id=1&amp;s={s}\">the quote</a></p>"
            "<p><a href=\"https://example.org/terms\">terms</a></p>"
            "</body></html>").format(s=args.subject.replace(" ", "-"))
    raw = CRLF.join([
        "From: Alice <alice@example.com>",
        "To: " + ", ".join(rcpts),
        "Subject: " + args.subject,
        "Message-ID: <%s@fleet.test>" % args.subject.replace(" ", "-"),
        "MIME-Version: 1.0",
        "Content-Type: text/html; charset=utf-8",
    ]) + CRLF + CRLF + body + CRLF
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            with smtplib.SMTP("127.0.0.1", args.port, local_hostname="app.fleet.test", timeout=30) as s:
                s.ehlo()
                code, resp = s.mail("alice@example.com")
                if code != 250:
                    raise smtplib.SMTPException("MAIL %d %r" % (code, resp))
                for r in rcpts:
                    code, resp = s.rcpt(r)
                    if code not in (250, 251):
                        raise smtplib.SMTPException("RCPT %d %r" % (code, resp))
                code, resp = s.data(raw.encode())
                text = resp.decode("utf-8", "replace")
                m = re.search(r"queued as ([A-Za-z0-9]+)", text)
                if code != 250 or not m:
                    print("send %r: %d %s" % (args.subject, code, text), file=sys.stderr)
                    return 1
                if args.found_on:
                    # Right away, before QUIT: the app asks as soon as it
                    # has the queue id, and the load balancer may send it
                    # to any node.
                    try:
                        status, doc, body = api_json(args.found_on, "/api/v1/messages/" + m.group(1), args.key)
                    except (OSError, ValueError) as e:
                        status, doc, body = 0, None, repr(e).encode()
                    ok = status == 200 and doc and doc.get("id") == m.group(1)
                    print("%s the other node finds %s right after its 250%s" % (
                        "PASS" if ok else "FAIL", m.group(1), "" if ok else ": %d %s" % (status, body[:200])),
                        file=sys.stderr, flush=True)
                print(m.group(1), flush=True)
                return 0
        except (smtplib.SMTPException, OSError) as e:
            if time.monotonic() > deadline:
                print("send %r: %r" % (args.subject, e), file=sys.stderr)
                return 1
            time.sleep(0.2)


class LinkParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.imgs, self.hrefs = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img" and a.get("src"):
            self.imgs.append(a["src"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])


def copy_urls(path, base):
    """The pixel and the click URLs of a captured copy, and its recipient."""
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    part = msg.get_body(preferencelist=("html",))
    p = LinkParser()
    p.feed(part.get_content())
    to = str(msg["To"] or "")
    return {
        "file": os.path.basename(path),
        "to": to,
        "pixels": [u for u in p.imgs if u.startswith(base + "/o/")],
        "clicks": [u for u in p.hrefs if u.startswith(base + "/c/")],
    }


def cmd_copies(args):
    """Waits until outbox holds the copies of queue id qid; writes their URLs as JSON."""
    deadline = time.monotonic() + args.timeout
    while True:
        files = sorted(glob.glob(os.path.join(args.outbox, args.qid + "-*.eml")))
        if len(files) >= args.n or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if not check(len(files) == args.n, "%d copies of %s captured by the accepting node" % (args.n, args.qid),
                 "found %d" % len(files)):
        return 1
    copies = [copy_urls(f, args.base) for f in files]
    ok = all(len(c["pixels"]) == 1 and len(c["clicks"]) == 2 for c in copies)
    check(ok, "each copy has one pixel and two click URLs on the fleet's base_url %s" % args.base,
          json.dumps(copies)[:400])
    with open(args.out, "w") as f:
        json.dump(copies, f, indent=1)
    return 0 if ok else 1


# --------------------------------------------------------------------------
# API and feed


def cmd_wait_delivered(args):
    deadline = time.monotonic() + args.timeout
    while True:
        status, doc, body = api_json(args.node, "/api/v1/messages/" + args.qid, args.key)
        states = [((r.get("delivery") or {}).get("status")) for r in (doc or {}).get("recipients", [])]
        if states and all(s == "delivered" for s in states):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    check(states and all(s == "delivered" for s in states),
          "%s: every copy of %s shows delivered (reported by the node that delivered it)" % (args.name, args.qid),
          "%d %s" % (status, states))


def cmd_hit(args):
    """Opens and clicks one copy through one node, as a person behind the load balancer."""
    copies = json.load(open(args.copies))
    c = copies[args.copy]
    hdr = {"User-Agent": UA, "X-Forwarded-For": READER_IP}
    status, headers, body = request("GET", to_node(c["pixels"][0], args.base, args.node), headers=hdr)
    check(status == 200 and body[:4] == b"GIF8", "%s: open pixel answered 200 with a GIF" % args.name,
          "%d %r" % (status, body[:20]))
    status, headers, _ = request("GET", to_node(c["clicks"][0], args.base, args.node), headers=hdr)
    loc = dict((k.lower(), v) for k, v in headers).get("location", "")
    check(status == 302 and loc.startswith("https://example.com/quote?id=1&s="),
          "%s: click answered 302 to the original URL" % args.name, "%d %r" % (status, loc))


def cmd_same_view(args):
    """Both nodes answer the same message view; the hits are counted."""
    views = []
    for node in (args.a, args.b):
        status, doc, body = api_json(node, "/api/v1/messages/" + args.qid, args.key)
        views.append((status, doc, body))
    (sa, da, ba), (sb, db, bb) = views
    check(sa == 200 and sb == 200 and ba == bb, "both nodes answer the same view of %s" % args.qid,
          "A %d, B %d, %d and %d bytes" % (sa, sb, len(ba), len(bb)))
    if not da:
        return
    r = da["recipients"][args.copy]
    check(r.get("opened") and r.get("opens") == 1 and r.get("clicks") == 1,
          "the view counts the open and the click made through the other node",
          json.dumps(r)[:300])
    classes = sorted(e.get("class") for e in da.get("events", []))
    check(classes == ["human", "human"], "both hits are a person's (the reader's address from X-Forwarded-For)",
          classes)


def feed_page(node, key, after, limit=1000):
    q = "/api/v1/events?limit=%d" % limit
    if after is not None:
        q += "&after=" + urllib.parse.quote(after, safe="")
    status, doc, body = api_json(node, q, key)
    if status != 200:
        raise RuntimeError("feed on %s: %d %s" % (node, status, body[:200]))
    return doc.get("events") or [], doc.get("next")


def read_feed(nodes, key, after=None):
    """The whole feed after cursor after, each page from the next node in
    turn (a cursor of one node must work on every node); (entries, next)."""
    entries, i = [], 0
    while True:
        page, nxt = feed_page(nodes[i % len(nodes)], key, after)
        i += 1
        entries.extend(page)
        if nxt:
            after = nxt
        if not page:
            return entries, after


def cmd_same_feed(args):
    bodies = []
    for node in (args.a, args.b):
        status, doc, body = api_json(node, "/api/v1/events?limit=1000", args.key)
        bodies.append((status, doc, body))
    (sa, da, ba), (sb, db, bb) = bodies
    check(sa == 200 and sb == 200 and ba == bb, "both nodes answer the same feed",
          "A %d, B %d, %d and %d bytes" % (sa, sb, len(ba), len(bb)))
    kinds = sorted(e.get("type") for e in (da or {}).get("events", []) if e.get("message") == args.qid)
    check("open" in kinds and "click" in kinds, "the feed holds the open and the click of %s" % args.qid, kinds)
    if da and da.get("next"):
        with open(args.cursor, "w") as f:
            f.write(da["next"])


def cmd_erase(args):
    status, _, body = request("DELETE", args.a.rstrip("/") + "/api/v1/messages/" + args.qid, args.key)
    check(status == 204, "DELETE %s on one node: 204" % args.qid, "%d %s" % (status, body[:200]))
    for name, node in (("A", args.a), ("B", args.b)):
        status, _, body = api_json(node, "/api/v1/messages/" + args.qid, args.key)
        check(status == 404, "node %s: the erased message is a 404" % name, "%d %s" % (status, body[:200]))
    _, cursor = read_feed([args.a, args.b], args.key)
    copies = json.load(open(args.copies))
    hdr = {"User-Agent": UA, "X-Forwarded-For": READER_IP}
    for name, node in (("A", args.a), ("B", args.b)):
        status, headers, _ = request("GET", to_node(copies[1]["clicks"][0], args.base, node), headers=hdr)
        loc = dict((k.lower(), v) for k, v in headers).get("location", "")
        check(status == 302 and loc.startswith("https://example.com/quote"),
              "node %s: a later click on the erased message still redirects" % name, "%d %r" % (status, loc))
        status, _, _ = request("GET", to_node(copies[1]["pixels"][0], args.base, node), headers=hdr)
        check(status == 200, "node %s: its pixel still loads" % name, status)
    # Each hit was answered after its store decided, so the feed shows it now or never.
    later, _ = read_feed([args.b, args.a], args.key, cursor)
    mine = [e for e in later if e.get("message") == args.qid]
    check(not mine, "the later hits on the erased message are not stored (no feed entry on either node)",
          json.dumps(mine)[:300])
    for name, node in (("A", args.a), ("B", args.b)):
        status, _, _ = api_json(node, "/api/v1/messages/" + args.qid, args.key)
        check(status == 404, "node %s: the erased message stays a 404 after those hits" % name, status)


# --------------------------------------------------------------------------
# load


def cmd_load(args):
    """Pixel load (one request in five a click) on the nodes in turn, as a
    load balancer spreads it (a refused connection is tried on the next
    node), at args.rate requests a second at most,
    until the stop file appears, args.max requests are made or
    args.seconds pass. Every request carries a
    unique marker in its user agent; one line per request goes to
    args.out: marker, index of the node that answered (or was tried last),
    kind, status, start and end (Unix seconds). A request that got no
    answer has status 0."""
    copies = json.load(open(args.copies))
    targets = []
    for c in copies:
        targets.append(("open", c["pixels"][0]))
        targets.append(("click", c["clicks"][args.link % len(c["clicks"])]))
    targets = [t for t in targets if t[0] == "open"] * 4 + [t for t in targets if t[0] == "click"]
    nodes = args.nodes.split(",")
    lock = threading.Lock()
    state = {"n": 0}
    outf = open(args.out, "a", buffering=1)
    start = time.monotonic()

    def worker(w):
        conns = {}
        i = 0
        while True:
            with lock:
                if state["n"] >= args.max or os.path.exists(args.stop) or time.monotonic() - start > args.seconds:
                    break
                n = state["n"]
                state["n"] += 1
            due = start + n / args.rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            ni = n % len(nodes)
            kind, url = targets[(n // len(nodes)) % len(targets)]
            marker = "%s-%d-%d" % (args.tag, w, i)
            i += 1
            hdr = {"User-Agent": UA + " fleet-e2e/" + marker,
                   "X-Forwarded-For": "203.0.113.%d" % (1 + n % 250)}
            t0 = time.time()
            for attempt in range(len(nodes)):
                status, refused = 0, False
                u = urllib.parse.urlsplit(to_node(url, args.base, nodes[ni]))
                try:
                    c = conns.get(ni)
                    if c is None:
                        c = http.client.HTTPConnection(u.hostname, u.port, timeout=args.timeout)
                        try:
                            c.connect()
                        except ConnectionRefusedError:
                            refused = True
                            raise
                        conns[ni] = c
                    c.request("GET", u.path, headers=hdr)
                    r = c.getresponse()
                    r.read()
                    status = r.status
                except (OSError, http.client.HTTPException):
                    c = conns.pop(ni, None)
                    if c is not None:
                        c.close()
                # As a load balancer does: a node that refuses the
                # connection never saw the request, so the next one gets
                # it. A request cut off after it was sent is not repeated
                # (it may have been recorded): it counts as not answered.
                if not refused or attempt == len(nodes) - 1:
                    break
                ni = (ni + 1) % len(nodes)
            t1 = time.time()
            outf.write("%s %d %s %d %.3f %.3f\n" % (marker, ni, kind, status, t0, t1))
            if status == 0:
                time.sleep(0.05)  # a dead node refuses at once: do not spin
        for c in conns.values():
            c.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outf.close()
    return 0


def read_load(path):
    rows = []
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) == 6:
                rows.append({"marker": p[0], "node": int(p[1]), "kind": p[2], "status": int(p[3]),
                             "t0": float(p[4]), "t1": float(p[5])})
    return rows


def answered(r):
    return (r["kind"] == "open" and r["status"] == 200) or (r["kind"] == "click" and r["status"] == 302)


def cmd_count(args):
    """Prints how many requests of the load file were answered."""
    try:
        rows = read_load(args.load)
    except FileNotFoundError:
        rows = []
    print(sum(1 for r in rows if answered(r)))


def cmd_stats(args):
    """The load's outcome; with --window, about the requests made within it."""
    rows = read_load(args.load)
    ans = [r for r in rows if answered(r)]
    other = [r for r in rows if not answered(r)]
    out("INFO", "%s: %d requests, %d answered (%d opens, %d clicks), %d not answered; by node: %s" % (
        args.name, len(rows), len(ans), sum(1 for r in ans if r["kind"] == "open"),
        sum(1 for r in ans if r["kind"] == "click"), len(other),
        ", ".join("%s %d/%d" % ("AB"[i], sum(1 for r in ans if r["node"] == i),
                                 sum(1 for r in rows if r["node"] == i)) for i in range(2))))
    if args.window:
        lo, hi = (float(x) for x in args.window.split(","))
        inside = [r for r in rows if r["t0"] < hi and r["t1"] > lo]
        bad = [r for r in inside if not answered(r)]
        lat = sorted(r["t1"] - r["t0"] for r in inside)
        check(len(inside) > 0 and any(r["kind"] == "click" for r in inside),
              "%s: requests (opens and clicks) were made while PostgreSQL was down" % args.name, len(inside))
        if lat:
            out("INFO", "%s: while PostgreSQL was down: %d requests, latency p50 %.0f ms, p99 %.0f ms, max %.0f ms" % (
                args.name, len(inside), 1000 * lat[len(lat) // 2], 1000 * lat[int(len(lat) * 0.99)], 1000 * lat[-1]))
        check(not bad, "%s: every pixel and link was answered while PostgreSQL was down (%d requests)" % (
            args.name, len(inside)), "%d not answered, e.g. %s" % (len(bad), bad[:3]))
    if args.all_answered:
        check(not other, "%s: every request was answered" % args.name,
              "%d not answered, e.g. %s" % (len(other), other[:3]))


def cmd_no_loss(args):
    """Every answered hit of the load is in the feed (read across both
    nodes, a cursor of one used on the other), none twice; waits up to
    --timeout for a backlog to be shipped; then the message's events_total
    is the same on both nodes and covers them."""
    nodes = args.nodes.split(",")
    rows = read_load(args.load)
    want = {r["marker"] for r in rows if answered(r)}
    tried = {r["marker"] for r in rows}
    deadline = time.monotonic() + args.timeout
    seen, ids, dup, cursor = {}, set(), [], None
    prefix = "fleet-e2e/" + args.tag + "-"
    while True:
        try:
            page, cursor = read_feed(nodes, args.key, cursor)
        except (OSError, RuntimeError, ValueError) as e:
            page = []
            err = e
        else:
            err = None
        for e in page:
            if e.get("id") in ids:
                dup.append(e.get("id"))
            ids.add(e.get("id"))
            ua = e.get("user_agent") or ""
            k = ua.find(prefix)
            if k >= 0 and e.get("type") in ("open", "click"):
                m = ua[k + len("fleet-e2e/"):]
                seen[m] = seen.get(m, 0) + 1
        missing = want - set(seen)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if err:
        out("INFO", "%s: last feed read failed: %s" % (args.name, err))
    twice = [m for m, n in seen.items() if n > 1]
    extra = set(seen) - want
    out("INFO", "%s: %d answered hits, %d in the feed (%d recorded whose answer was lost: in flight at a kill or a timeout)" % (
        args.name, len(want), len(seen), len(extra)))
    check(not missing, "%s: no answered hit is missing from the feed" % args.name,
          "%d of %d missing, e.g. %s" % (len(missing), len(want), sorted(missing)[:5]))
    check(not (set(seen) - tried), "%s: the feed holds no hit that was never made" % args.name, sorted(set(seen) - tried)[:5])
    check(not twice and not dup, "%s: no feed entry twice" % args.name, (twice[:5], dup[:5]))
    totals = []
    for node in nodes:
        status, doc, body = api_json(node, "/api/v1/messages/" + args.qid, args.key)
        totals.append((doc or {}).get("stats", {}).get("events_total") if status == 200 else None)
    base = args.before
    ok = totals[0] is not None and all(t == totals[0] for t in totals) and totals[0] - base >= len(want)
    check(ok, "%s: the message's events_total is the same on both nodes and counts every answered hit" % args.name,
          "events_total %s (before %d), answered %d" % (totals, base, len(want)))


def cmd_events_total(args):
    status, doc, body = api_json(args.node, "/api/v1/messages/" + args.qid, args.key)
    print((doc or {}).get("stats", {}).get("events_total", 0) if status == 200 else -1)


def cmd_readyz(args):
    """/readyz during an outage: 200, ready but degraded, its database check failing."""
    try:
        status, _, body = request("GET", args.node.rstrip("/") + "/readyz")
    except OSError as e:
        status, body = 0, repr(e).encode()
    text = body.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = {}
    check(status == 200 and doc.get("ready") is True,
          "%s: /readyz answers 200, ready, while PostgreSQL is down (not \"not ready\")" % args.name,
          "%d %s" % (status, text[:300]))
    db = (doc.get("checks") or {}).get("database") or {}
    check(doc.get("degraded") is True and db.get("ok") is False,
          "%s: /readyz says degraded, its database check failing" % args.name, text[:300])


def cmd_wait_found(args):
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            status, doc, body = api_json(args.node, "/api/v1/messages/" + args.qid, args.key)
        except OSError as e:
            status, body = 0, repr(e).encode()
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    check(status == 200, "%s: %s, accepted while PostgreSQL was down, is found once it is back" % (args.name, args.qid),
          "%d %s" % (status, body[:200]))


def main(argv):
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ports")
    p.add_argument("n", type=int)
    p.set_defaults(fn=cmd_ports)
    p = sub.add_parser("send")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--subject", required=True)
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--found-on", help="a node that must find the message right after its 250")
    p.add_argument("--key")
    p.set_defaults(fn=cmd_send)
    p = sub.add_parser("copies")
    for a in ("--outbox", "--qid", "--base", "--out"):
        p.add_argument(a, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60)
    p.set_defaults(fn=cmd_copies)
    for name, fn in (("wait-delivered", cmd_wait_delivered), ("wait-found", cmd_wait_found)):
        p = sub.add_parser(name)
        for a in ("--node", "--qid", "--key", "--name"):
            p.add_argument(a, required=True)
        p.add_argument("--timeout", type=float, default=60)
        p.set_defaults(fn=fn)
    p = sub.add_parser("hit")
    for a in ("--node", "--copies", "--base", "--name"):
        p.add_argument(a, required=True)
    p.add_argument("--copy", type=int, default=0)
    p.set_defaults(fn=cmd_hit)
    p = sub.add_parser("same-view")
    for a in ("--a", "--b", "--qid", "--key"):
        p.add_argument(a, required=True)
    p.add_argument("--copy", type=int, default=0)
    p.set_defaults(fn=cmd_same_view)
    p = sub.add_parser("same-feed")
    for a in ("--a", "--b", "--qid", "--key", "--cursor"):
        p.add_argument(a, required=True)
    p.set_defaults(fn=cmd_same_feed)
    p = sub.add_parser("erase")
    for a in ("--a", "--b", "--qid", "--key", "--copies", "--base"):
        p.add_argument(a, required=True)
    p.set_defaults(fn=cmd_erase)
    p = sub.add_parser("load")
    for a in ("--nodes", "--copies", "--base", "--out", "--stop", "--tag"):
        p.add_argument(a, required=True)
    p.add_argument("--max", type=int, default=100000)
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--rate", type=float, default=400)
    p.add_argument("--timeout", type=float, default=10)
    p.add_argument("--link", type=int, default=0)
    p.set_defaults(fn=cmd_load)
    p = sub.add_parser("count")
    p.add_argument("load")
    p.set_defaults(fn=cmd_count)
    p = sub.add_parser("stats")
    p.add_argument("--load", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--window")
    p.add_argument("--all-answered", action="store_true")
    p.set_defaults(fn=cmd_stats)
    p = sub.add_parser("no-loss")
    for a in ("--nodes", "--load", "--key", "--qid", "--name", "--tag"):
        p.add_argument(a, required=True)
    p.add_argument("--before", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60)
    p.set_defaults(fn=cmd_no_loss)
    p = sub.add_parser("events-total")
    for a in ("--node", "--qid", "--key"):
        p.add_argument(a, required=True)
    p.set_defaults(fn=cmd_events_total)
    p = sub.add_parser("readyz")
    for a in ("--node", "--name"):
        p.add_argument(a, required=True)
    p.set_defaults(fn=cmd_readyz)
    args = ap.parse_args(argv)
    return args.fn(args) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
