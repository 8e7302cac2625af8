"""Mints real tracking URLs for the benchmarks: sends one HTML message into
a trackrelay running in capture mode, waits for its copy in the outbox and
prints the copy's open-pixel URL and click URL on one line.

    python3 bench/tracking_urls.py SMTP_PORT OUTBOX_DIR
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
body = '<html><body><p>Quote attached: <a href="https://example.com/quote?id=42">view quote</a></p></body></html>'
msg = ("From: bench@example.com\r\nTo: client@example.net\r\nSubject: bench\r\n"
       "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + body + "\r\n")
with smtplib.SMTP("127.0.0.1", port) as s:
    s.sendmail("bench@example.com", ["client@example.net"], msg)

copies = []
for _ in range(100):
    copies = glob.glob(os.path.join(outbox, "*.eml"))
    if copies:
        break
    time.sleep(0.1)
if not copies:
    sys.exit("bench: no copy reached " + outbox)
with open(copies[0], "rb") as f:
    m = email.message_from_binary_file(f, policy=policy.default)
html = m.get_body(("html",)).get_content()
o = re.search(r'(https?://[^"\'\s<>]+/o/[^"\'\s<>]+)', html)
c = re.search(r'(https?://[^"\'\s<>]+/c/[^"\'\s<>]+)', html)
if not o or not c:
    sys.exit("bench: no tracking URLs in the delivered copy:\n" + html)
print(o.group(1).replace("&amp;", "&"), c.group(1).replace("&amp;", "&"))
