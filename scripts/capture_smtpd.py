#!/usr/bin/python3
"""Capturing upstream SMTP server for end-to-end tests.

It plays the smarthost that trackrelay delivers to. Every accepted transaction
is written to the capture directory as two files:

    NNNN.json  envelope: mail_from, rcpt_tos, options, peer, helo, auth user, ...
    NNNN.eml   the DATA bytes exactly as received (after SMTP dot-unstuffing,
               CRLF line endings kept, no decoding of any kind)

NNNN counts up from 0001. The .json file is written first and the .eml file
last, both through a rename, so a reader that sees NNNN.eml can read both.

Run it with Debian's interpreter (/usr/bin/python3) and python3-aiosmtpd:

    /usr/bin/python3 scripts/capture_smtpd.py --port 2526 --dir /tmp/sink \
        [--auth user:pass] [--tls-cert crt --tls-key key] [--port-file FILE]

--port 0 picks a free port; --port-file receives the port once listening.
With --auth, AUTH PLAIN/LOGIN is offered without TLS (loopback test setup)
and required before MAIL. SIGTERM/SIGINT stop it cleanly.
"""

import argparse
import asyncio
import datetime
import json
import logging
import os
import signal
import ssl
import sys
import threading
import warnings

try:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError:  # pragma: no cover
    sys.stderr.write(
        "capture_smtpd: aiosmtpd is missing; install python3-aiosmtpd and "
        "run with /usr/bin/python3\n"
    )
    sys.exit(2)


class CaptureHandler:
    def __init__(self, directory, reply):
        self.directory = directory
        self.reply = reply
        self.lock = threading.Lock()
        existing = [
            int(name[:-4])
            for name in os.listdir(directory)
            if name.endswith(".eml") and name[:-4].isdigit()
        ]
        self.counter = max(existing, default=0)

    def _next_name(self):
        with self.lock:
            self.counter += 1
            return "%04d" % self.counter

    def _write(self, path, data):
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)

    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content
        if not isinstance(content, (bytes, bytearray)):
            # decode_data=False guarantees bytes; refuse rather than guess.
            return "451 4.3.0 capture: content is not bytes"
        content = bytes(content)
        name = self._next_name()
        auth_user = None
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            auth_user = session.auth_data.login.decode("utf-8", "replace")
        meta = {
            "seq": int(name),
            "mail_from": envelope.mail_from,
            "mail_options": envelope.mail_options,
            "rcpt_tos": envelope.rcpt_tos,
            "rcpt_options": envelope.rcpt_options,
            "peer": list(session.peer) if session.peer else None,
            "helo": session.host_name,
            "esmtp": session.extended_smtp,
            "tls": session.ssl is not None,
            "auth_user": auth_user,
            "size": len(content),
            "received_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        }
        self._write(
            os.path.join(self.directory, name + ".json"),
            (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode(),
        )
        self._write(os.path.join(self.directory, name + ".eml"), content)
        logging.info(
            "captured %s from=%s to=%s bytes=%d",
            name, envelope.mail_from, ",".join(envelope.rcpt_tos), len(content),
        )
        return self.reply % {"name": name}


def make_authenticator(user, password):
    want = (user.encode(), password.encode())

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and (auth_data.login, auth_data.password) == want
        )
        logging.info("AUTH %s user=%r ok=%s", mechanism,
                     getattr(auth_data, "login", None), ok)
        if ok:
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    return authenticator


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("port", nargs="?", type=int, help="TCP port (same as --port)")
    p.add_argument("--port", dest="port_opt", type=int)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--dir", required=True, help="capture directory")
    p.add_argument("--port-file", help="write the bound port here when ready")
    p.add_argument("--hostname", default="sink.e2e.test", help="name in greeting")
    p.add_argument("--auth", metavar="USER:PASS",
                   help="accept (and require) AUTH with these credentials")
    p.add_argument("--tls-cert", help="certificate for optional STARTTLS")
    p.add_argument("--tls-key", help="key for optional STARTTLS")
    p.add_argument("--reply", default="250 2.0.0 Ok: captured %(name)s",
                   help="reply to DATA; %%(name)s is the capture number")
    p.add_argument("--max-size", type=int, default=64 * 1024 * 1024)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    port = args.port_opt if args.port_opt is not None else args.port
    if port is None:
        p.error("a port is required")
    args.port = port
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if args.auth is not None and ":" not in args.auth:
        p.error("--auth takes USER:PASS")
    return args


def main(argv):
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="capture_smtpd: %(message)s",
        stream=sys.stderr,
    )
    # aiosmtpd's own chatter (every command line) stays out of the log.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    os.makedirs(args.dir, exist_ok=True)

    handler = CaptureHandler(args.dir, args.reply)

    kwargs = dict(
        decode_data=False,
        enable_SMTPUTF8=True,
        hostname=args.hostname,
        data_size_limit=args.max_size,
        timeout=120,
    )
    if args.tls_cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        kwargs["tls_context"] = ctx
    if args.auth is not None:
        user, password = args.auth.split(":", 1)
        kwargs["authenticator"] = make_authenticator(user, password)
        # The relay talks to us over loopback with `tls: none`.
        kwargs["auth_require_tls"] = False
        kwargs["auth_required"] = True

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def factory():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return SMTP(handler, loop=loop, **kwargs)

    server = loop.run_until_complete(
        loop.create_server(factory, host=args.host, port=args.port)
    )
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.port_file)
    logging.info("listening on %s:%d, capturing to %s%s", args.host, port,
                 args.dir, " (auth required)" if args.auth else "")

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        loop.run_until_complete(stop.wait())
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
