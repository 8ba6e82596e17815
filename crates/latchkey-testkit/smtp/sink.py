"""Latchkey's test SMTP server (crates/latchkey-testkit/smtp/sink.py), driven by
`latchkey_testkit::smtp::SmtpSink`: aiosmtpd on 127.0.0.1:PORT. Each accepted message is
written twice into DIR, atomically (tmp + rename): N.eml, the bytes as received, and N.json,
the message parsed by Python's email package (headers, the decoded text/plain and text/html
parts with "\n" line ends, the envelope, the AUTH login and whether TLS was used), so Rust
tests need no MIME parser. N continues from the files already in DIR, so a restarted sink
appends.

Options: --user U --password P (AUTH PLAIN/LOGIN required before MAIL; with --starttls only
after STARTTLS), --starttls CERT KEY (STARTTLS offered and required before MAIL), --smtps
CERT KEY (implicit TLS), --tempfail N (451 to the first N DATA commands), --reject-rcpt ADDR
(550 for that recipient). Prints "listening" once it accepts connections. Stops when its
stdin reaches end of file (so it never outlives the test process that started it) or on
SIGTERM/SIGINT.

Run it with a Python that sees Debian's python3-aiosmtpd: /usr/bin/python3, not a pyenv shim."""
import argparse, email, email.policy, itertools, json, os, signal, ssl, sys
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--dir", required=True)
p.add_argument("--user"); p.add_argument("--password")
p.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
p.add_argument("--smtps", nargs=2, metavar=("CERT", "KEY"))
p.add_argument("--tempfail", type=int, default=0)
p.add_argument("--reject-rcpt")
a = p.parse_args()
os.makedirs(a.dir, exist_ok=True)
seq = itertools.count(len([f for f in os.listdir(a.dir) if f.endswith(".eml")]) + 1)

def put(name, data):
    tmp = os.path.join(a.dir, "." + name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, os.path.join(a.dir, name))

class Handler:
    def __init__(self):
        self.tempfail = a.tempfail

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if a.reject_rcpt and address.lower() == a.reject_rcpt.lower():
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.tempfail > 0:
            self.tempfail -= 1
            return "451 4.3.0 try again later"
        raw = envelope.original_content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        # The decoded body of the first part of this type, with "\n" line ends (SMTP sends CRLF).
        part = lambda t: (lambda b: b.get_content().replace("\r\n", "\n") if b else None)(msg.get_body(preferencelist=(t,)))
        n = next(seq)
        # The .json is written last: a reader that sees it also sees the .eml.
        put(f"{n:06}.eml", raw)
        put(f"{n:06}.json", json.dumps({
            "mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
            "auth": session.auth_data.login.decode() if session.authenticated and session.auth_data else None,
            "tls": bool(session.ssl) or bool(a.smtps),
            "headers": [[k, str(v)] for k, v in msg.items()],
            "content_type": msg.get_content_type(),
            "text": part("plain"), "html": part("html"),
        }).encode())
        return "250 OK"

def authenticate(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login.decode() == a.user and data.password.decode() == a.password
    return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

def context(pair):
    c = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    c.load_cert_chain(*pair)
    return c

kw = dict(hostname="127.0.0.1", port=a.port, server_hostname="localhost", ready_timeout=30)
if a.user:
    # With --smtps the whole connection is TLS, but aiosmtpd only counts STARTTLS as TLS: asking it
    # to require TLS there would hide AUTH altogether.
    kw.update(authenticator=authenticate, auth_required=True, auth_require_tls=bool(a.starttls))
if a.starttls:
    kw.update(tls_context=context(a.starttls), require_starttls=True)
if a.smtps:
    kw.update(ssl_context=context(a.smtps))
controller = Controller(Handler(), **kw)
controller.start()
print("listening", flush=True)

def stop(signum, frame):
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
try:
    sys.stdin.buffer.read()
except KeyboardInterrupt:
    pass
finally:
    controller.stop()
