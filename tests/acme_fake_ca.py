#!/usr/bin/env python3
"""acme_fake_ca.py: an ACME server that only ever says no, for tests/test_acme.c.

  acme_fake_ca.py CERT KEY READY_FILE LOG_FILE [AUTHZ_STATUS]

Serves HTTPS on 127.0.0.1 (an ephemeral port, written to READY_FILE once
listening): a directory, nonces, an account, and orders whose one
authorization is AUTHZ_STATUS (default "invalid") from the start, as a CA
answers for an identifier it will not issue for. Each new order appends a
line to LOG_FILE, so a test counts how many orders a client placed. Pebble
cannot be made to answer this way, which is why this exists.
"""
import http.server
import json
import ssl
import sys

cert, key, ready, log = sys.argv[1:5]
status = sys.argv[5] if len(sys.argv) > 5 else "invalid"
base = ""


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, code, body=b"", hdrs=None):
        self.send_response(code)
        self.send_header("Replay-Nonce", "nonce")
        for k, v in (hdrs or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.reply(200)

    def do_GET(self):
        self.reply(200, json.dumps({"newNonce": base + "/nonce", "newAccount": base + "/acct",
                                    "newOrder": base + "/order"}).encode())

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/acct":
            self.reply(201, b'{"status": "valid"}', {"Location": base + "/acct/1"})
        elif self.path == "/order":
            with open(log, "a") as f:
                f.write("order\n")
            self.reply(201, json.dumps({"status": "pending", "authorizations": [base + "/authz"],
                                        "finalize": base + "/finalize"}).encode(),
                       {"Location": base + "/order/1"})
        elif self.path == "/authz":
            self.reply(200, json.dumps({"status": status, "challenges": []}).encode())
        else:
            self.reply(404, b"{}")


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
base = "https://127.0.0.1:%d" % srv.server_address[1]
with open(ready + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
import os
os.rename(ready + ".tmp", ready)
srv.serve_forever()
