#!/usr/bin/env python3
"""admission_verifier.py: the other end of derpd's admission checks, for
tests/test_admission.c.

Two shapes:
  controller (default): an admission controller for -verify-client-url, on
      TCP (optionally TLS). Each POST's JSON body names a node key; the
      answer follows the mode the modes file gives that key (else --default).
  --localapi: tailscaled's LocalAPI for -verify-clients, on a unix socket:
      GET /localapi/v0/whois?addr=nodekey:<hex> answers 200 with a
      WhoIsResponse for keys whose mode is "known", 404 otherwise, and 403
      for a Host other than "" or local-tailscaled.sock, as tailscaled does.

Every request is appended to --log as one JSON line before it is answered
(method, path, headers, body, peer port). --modes is re-read on every
request: lines "<nodekey:hex> <mode>". The port (or "unix") is written to
--ready once listening.
"""
import argparse
import json
import os
import socketserver
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG_LOCK = threading.Lock()
ARGS = None


def modes():
    out = {}
    try:
        with open(ARGS.modes) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    out[parts[0]] = parts[1]
    except FileNotFoundError:
        pass
    return out


def record(handler, body):
    peer = handler.client_address[1] if isinstance(handler.client_address, tuple) else 0
    entry = {"method": handler.command, "path": handler.path,
             "headers": {k: v for k, v in handler.headers.items()},
             "body": body.decode("utf-8", "replace"), "peer_port": peer}
    with LOG_LOCK, open(ARGS.log, "a") as f:
        f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real controller would

    def log_message(self, fmt, *args):
        pass

    def address_string(self):
        return "test"

    def send(self, status, body, ctype="application/json", extra=None):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        record(self, body)
        try:
            key = json.loads(body).get("NodePublic", "")
        except ValueError:
            key = ""
        if self.path.startswith("/final/"):  # where the redirect modes lead
            self.send(200, '{"Allow":true}')
            return
        mode = modes().get(key, ARGS.default)
        self.answer(mode, key)

    def answer(self, mode, key=""):
        # Redirects (Go's http.Client follows them): relative with dot
        # segments, absolute to a GET, one without Location, a loop, a
        # Location that is not http(s).
        if mode == "r307":
            self.send(307, "", extra={"Location": "final/a/../" + key})
            return
        if mode == "r302":
            port = self.server.server_address[1]
            self.send(302, "", extra={"Location": "http://127.0.0.1:%d/final/get?k=%s" % (port, key)})
            return
        if mode == "rnoloc":
            self.send(307, "")
            return
        if mode == "rloop":
            self.send(308, "", extra={"Location": self.path})
            return
        if mode == "rbad":
            self.send(307, "", extra={"Location": "ftp://127.0.0.1/final/x"})
            return
        if mode == "rlong":  # a Location past derpd's 1 KiB of header value
            self.send(307, "", extra={"Location": "final/" + "a" * 1500 + "/" + key})
            return
        if mode == "allow":
            self.send(200, '{"Allow":true}')
        elif mode == "deny":
            self.send(200, '{"Allow":false}')
        elif mode == "slow":  # past derper's 5 s timeout
            time.sleep(7)
            self.send(200, '{"Allow":true}')
        elif mode == "allow_1s":  # in time, but still running at a stop
            time.sleep(1)
            self.send(200, '{"Allow":true}')
        elif mode == "500":
            self.send(500, '{"Allow":true}')
        elif mode == "garbage":
            self.send(200, "this is not JSON")
        elif mode == "truncated":
            self.send(200, '{"Allow":tr')
        elif mode == "wrongtype":
            self.send(200, '{"Allow":"true"}')
        elif mode == "lowercase":  # Go matches field names without regard to case
            self.send(200, '{"allow":true}')
        elif mode == "oversized_ok":  # the value ends within 4 KiB: Go decodes it
            self.send(200, '{"Allow":true}' + " " * 10000)
        elif mode == "oversized_bad":  # it does not: Go's LimitReader cuts it
            self.send(200, " " * 5000 + '{"Allow":true}')
        elif mode == "chunked":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b'{"All', b'ow":true}'):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif mode == "close":  # no response at all
            self.close_connection = True
        elif mode == "stall_body":  # the head, then part of the body, then nothing
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b'{"Allow":')
            self.wfile.flush()
            time.sleep(7)
            self.close_connection = True
        else:
            self.send(200, '{"Allow":false}')

    def do_GET(self):
        record(self, b"")
        if not ARGS.localapi:
            if self.path.startswith("/final/"):
                self.send(200, '{"Allow":true}')
            else:
                self.send(404, "not found", "text/plain")
            return
        host = self.headers.get("Host", "")
        if host not in ("", "local-tailscaled.sock"):
            self.send(403, "invalid localapi request\n", "text/plain")
            return
        prefix = "/localapi/v0/whois?addr="
        if not self.path.startswith(prefix):
            self.send(404, "404 page not found\n", "text/plain")
            return
        key = self.path[len(prefix):].replace("%3A", ":").replace("%3a", ":")
        mode = modes().get(key, ARGS.default)
        if mode == "known":
            who = {"Node": {"ID": 1, "Name": "node.example.ts.net.", "Key": key},
                   "UserProfile": {"ID": 2, "LoginName": "user@example.com"}, "CapMap": None}
            self.send(200, json.dumps(who, indent="\t"))
        elif mode == "slow":
            time.sleep(7)
            self.send(404, "no match for IP:port\n", "text/plain")
        elif mode == "500":
            self.send(500, "internal error\n", "text/plain")
        elif mode == "garbage":
            self.send(200, "{not json")
        else:
            self.send(404, "no match for IP:port\n", "text/plain")


class Quiet:
    """Peers that go away mid-request (derpd's timeouts) are expected here."""

    def handle_error(self, request, client_address):
        pass


class UnixServer(Quiet, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class TCPServer(Quiet, ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many checks at once: no SYN retried after 1 s

    def server_bind(self):
        # HTTPServer's own looks its name up (getfqdn): seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--unix")
    p.add_argument("--localapi", action="store_true")
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--modes", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--ready", required=True)
    p.add_argument("--default", default="deny")
    ARGS = p.parse_args()
    if ARGS.unix:
        if os.path.exists(ARGS.unix):
            os.unlink(ARGS.unix)
        srv = UnixServer(ARGS.unix, Handler)
        ready = "unix"
    else:
        srv = TCPServer(("127.0.0.1", 0), Handler)
        if ARGS.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(ARGS.tls[0], ARGS.tls[1])
            srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        ready = str(srv.server_address[1])
    tmp = ARGS.ready + ".tmp"
    with open(tmp, "w") as f:
        f.write(ready + "\n")
    os.rename(tmp, ARGS.ready)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
