"""Mints real tracking URLs for the benchmarks: sends HTML mail into a
trackrelay running in capture mode, waits for the copies in the outbox and
prints each copy's open-pixel URL and click URL on one line.

    python3 bench/tracking_urls.py SMTP_PORT OUTBOX_DIR [MESSAGES]

Without MESSAGES it sends one message to one recipient (one line). With
MESSAGES it sends that many messages, each to RECIPIENTS (3) recipients, so
hits can be spread over many messages' copies: one line a copy.
"""
import email
import glob
import os
import re
import smtplib
import sys
import time
from email import policy

port, outbox = int(sys.argv[1]), sys.argv[2]
messages = int(sys.argv[3]) if len(sys.argv) > 3 else 0
per = 3 if messages else 1
messages = messages or 1
body = '<html><body><p>Quote attached: <a href="https://example.com/quote?id=%d">view quote</a></p></body></html>'
with smtplib.SMTP("127.0.0.1", port) as s:
    for i in range(messages):
        rcpts = ["client@example.net"] if per == 1 else ["client%d-%d@example.net" % (i, r) for r in range(per)]
        msg = ("From: bench@example.com\r\nTo: " + ", ".join(rcpts) + "\r\nSubject: bench %d\r\n" % i +
               "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + body % (42 + i) + "\r\n")
        s.sendmail("bench@example.com", rcpts, msg)

want = messages * per
copies = []
for _ in range(300):
    copies = glob.glob(os.path.join(outbox, "*.eml"))
    if len(copies) >= want:
        break
    time.sleep(0.1)
if len(copies) < want:
    sys.exit("bench: %d of %d copies reached %s" % (len(copies), want, outbox))
for path in sorted(copies):
    with open(path, "rb") as f:
        m = email.message_from_binary_file(f, policy=policy.default)
    html = m.get_body(("html",)).get_content()
    o = re.search(r'(https?://[^"\'\s<>]+/o/[^"\'\s<>]+)', html)
    c = re.search(r'(https?://[^"\'\s<>]+/c/[^"\'\s<>]+)', html)
    if not o or not c:
        sys.exit("bench: no tracking URLs in the delivered copy:\n" + html)
    print(o.group(1).replace("&amp;", "&"), c.group(1).replace("&amp;", "&"))
