#!/usr/bin/python3
"""Helper of scripts/dkim-verify.sh: checks trackrelay's DKIM signatures with
an independent implementation, dkimpy (Debian's python3-dkim).

    dkim_verify.py mkmsg --from ADDR --to ADDR --subject S [--sign-key PEM
                   --sign-domain D --sign-selector S] > msg.eml
    dkim_verify.py send --port P --from ADDR --to ADDR [--to ADDR ...] FILE
    dkim_verify.py verify --sink DIR --count N --records FILE \
                   [--expect SUBJECT=DOMAIN:instrumented|unchanged ...]

--records is a file of "NAME VALUE" lines (the TXT records printed by
`trackrelay dkim-keygen`); dkimpy's DNS look-ups are answered from it and
nothing else. verify prints one PASS/FAIL line per check.

Run it with /usr/bin/python3 (python3-dkim is a Debian package).
"""

import argparse
import email
import email.policy
import glob
import os
import smtplib
import sys
import time

try:
    import dkim
except ImportError:  # pragma: no cover
    sys.stderr.write("dkim_verify: dkimpy is missing; install python3-dkim and run with /usr/bin/python3\n")
    sys.exit(2)


def crlf(text):
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def cmd_mkmsg(args):
    body = crlf(
        f"""From: "Sender" <{args.from_}>
To: {args.to}
Subject: {args.subject}
Date: Thu, 16 Apr 2026 07:30:00 +0200
Message-ID: <{args.subject.replace(' ', '-')}@dkim-verify.test>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="ALT"

--ALT
Content-Type: text/plain; charset=utf-8

Your quote: https://example.com/quote?id=42
--ALT
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<html><body><p>Hello,   here is   your quote.</p>
<p><a href=3D"https://example.com/quote?id=3D42&amp;ref=3Ddkim">Open the quote</a></p>
</body></html>
--ALT--
"""
    )
    if args.sign_key:
        with open(args.sign_key, "rb") as f:
            key = f.read()
        sig = dkim.sign(
            body,
            args.sign_selector.encode(),
            args.sign_domain.encode(),
            key,
            canonicalize=(b"relaxed", b"simple"),
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type"],
        )
        body = sig + body
    sys.stdout.buffer.write(body)


def cmd_send(args):
    with open(args.file, "rb") as f:
        data = f.read()
    with smtplib.SMTP("127.0.0.1", args.port, timeout=30) as s:
        s.ehlo("dkim-verify.test")
        s.sendmail(args.from_, args.to, data)


def load_records(path):
    records = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                name, value = line.split(" ", 1)
                records[name.rstrip(".").lower()] = value
    return records


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, cond, what, detail=None):
        if cond:
            self.passed += 1
            print("PASS " + what)
        else:
            self.failed += 1
            print("FAIL " + what + (": " + detail if detail else ""))
        return cond


def cmd_verify(args):
    records = load_records(args.records)
    asked = []

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        name = name.rstrip(".").lower()
        asked.append(name)
        value = records.get(name)
        return value.encode() if value is not None else None

    expect = {}
    for e in args.expect or []:
        subject, rest = e.split("=", 1)
        domain, state = rest.split(":", 1)
        expect[subject] = (domain, state)

    deadline = time.monotonic() + args.timeout
    files = []
    while time.monotonic() < deadline:
        files = sorted(glob.glob(os.path.join(args.sink, "*.eml")))
        if len(files) >= args.count:
            break
        time.sleep(0.1)
    c = Checks()
    c.check(len(files) == args.count, f"{args.count} copies captured upstream", f"have {len(files)}")
    for path in files:
        with open(path, "rb") as f:
            raw = f.read()
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        subject = msg.get("Subject", "")
        name = f"{os.path.basename(path)} ({subject!r} to {msg.get('To')})"
        sigs = msg.get_all("DKIM-Signature") or []
        c.check(len(sigs) == 1, f"{name}: exactly one DKIM-Signature", f"have {len(sigs)}")
        del asked[:]
        ok = dkim.verify(raw, dnsfunc=dnsfunc)
        c.check(ok, f"{name}: dkimpy verifies the signature", f"looked up {asked}")
        if subject in expect:
            domain, state = expect[subject]
            tags = dict(
                kv.strip().split("=", 1) for kv in "".join(sigs[0].split()).split(";") if "=" in kv
            ) if sigs else {}
            c.check(tags.get("d") == domain, f"{name}: signed d={domain}", f"d={tags.get('d')}")
            html = b""
            for part in msg.walk():
                if part.get_content_type() == "text/html":
                    html = part.get_payload(decode=True) or b""
            tracked = b"/c/" in html and b"https://example.com/quote" not in html
            if state == "instrumented":
                c.check(tracked, f"{name}: instrumented (link is a click redirect)")
                c.check(tags.get("c") == "relaxed/relaxed", f"{name}: relaxed/relaxed", f"c={tags.get('c')}")
                h = [x.lower() for x in tags.get("h", "").split(":")]
                c.check(h.count("from") == 2, f"{name}: From oversigned in h=", f"h={tags.get('h')}")
            else:
                c.check(not tracked, f"{name}: delivered unchanged (not instrumented)")
    return 1 if c.failed else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mkmsg")
    m.add_argument("--from", dest="from_", required=True)
    m.add_argument("--to", required=True)
    m.add_argument("--subject", required=True)
    m.add_argument("--sign-key")
    m.add_argument("--sign-domain")
    m.add_argument("--sign-selector")
    s = sub.add_parser("send")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--from", dest="from_", required=True)
    s.add_argument("--to", action="append", required=True)
    s.add_argument("file")
    v = sub.add_parser("verify")
    v.add_argument("--sink", required=True)
    v.add_argument("--count", type=int, required=True)
    v.add_argument("--records", required=True)
    v.add_argument("--expect", action="append")
    v.add_argument("--timeout", type=float, default=30)
    args = p.parse_args()
    return {"mkmsg": cmd_mkmsg, "send": cmd_send, "verify": cmd_verify}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
