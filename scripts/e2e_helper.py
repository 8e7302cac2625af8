#!/usr/bin/python3
"""Helpers for scripts/e2e.sh (standard library only; run with /usr/bin/python3).

Subcommands print result lines that e2e.sh counts:
    PASS <what>
    FAIL <what>: <detail>
    INFO <text>
Anything else is passed through as is.
"""

import argparse
import base64
import email
import email.policy
import email.utils
import hashlib
import html
import html.parser
import json
import os
import re
import secrets
import smtplib
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

CRLF = "\r\n"


def out(kind, what, detail=None):
    line = "%s %s" % (kind, what)
    if detail is not None:
        line += ": %s" % detail
    print(line, flush=True)


def check(cond, what, detail=None):
    out("PASS" if cond else "FAIL", what, None if cond else detail)
    return bool(cond)


# --------------------------------------------------------------------------
# ports


def cmd_ports(args):
    socks = []
    for _ in range(args.n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def cmd_wait_port(args):
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", args.port), timeout=2) as c:
                if args.smtp:
                    # Read the greeting and say goodbye, like a polite client.
                    f = c.makefile("rb")
                    line = f.readline()
                    while line[3:4] == b"-":
                        line = f.readline()
                    if not line.startswith(b"220"):
                        raise OSError("greeting %r" % line)
                    c.sendall(b"QUIT\r\n")
                    f.readline()
                return 0
        except OSError:
            time.sleep(0.1)
    return 1


# --------------------------------------------------------------------------
# the test message


LINK1_HTML = "https://example.com/quote?id=42&amp;ref=e2e&amp;q=a+b%20c"
LINK1 = html.unescape(LINK1_HTML)
LINK2 = "https://shop.example.org/items/7?utm_source=mail#top"
MAILTO = "mailto:alice@example.com"


def wrap76(data):
    b = base64.b64encode(data).decode()
    return CRLF.join(b[i:i + 76] for i in range(0, len(b), 76)) + CRLF


def cmd_mkmsg(args):
    run = secrets.token_hex(6)
    msgid = "<e2e.%s@example.com>" % run
    mixed = "mixed-%s" % run
    alt = "alt-%s" % run
    pdf = (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + os.urandom(6000) + b"\n%%EOF\n")

    headers = [
        "From: Alice Example <alice@example.com>",
        "To: Bob <bob@example.net>, Carol <carol@example.org>",
        "Subject: Your quote Q-42 (e2e %s)" % run,
        "Date: %s" % email.utils.formatdate(localtime=False),
        "Message-ID: %s" % msgid,
        "MIME-Version: 1.0",
        "X-Track: all",
        'Content-Type: multipart/mixed; boundary="%s"' % mixed,
    ]
    text_part = CRLF.join([
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 7bit",
        "",
        "Hello Bob,",
        "",
        "Your quote is ready: %s" % LINK1,
        "Browse the shop: %s" % LINK2,
        "",
        "-- ",
        "Alice",
    ]) + CRLF
    html_body = CRLF.join([
        "<!DOCTYPE html>",
        "<html><head><meta charset=\"utf-8\"><title>Quote Q-42</title></head>",
        "<body style=\"font-family:sans-serif\">",
        "<p>Hello Bob,</p>",
        "<p>Your quote is ready: <a href=\"%s\">view the quote</a>.</p>" % LINK1_HTML,
        "<p>Browse the <a href=\"%s\" style=\"color:#0066cc\">shop</a>.</p>" % LINK2,
        "<p>Questions? <a href=\"%s\">Write to me</a>.</p>" % MAILTO,
        "<p>-- <br>Alice</p>",
        "</body></html>",
    ]) + CRLF
    html_part = CRLF.join([
        "Content-Type: text/html; charset=utf-8",
        "Content-Transfer-Encoding: 7bit",
        "",
    ]) + CRLF + html_body
    att_part = CRLF.join([
        'Content-Type: application/pdf; name="quote-Q-42.pdf"',
        'Content-Disposition: attachment; filename="quote-Q-42.pdf"',
        "Content-Transfer-Encoding: base64",
        "",
    ]) + CRLF + wrap76(pdf)

    body = (
        "This is a multi-part message in MIME format." + CRLF
        + "--" + mixed + CRLF
        + 'Content-Type: multipart/alternative; boundary="%s"' % alt + CRLF
        + CRLF
        + "--" + alt + CRLF + text_part
        + "--" + alt + CRLF + html_part
        + "--" + alt + "--" + CRLF
        + CRLF
        + "--" + mixed + CRLF + att_part
        + "--" + mixed + "--" + CRLF
    )
    raw = CRLF.join(headers) + CRLF + CRLF + body
    # swaks ends DATA with CRLF "." CRLF after the file's content, so the file
    # goes without its last CRLF: what travels is exactly `raw`.
    with open(args.eml, "wb") as f:
        f.write(raw.encode()[:-2])
    meta = {
        "run": run,
        "message_id": msgid,
        "from": "alice@example.com",
        "rcpts": ["bob@example.net", "carol@example.org"],
        "links": [LINK1, LINK2],
        "links_html": [LINK1_HTML, LINK2],
        "mailto": MAILTO,
        "headers_kept": [h for h in headers if not h.lower().startswith("x-track:")],
        "text_part": text_part,
        "html_body": html_body,
        "attachment_part": att_part,
        "attachment_sha256": hashlib.sha256(pdf).hexdigest(),
    }
    with open(args.meta, "w") as f:
        json.dump(meta, f, indent=2)
    print(msgid)


# --------------------------------------------------------------------------
# sending with smtplib


def cmd_smtplib_send(args):
    ctx = ssl.create_default_context(cafile=args.cafile)
    run = secrets.token_hex(6)
    subject = "Plain note (e2e smtplib %s)" % run
    # No Message-ID on purpose: the relay has to add one.
    body = CRLF.join([
        "Hello Dave,",
        "",
        "This note is plain text; it must arrive unchanged.",
        "A URL in plain text stays as it is: https://example.com/a?b=1&c=2",
        "",
        "Alice",
    ]) + CRLF
    raw = CRLF.join([
        "From: Alice Example <alice@example.com>",
        "To: Dave <%s>" % args.to,
        "Subject: %s" % subject,
        "Date: %s" % email.utils.formatdate(localtime=False),
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Transfer-Encoding: 7bit",
    ]) + CRLF + CRLF + body
    with open(args.meta, "w") as f:
        json.dump({"subject": subject, "body": body, "raw": raw,
                   "rcpt": args.to}, f, indent=2)
    try:
        with smtplib.SMTP("127.0.0.1", args.port, local_hostname="e2e.test",
                          timeout=30) as s:
            s.ehlo()
            if not s.has_extn("starttls"):
                out("FAIL", "smtplib: STARTTLS offered", "EHLO did not list STARTTLS")
                return 1
            s.starttls(context=ctx)
            s.ehlo()
            s.login(args.user, args.password)
            code, resp = s.mail("alice@example.com")
            if code != 250:
                out("FAIL", "smtplib: MAIL", "%d %r" % (code, resp))
                return 1
            code, resp = s.rcpt(args.to)
            if code not in (250, 251):
                out("FAIL", "smtplib: RCPT", "%d %r" % (code, resp))
                return 1
            code, resp = s.data(raw.encode())
            text = resp.decode("utf-8", "replace")
            print("REPLY %d %s" % (code, text.replace("\n", " | ")), flush=True)
            m = re.search(r"queued as ([A-Za-z0-9]+)", text)
            if args.api and m:
                # Right away, before QUIT: the app asks as soon as it has
                # the queue id.
                try:
                    status, _, body = api_get(args.api.rstrip("/") + "/api/v1/messages/" + m.group(1), args.key)
                    state = ""
                    if status == 200:
                        rcpts = json.loads(body).get("recipients") or [{}]
                        state = (rcpts[0].get("delivery") or {}).get("status", "")
                except (OSError, ValueError) as e:
                    status, state = 0, "error %r" % e
                print("API_AT_250 %d %s" % (status, state), flush=True)
            return 0 if code == 250 else 1
    except (smtplib.SMTPException, OSError, ssl.SSLError) as e:
        out("FAIL", "smtplib: session", repr(e))
        return 1


# --------------------------------------------------------------------------
# internationalized mail (SMTPUTF8, RFC 6531)

UTF8_FROM = "zoë@example.net"
# A UTF-8 local part, and an IDN domain in U-labels.
UTF8_RCPTS = [UTF8_FROM, "user@bücher.example"]


def cmd_smtputf8_send(args):
    """Sends a message with UTF-8 addresses and header fields with smtplib's
    mail_options=["SMTPUTF8"], and checks that a non-ASCII address without
    SMTPUTF8 is refused with 553 5.6.7."""
    ctx = ssl.create_default_context(cafile=args.cafile)
    run = secrets.token_hex(6)
    msgid = "<e2e.utf8.%s@example.com>" % run
    subject = "Grüße aus Köln (e2e %s)" % run
    link = "https://example.com/angebot?id=%s" % run
    raw = CRLF.join([
        "From: Zoë <%s>" % UTF8_FROM,
        "To: Zoë <%s>, Jürgen <%s>" % tuple(UTF8_RCPTS),
        "Subject: %s" % subject,
        "Date: %s" % email.utils.formatdate(localtime=False),
        "Message-ID: %s" % msgid,
        "MIME-Version: 1.0",
        "Content-Type: text/html; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        "<html><body><p>Grüße, hier <a href=\"%s\">das Angebot</a>.</p></body></html>" % link,
    ]) + CRLF
    with open(args.meta, "w") as f:
        json.dump({"message_id": msgid, "subject": subject, "from": UTF8_FROM,
                   "rcpts": UTF8_RCPTS, "link": link}, f, indent=2)
    try:
        with smtplib.SMTP("127.0.0.1", args.port, local_hostname="e2e.test",
                          timeout=30) as s:
            s.ehlo()
            s.starttls(context=ctx)
            s.ehlo()
            check(s.has_extn("smtputf8"), "smtplib: EHLO offers SMTPUTF8",
                  "extensions: %r" % sorted(s.esmtp_features))
            s.login(args.user, args.password)
            # As an app sends it: the message as UTF-8 bytes, SMTPUTF8 on MAIL.
            refused = s.sendmail(UTF8_FROM, UTF8_RCPTS, raw.encode("utf-8"),
                                 mail_options=["SMTPUTF8"])
            if not check(not refused, "smtplib sendmail(mail_options=[\"SMTPUTF8\"]) from %s to %s"
                         % (UTF8_FROM, ", ".join(UTF8_RCPTS)), "refused %r" % refused):
                return 1

            # Without SMTPUTF8 a non-ASCII address is refused (RFC 6531
            # section 3.5). smtplib encodes commands as ASCII unless
            # SMTPUTF8 was given, so the RCPT line goes out as bytes.
            code, resp = s.mail("alice@example.com")
            if not check(code == 250, "smtplib: MAIL without SMTPUTF8 accepted",
                         "%d %r" % (code, resp)):
                return 1
            s.send(("RCPT TO:<%s>\r\n" % UTF8_FROM).encode("utf-8"))
            code, resp = s.getreply()
            text = resp.decode("utf-8", "replace")
            check(code == 553 and text.startswith("5.6.7"),
                  "RCPT TO:<%s> without SMTPUTF8 is refused with 553 5.6.7" % UTF8_FROM,
                  "%d %s" % (code, text))
            s.rset()
            return 0
    except (smtplib.SMTPException, OSError, ssl.SSLError) as e:
        out("FAIL", "smtplib SMTPUTF8: session", repr(e))
        return 1


def cmd_smtputf8_copies(args):
    """Checks the copies of the SMTPUTF8 message at the capturing upstream."""
    with open(args.meta) as f:
        meta = json.load(f)
    want_id = meta["message_id"]

    def mine(c):
        head, _ = split_head(c["raw"])
        return msgid_of(head) == want_id

    caps = wait_for(args.sink, mine, len(meta["rcpts"]), args.timeout)
    if not check(len(caps) == len(meta["rcpts"]),
                 "sink got %d copies of the SMTPUTF8 message" % len(meta["rcpts"]),
                 "got %d after %ss" % (len(caps), args.timeout)):
        return 1
    got = sorted(r for c in caps for r in c["env"]["rcpt_tos"])
    check(got == sorted(meta["rcpts"]), "SMTPUTF8 copies: RCPT TO carries the UTF-8 addresses as sent",
          "envelope recipients %r" % got)
    subject = ("Subject: %s" % meta["subject"]).encode("utf-8")
    base = args.base.rstrip("/").encode()
    for c in caps:
        env = c["env"]
        tag = "SMTPUTF8 copy for %s" % (env["rcpt_tos"] or ["?"])[0]
        opts = [o.upper() for o in env.get("mail_options") or []]
        check("SMTPUTF8" in opts, "%s: MAIL FROM carried SMTPUTF8" % tag,
              "mail options %r" % env.get("mail_options"))
        check(env["mail_from"] == meta["from"], "%s: envelope sender %s kept" % (tag, meta["from"]),
              repr(env["mail_from"]))
        head, body = split_head(c["raw"])
        check(subject in header_lines(head), "%s: UTF-8 Subject kept byte for byte" % tag,
              repr(header_values(head, "subject")))
        if env["rcpt_tos"] == [meta["from"]]:
            # The sender's own copy: never tracked (the addresses compare
            # as the same mailbox, UTF-8 and all).
            check(base not in body and meta["link"].encode() in body,
                  "%s: the sender's own copy is not instrumented" % tag, "body %r" % body[:300])
        else:
            check(base + b"/c/" in body and meta["link"].encode() not in body,
                  "%s: link instrumented" % tag, "body %r" % body[:300])
    return 0


# --------------------------------------------------------------------------
# reading the capture directory


def load_captures(sink):
    caps = []
    for name in sorted(os.listdir(sink)):
        if not name.endswith(".eml"):
            continue
        stem = name[:-4]
        with open(os.path.join(sink, name), "rb") as f:
            raw = f.read()
        with open(os.path.join(sink, stem + ".json")) as f:
            env = json.load(f)
        caps.append({"name": stem, "raw": raw, "env": env})
    return caps


def split_head(raw):
    i = raw.find(b"\r\n\r\n")
    if i < 0:
        return raw, b""
    return raw[:i + 2], raw[i + 4:]


def header_lines(head):
    """Physical header lines (folded continuations joined with CRLF)."""
    lines = []
    for line in head.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and lines:
            lines[-1] += b"\r\n" + line
        else:
            lines.append(line)
    return lines


def header_values(head, name):
    n = name.lower().encode() + b":"
    return [l for l in header_lines(head) if l.lower().startswith(n)]


def msgid_of(head):
    v = header_values(head, "message-id")
    if not v:
        return None
    return v[0].split(b":", 1)[1].strip().decode("utf-8", "replace")


def wait_for(sink, pred, count, timeout):
    deadline = time.monotonic() + timeout
    while True:
        caps = [c for c in load_captures(sink) if pred(c)]
        if len(caps) >= count or time.monotonic() >= deadline:
            return caps
        time.sleep(0.2)


class LinkParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.imgs = []
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        d = dict(attrs)
        if tag == "img" and d.get("src"):
            self.imgs.append(d["src"])
        if tag in ("a", "area") and "href" in d:
            self.hrefs.append(d["href"] or "")

    handle_startendtag = handle_starttag


def html_part_of(raw):
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    for part in msg.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True) or b""
            charset = part.get_content_charset() or "utf-8"
            return payload.decode(charset, "replace"), part
    return None, None


def attachment_of(raw):
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    for part in msg.walk():
        if part.get_content_type() == "application/pdf":
            return part.get_payload(decode=True)
    return None


def restore_in_place(copy_html, orig_html, replacements, pixel_url):
    """True when copy_html is orig_html with the hrefs swapped and one insertion
    holding the pixel (the contract: the HTML is edited in place)."""
    restored = copy_html
    for new, old in replacements:
        restored = restored.replace(new, old, 1)
    n = min(len(restored), len(orig_html))
    s = 0
    while s < n and restored[len(restored) - 1 - s] == orig_html[len(orig_html) - 1 - s]:
        s += 1
    p = 0
    while p < n - s and restored[p] == orig_html[p]:
        p += 1
    if p + s != len(orig_html):
        ctx = orig_html[max(0, p - 30):p + 30]
        return False, "original HTML changed near %r" % ctx
    end = len(restored) - s
    # The same insertion may be seen a few characters to either side; for the
    # report prefer the placement that starts at a tag.
    best = None
    for step in (1, -1):
        q, e = p, end
        for _ in range(64):
            if restored[q:q + 1] == "<":
                if best is None or abs(q - p) < abs(best[0] - p):
                    best = (q, e)
                break
            if step == 1 and e < len(restored) and restored[q] == restored[e]:
                q, e = q + 1, e + 1
            elif step == -1 and q > 0 and restored[q - 1] == restored[e - 1]:
                q, e = q - 1, e - 1
            else:
                break
    if best:
        p, end = best
    inserted = restored[p:end]
    if pixel_url and pixel_url not in html.unescape(inserted) and pixel_url not in inserted:
        return False, "inserted text %r does not hold the pixel" % inserted[:200]
    return True, inserted


def cmd_copies(args):
    with open(args.meta) as f:
        meta = json.load(f)
    base = args.base.rstrip("/")
    rcpts = meta["rcpts"]
    want_id = meta["message_id"]

    def mine(c):
        head, _ = split_head(c["raw"])
        return msgid_of(head) == want_id

    caps = wait_for(args.sink, mine, len(rcpts), args.timeout)
    if not check(len(caps) == len(rcpts),
                 "sink got %d copies of the first message" % len(rcpts),
                 "got %d after %ss" % (len(caps), args.timeout)):
        if len(caps) == 0:
            return 1
    got_rcpts = sorted(r for c in caps for r in c["env"]["rcpt_tos"])
    check(got_rcpts == sorted(rcpts), "one copy per recipient (envelope)",
          "envelope recipients %r" % got_rcpts)

    result = {}
    all_tokens = {}
    for c in caps:
        env = c["env"]
        rcpt = env["rcpt_tos"][0] if env["rcpt_tos"] else "?"
        tag = "copy for %s" % rcpt
        raw = c["raw"]
        head, body = split_head(raw)
        check(len(env["rcpt_tos"]) == 1, "%s: a single envelope recipient" % tag,
              repr(env["rcpt_tos"]))
        check(env["mail_from"] == meta["from"], "%s: envelope sender kept" % tag,
              repr(env["mail_from"]))
        lines = header_lines(head)
        check(any(l.lower().startswith(b"received:") for l in lines),
              "%s: has a Received: header" % tag, "no Received header")
        check(not header_values(head, "x-track"), "%s: X-Track header removed" % tag,
              repr(header_values(head, "x-track")))
        # Original headers, byte for byte and in order.
        kept = [h.encode() for h in meta["headers_kept"]]
        it = iter(lines)
        missing = [h for h in kept if not any(l == h for l in it)]
        check(not missing, "%s: original headers kept byte for byte, in order" % tag,
              "missing or reordered: %r" % missing[:3])
        check(meta["text_part"].encode() in body,
              "%s: text/plain part byte-identical" % tag, "text part differs")
        check(meta["attachment_part"].encode() in body,
              "%s: attachment base64 block byte-identical" % tag,
              "attachment part bytes differ")
        att = attachment_of(raw)
        check(att is not None and hashlib.sha256(att).hexdigest() == meta["attachment_sha256"],
              "%s: attachment decodes to the sent bytes" % tag, "sha256 differs")

        h, part = html_part_of(raw)
        if not check(h is not None, "%s: has a text/html part" % tag, "none found"):
            continue
        lp = LinkParser()
        lp.feed(h)
        lp.close()
        pixels = [u for u in lp.imgs if u.startswith(base + "/o/")]
        clicks = [u for u in lp.hrefs if u.startswith(base + "/c/")]
        check(len(pixels) == 1, "%s: one open pixel %s/o/..." % (tag, base),
              "img srcs: %r" % lp.imgs)
        check(len(clicks) == len(meta["links"]),
              "%s: %d click URLs %s/c/..." % (tag, len(meta["links"]), base),
              "hrefs: %r" % lp.hrefs)
        check(meta["mailto"] in lp.hrefs, "%s: mailto: link left alone" % tag,
              "hrefs: %r" % lp.hrefs)
        left = [u for u in meta["links"] if u in lp.hrefs]
        check(not left, "%s: no original http(s) href left" % tag, repr(left))
        if len(clicks) == len(meta["links"]) and len(pixels) == 1:
            # The CRLF before a boundary belongs to the delimiter, not the part.
            orig = meta["html_body"]
            if orig.endswith(CRLF):
                orig = orig[:-2]
            ok, info = restore_in_place(
                h, orig,
                list(zip(clicks, meta["links_html"])), pixels[0])
            if check(ok, "%s: HTML edited in place (hrefs + one pixel insertion)" % tag, info):
                out("INFO", "%s: inserted %r" % (tag, info[:300]))
        toks = set()
        for u in pixels + clicks:
            path = urllib.parse.urlsplit(u).path
            toks.add(path.split("/", 2)[2])
        all_tokens[rcpt] = toks
        result[rcpt] = {"pixel": pixels[0] if pixels else None, "clicks": clicks,
                        "file": c["name"]}

    if len(all_tokens) == 2:
        a, b = list(all_tokens.values())
        check(not (a & b), "the two copies carry different tokens",
              "shared tokens: %r" % sorted(a & b)[:3])
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return 0


def cmd_copy2(args):
    with open(args.meta) as f:
        meta = json.load(f)

    def mine(c):
        head, _ = split_head(c["raw"])
        return any(meta["subject"].encode() in l for l in header_values(head, "subject"))

    caps = wait_for(args.sink, mine, 1, args.timeout)
    if not check(len(caps) == 1, "sink got the smtplib message",
                 "got %d copies after %ss" % (len(caps), args.timeout)):
        return 1
    c = caps[0]
    head, body = split_head(c["raw"])
    check(c["env"]["rcpt_tos"] == [meta["rcpt"]], "smtplib copy: envelope recipient",
          repr(c["env"]["rcpt_tos"]))
    check(any(l.lower().startswith(b"received:") for l in header_lines(head)),
          "smtplib copy: has a Received: header", "no Received header")
    mid = msgid_of(head)
    check(mid is not None and re.match(r"^<[^<>@\s]+@[^<>@\s]+>$", mid),
          "smtplib copy: a Message-ID was added", "Message-ID header: %r" % mid)
    check(body == meta["body"].encode(), "smtplib copy: text-only body unchanged",
          "body differs: %r" % body[:200])
    print("MSGID %s" % (mid or ""))
    return 0


def cmd_untracked(args):
    """A copy that must not be instrumented: its body is byte-identical."""
    with open(args.meta) as f:
        meta = json.load(f)
    with open(args.eml, "rb") as f:
        sent = f.read() + b"\r\n"  # as swaks transmits it (see mkmsg)
    want_id = meta["message_id"]

    def mine(c):
        head, _ = split_head(c["raw"])
        return msgid_of(head) == want_id

    caps = wait_for(args.sink, mine, 1, args.timeout)
    what = args.label
    if not check(len(caps) == 1, "%s: delivered once" % what,
                 "got %d copies after %ss" % (len(caps), args.timeout)):
        return 1
    c = caps[0]
    head, body = split_head(c["raw"])
    _, sent_body = split_head(sent)
    check(c["env"]["rcpt_tos"] == [args.rcpt], "%s: envelope recipient %s" % (what, args.rcpt),
          repr(c["env"]["rcpt_tos"]))
    check(args.base.encode() not in c["raw"], "%s: no tracking URL in it" % what,
          "found %s" % args.base)
    check(body == sent_body, "%s: body byte-identical to what was sent" % what,
          "body differs (%d vs %d bytes)" % (len(body), len(sent_body)))
    check(not header_values(head, "x-track"), "%s: X-Track header removed" % what,
          repr(header_values(head, "x-track")))
    return 0


# --------------------------------------------------------------------------
# tokens


def cmd_tamper(args):
    parts = urllib.parse.urlsplit(args.url)
    segs = parts.path.split("/")
    tok = segs[-1]
    i = len(tok) // 2
    c = tok[i]
    repl = "A" if c != "A" else "B"
    segs[-1] = tok[:i] + repl + tok[i + 1:]
    print(urllib.parse.urlunsplit(parts._replace(path="/".join(segs))))


# --------------------------------------------------------------------------
# API


def api_get(url, key):
    req = urllib.request.Request(url)
    if key is not None:
        req.add_header("Authorization", "Bearer " + key)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def norm_id(v):
    return (v or "").strip().strip("<>")


def cmd_api(args):
    base = args.base.rstrip("/")
    url = base + "/api/v1/messages/" + urllib.parse.quote(args.ref, safe="")
    expect = json.loads(args.expect)
    deadline = time.monotonic() + args.timeout
    while True:
        status, ctype, body = api_get(url, args.key)
        doc = None
        if status == 200:
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
        want_status = expect.get("delivered")
        done = doc is not None and (
            not want_status
            or all((r.get("delivery") or {}).get("status") == "delivered"
                   for r in doc.get("recipients") or [{}]))
        if done or time.monotonic() >= deadline:
            break
        time.sleep(0.3)
    what = args.label
    if not check(status == 200, "%s: HTTP 200" % what, "HTTP %d %r" % (status, body[:200])):
        return 1
    check("json" in ctype.lower(), "%s: JSON content type" % what, repr(ctype))
    if not check(isinstance(doc, dict), "%s: body is a JSON object" % what, repr(body[:200])):
        return 1
    if args.dump:
        with open(args.dump, "w") as f:
            json.dump(doc, f, indent=2)
    if "id" in expect:
        check(doc.get("id") == expect["id"], "%s: id is the queue id" % what,
              "id=%r want %r" % (doc.get("id"), expect["id"]))
    if "message_id" in expect:
        check(norm_id(doc.get("message_id")) == norm_id(expect["message_id"]),
              "%s: message_id" % what, "%r want %r" % (doc.get("message_id"), expect["message_id"]))
    if "account" in expect:
        check(doc.get("account") == expect["account"], "%s: account" % what,
              repr(doc.get("account")))
    if "from" in expect:
        check(expect["from"] in str(doc.get("from")), "%s: from" % what, repr(doc.get("from")))
    if "mode" in expect:
        check(doc.get("mode") == expect["mode"], "%s: mode" % what, repr(doc.get("mode")))
    for k in ("accepted_at",):
        check(bool(doc.get(k)), "%s: %s set" % (what, k), repr(doc.get(k)))
    recips = doc.get("recipients")
    if "recipients" in expect:
        addrs = sorted((r or {}).get("address", "") for r in (recips or []))
        check(addrs == sorted(expect["recipients"]),
              "%s: recipients %s" % (what, ",".join(sorted(expect["recipients"]))),
              "recipients %r" % addrs)
    if expect.get("delivered"):
        bad = [(r.get("address"), r.get("delivery")) for r in (recips or [])
               if (r.get("delivery") or {}).get("status") != "delivered"]
        check(recips and not bad, "%s: every recipient delivery.status delivered" % what,
              "not delivered: %r" % bad)
        bad = [(r.get("address"), (r.get("delivery") or {}).get("attempts"))
               for r in (recips or [])
               if not isinstance((r.get("delivery") or {}).get("attempts"), int)
               or (r.get("delivery") or {}).get("attempts") < 1]
        check(recips and not bad, "%s: delivery.attempts >= 1" % what, repr(bad))
    if expect.get("tracked") is not None:
        bad = [r.get("address") for r in (recips or []) if r.get("tracked") is not expect["tracked"]]
        check(recips and not bad, "%s: recipients tracked=%s" % (what, expect["tracked"]),
              "not matching: %r" % bad)
    if "links" in expect:
        urls = sorted((l or {}).get("url", "") for l in (doc.get("links") or []))
        check(urls == sorted(expect["links"]), "%s: links[].url are the original URLs" % what,
              "links %r" % urls)
    events = doc.get("events") or []
    for e in events:
        out("INFO", "%s: event type=%s recipient=%s link=%s ip=%s class=%s client=%s" % (
            what, e.get("type"), e.get("recipient"), e.get("link"), e.get("ip"),
            e.get("class"), e.get("client")))
    if "self_hits" in expect:
        rcpt = expect["self_hits"]
        mine = [e for e in events if e.get("recipient") == rcpt]
        bad = [(e.get("type"), e.get("class")) for e in mine if e.get("class") != "self"]
        check(mine and not bad,
              "%s: hits from the submitting IP are class self" % what,
              "classes: %r" % bad)
        r = [r for r in (recips or []) if r.get("address") == rcpt]
        r = r[0] if r else {}
        check(r.get("opened") is False and r.get("opens") == 0 and r.get("clicks") == 0,
              "%s: self hits not counted (opened false, opens 0, clicks 0)" % what,
              "opened=%r opens=%r clicks=%r" % (r.get("opened"), r.get("opens"), r.get("clicks")))
        counted = [l for l in (doc.get("links") or []) if l.get("clicks")]
        check(not counted, "%s: links[].clicks stay 0 for self hits" % what, repr(counted))
    if expect.get("tracked_false"):
        bad = [r.get("address") for r in (recips or []) if r.get("tracked") is not False]
        check(recips and not bad, "%s: self_addresses copy has tracked=false" % what,
              "tracked: %r" % [(r.get("address"), r.get("tracked")) for r in (recips or [])])
    for typ in expect.get("events", []):
        evs = [e for e in events if e.get("type") == typ]
        rcpt = expect.get("event_recipient")
        if rcpt:
            evs = [e for e in evs if e.get("recipient") == rcpt]
        check(evs, "%s: events contain a%s %s%s" % (
            what, "n" if typ[0] in "aeiou" else "", typ,
            " by %s" % rcpt if rcpt else ""),
            "events: %r" % [(e.get("type"), e.get("recipient")) for e in events])
        if evs:
            e = evs[0]
            check(e.get("at") and e.get("ip") and e.get("user_agent") and e.get("class"),
                  "%s: %s event has at, ip, user_agent, class" % (what, typ), repr(e))
            if "user_agent" in expect:
                check(e.get("user_agent") == expect["user_agent"],
                      "%s: %s event user_agent recorded" % (what, typ), repr(e.get("user_agent")))
    return 0


def cmd_api_status(args):
    """Prints the HTTP status of GET ref with the given key (or none)."""
    base = args.base.rstrip("/")
    url = base + "/api/v1/messages/" + urllib.parse.quote(args.ref, safe="")
    status, _, _ = api_get(url, args.key if args.key != "-" else None)
    print(status)


def cmd_api_field(args):
    base = args.base.rstrip("/")
    url = base + "/api/v1/messages/" + urllib.parse.quote(args.ref, safe="")
    status, _, body = api_get(url, args.key)
    if status != 200:
        print("HTTP %d" % status)
        return 1
    doc = json.loads(body)
    print(doc.get(args.field))
    return 0


def cmd_jget(args):
    """Prints one value of a JSON file: keys and list indexes; nothing if absent."""
    with open(args.file) as f:
        v = json.load(f)
    for k in args.path:
        if isinstance(v, list) and k.lstrip("-").isdigit() and -len(v) <= int(k) < len(v):
            v = v[int(k)]
        elif isinstance(v, dict) and k in v:
            v = v[k]
        else:
            return 1
    if v is None:
        return 1
    print(v if isinstance(v, str) else json.dumps(v))
    return 0


def main(argv):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("ports")
    s.add_argument("n", type=int)
    s.set_defaults(fn=cmd_ports)

    s = sub.add_parser("wait-port")
    s.add_argument("port", type=int)
    s.add_argument("timeout", type=float)
    s.add_argument("--smtp", action="store_true", help="expect a 220 greeting, send QUIT")
    s.set_defaults(fn=cmd_wait_port)

    s = sub.add_parser("mkmsg")
    s.add_argument("eml")
    s.add_argument("meta")
    s.set_defaults(fn=cmd_mkmsg)

    s = sub.add_parser("smtplib-send")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--cafile", required=True)
    s.add_argument("--user", required=True)
    s.add_argument("--password", required=True)
    s.add_argument("--to", required=True)
    s.add_argument("--meta", required=True)
    s.add_argument("--api", help="API base URL: ask for the message right after the 250")
    s.add_argument("--key", help="API key for --api")
    s.set_defaults(fn=cmd_smtplib_send)

    s = sub.add_parser("smtputf8-send")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--cafile", required=True)
    s.add_argument("--user", required=True)
    s.add_argument("--password", required=True)
    s.add_argument("--meta", required=True)
    s.set_defaults(fn=cmd_smtputf8_send)

    s = sub.add_parser("smtputf8-copies")
    s.add_argument("--sink", required=True)
    s.add_argument("--meta", required=True)
    s.add_argument("--base", required=True)
    s.add_argument("--timeout", type=float, default=30)
    s.set_defaults(fn=cmd_smtputf8_copies)

    s = sub.add_parser("copies")
    s.add_argument("--sink", required=True)
    s.add_argument("--meta", required=True)
    s.add_argument("--base", required=True)
    s.add_argument("--timeout", type=float, default=30)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_copies)

    s = sub.add_parser("copy2")
    s.add_argument("--sink", required=True)
    s.add_argument("--meta", required=True)
    s.add_argument("--timeout", type=float, default=30)
    s.set_defaults(fn=cmd_copy2)

    s = sub.add_parser("untracked")
    s.add_argument("--sink", required=True)
    s.add_argument("--meta", required=True)
    s.add_argument("--eml", required=True)
    s.add_argument("--rcpt", required=True)
    s.add_argument("--base", required=True)
    s.add_argument("--label", required=True)
    s.add_argument("--timeout", type=float, default=30)
    s.set_defaults(fn=cmd_untracked)

    s = sub.add_parser("jget")
    s.add_argument("file")
    s.add_argument("path", nargs="*")
    s.set_defaults(fn=cmd_jget)

    s = sub.add_parser("tamper")
    s.add_argument("url")
    s.set_defaults(fn=cmd_tamper)

    s = sub.add_parser("api")
    s.add_argument("--base", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--ref", required=True)
    s.add_argument("--label", required=True)
    s.add_argument("--expect", required=True, help="JSON object of expectations")
    s.add_argument("--timeout", type=float, default=15)
    s.add_argument("--dump")
    s.set_defaults(fn=cmd_api)

    s = sub.add_parser("api-status")
    s.add_argument("--base", required=True)
    s.add_argument("--key", required=True, help="'-' for no Authorization header")
    s.add_argument("--ref", required=True)
    s.set_defaults(fn=cmd_api_status)

    s = sub.add_parser("api-field")
    s.add_argument("--base", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--ref", required=True)
    s.add_argument("--field", required=True)
    s.set_defaults(fn=cmd_api_field)

    args = p.parse_args(argv)
    return args.fn(args) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
