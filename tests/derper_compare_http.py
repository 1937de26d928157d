#!/usr/bin/env python3
"""derper_compare_http.py: the same raw HTTP requests to derper and to derpd,
side by side, on loopback; each answer compared.

    DERPER_BIN=/path/to/derper DERPD_BIN=build/src/derpd tests/derper_compare_http.py [--table]

Both servers get the same key file (so the 101s and ServerKey frames match)
and plain HTTP on 127.0.0.1 (derper: -stun=false -http-port=-1, never -dev).
A case passes when the two answers agree after the differences derpd has
on purpose are set aside:
  - derpd answers every request with HTTP/1.1 and closes after it (it adds
    "Connection: close" and never keeps a connection alive): the protocol
    version of the status line, a Connection: close header and whether the
    connection stayed open are not compared;
  - header names compare in any case and any order; Date is dropped;
  - a few cases are known differences and say why (derpd's own home page text:
    there only the status and headers, but for the length, are compared).
Exit 0 when every case passes, 1 otherwise, 77 (skip) without DERPER_BIN.
--table prints a Markdown table (docs/operations.md has one)."""

import os
import socket
import subprocess
import sys
import tempfile
import time

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
WS = ("GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: " + KEY + "\r\nSec-WebSocket-Version: 13\r\n")

# (name, request, note): note None = must match; else the difference, expected.
CASES = [
    ("HTTP/1.1 without Host", "GET /derp HTTP/1.1\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n", None),
    ("two Host headers", "GET /derp HTTP/1.1\r\nHost: a\r\nHost: b\r\nUpgrade: DERP\r\n\r\n", None),
    ("Host with a space", "GET /derp HTTP/1.1\r\nHost: a b\r\nUpgrade: DERP\r\n\r\n", None),
    ("Host folded onto two lines", "GET /robots.txt HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", None),
    ("'Host :' (space before the colon)", "GET /robots.txt HTTP/1.1\r\nHost : a\r\n\r\n", None),
    ("empty Host", "GET /robots.txt HTTP/1.1\r\nHost:\r\n\r\n", None),
    ("Host [::1]:80", "GET /robots.txt HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", None),
    ("header name with a space", "GET /robots.txt HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n", None),
    ("control byte in a value", "GET /robots.txt HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", None),
    ("HTTP/1.0 without Host", "GET /robots.txt HTTP/1.0\r\n\r\n", None),
    ("HTTP/1.2", "GET /derp HTTP/1.2\r\nHost: a\r\n\r\n", None),
    ("HTTP/2.0", "GET /robots.txt HTTP/2.0\r\nHost: a\r\n\r\n", None),
    ("DERP upgrade", "GET /derp HTTP/1.1\r\nHost: a\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n", None),
    ("DERP upgrade, POST", "POST /derp HTTP/1.1\r\nHost: a\r\nUpgrade: derp\r\n\r\n", None),
    ("no upgrade", "GET /derp HTTP/1.1\r\nHost: a\r\n\r\n", None),
    ("first Upgrade counts", "GET /derp HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nUpgrade: DERP\r\n\r\n", None),
    ("WebSocket", WS + "Sec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("WebSocket, HTTP/1.0", WS.replace("HTTP/1.1", "HTTP/1.0") + "Sec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("WebSocket, no Connection: Upgrade", WS.replace("Connection: Upgrade\r\n", "") +
     "Sec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("WebSocket, Connection: keep-alive, close", WS.replace("Connection: Upgrade", "Connection: keep-alive, close") +
     "Sec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("WebSocket, POST", WS.replace("GET", "POST") + "Sec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("WebSocket, HEAD", WS.replace("GET", "HEAD") + "Sec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("WebSocket, no version", WS.replace("Sec-WebSocket-Version: 13\r\n", "") +
     "Sec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("WebSocket, version 8", WS.replace("Version: 13", "Version: 8") + "Sec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("WebSocket, no key", WS.replace("Sec-WebSocket-Key: " + KEY + "\r\n", "") +
     "Sec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("WebSocket, two keys", WS + "Sec-WebSocket-Key: " + KEY + "\r\nSec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("WebSocket, short key", WS.replace(KEY, "abc") + "Sec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("WebSocket, key with quote and bad UTF-8", WS.replace(KEY, 'a"b\udcff\u0085') +
     "Sec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("WebSocket, key + NBSP", WS.replace(KEY, KEY + "\u00a0") + "Sec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("WebSocket, key with spare bits", WS.replace(KEY, "dGhlIHNhbXBsZSBub25jZR==") +
     "Sec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("WebSocket, no subprotocol (a DERP upgrade)", WS + "\r\n", None),
    ("WebSocket, protocol DERP (a DERP upgrade)", WS + "Sec-WebSocket-Protocol: DERP\r\n\r\n", None),
    ("WebSocket, derp in the second header only", WS + "Sec-WebSocket-Protocol: x\r\n"
     "Sec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("WebSocket, protocol derpx (101, close 1008)", WS + "Sec-WebSocket-Protocol: derpx\r\n\r\n", None),
    ("WebSocket, derpx then DERP (echoed, 1008)", WS + "Sec-WebSocket-Protocol: derpx\r\n"
     "Sec-WebSocket-Protocol: DERP\r\n\r\n", None),
    ("WebSocket, Unicode spaces around derp", WS + "Sec-WebSocket-Protocol: chat, \u00a0derp\u3000 \r\n\r\n", None),
    ("WebSocket, Upgrade with KELVIN SIGN", WS.replace("websocket", "websoc\u212aet") +
     "Sec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("WebSocket, Origin missing ']'", WS + "Origin: http://[::1\r\nSec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("WebSocket, Origin with a bad escape", WS + "Origin: http://u:p%zz@h\r\nSec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("WebSocket, Origin from elsewhere", WS + "Origin: https://example.com\r\nSec-WebSocket-Protocol: derp\r\n\r\n",
     None),
    ("probe", "GET /derp/probe HTTP/1.1\r\nHost: a\r\n\r\n", None),
    ("probe, POST", "POST /derp/probe HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", None),
    ("generate_204", "GET /generate_204 HTTP/1.1\r\nHost: a\r\nX-Tailscale-Challenge: abc\r\n\r\n",
     "derper v1.78.3 lacks the Cache-Control header later versions send (derpd sends it)"),
    ("robots.txt", "GET /robots.txt HTTP/1.1\r\nHost: a\r\n\r\n", None),
    ("bootstrap-dns, no names", "GET /bootstrap-dns?q=x HTTP/1.1\r\nHost: a\r\n\r\n", None),
    ("home page", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "derpd's own page text (same headers)"),
    ("unknown path: the home page", "GET /derp/x HTTP/1.1\r\nHost: a\r\n\r\n", "derpd's own page text (same headers)"),
    ("/debug (redirect)", "GET /debug HTTP/1.1\r\nHost: a\r\n\r\n", None),
    ("/debug/ page that does not exist", "GET /debug/nope HTTP/1.1\r\nHost: a\r\n\r\n", None),
    ("path //derp", "GET //derp HTTP/1.1\r\nHost: a\r\n\r\n",
     "derper's ServeMux cleans paths with a 301; derpd does not"),
    ("target without a slash", "GET *@evil.example HTTP/1.1\r\nHost: a\r\n\r\n", None),
    ("target '*'", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", None),
    ("target 'derp'", "GET derp HTTP/1.1\r\nHost: a\r\n\r\n", None),
    ("absolute-form target", "GET http://a/derp HTTP/1.1\r\nHost: a\r\n\r\n",
     "derper routes the URL's path; derpd routes only origin-form targets (the home page)"),
]


# The same servers again with -derp=false and bootstrap DNS names (IP
# literals, so that both resolve them alike, offline, to one address each).
FLAGS2 = ["-derp=false", "-bootstrap-dns-names", "127.0.0.3,nonexistent.invalid",
          "-unpublished-bootstrap-dns-names", "127.0.0.2,127.0.0.4/nonexistent.invalid"]
CASES2 = [
    ("-derp=false: DERP upgrade", "GET /derp HTTP/1.1\r\nHost: a\r\nUpgrade: DERP\r\n\r\n", None),
    ("-derp=false: WebSocket", WS + "Sec-WebSocket-Protocol: derp\r\n\r\n", None),
    ("-derp=false: probe", "GET /derp/probe HTTP/1.1\r\nHost: a\r\n\r\n", None),
    ("-derp=false: home page", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "derpd's own page text (same headers)"),
    ("bootstrap-dns: the published list", "GET /bootstrap-dns HTTP/1.1\r\nHost: a\r\n\r\n", None),
    ("bootstrap-dns: ?q=unpublished", "GET /bootstrap-dns?q=127.0.0.2 HTTP/1.1\r\nHost: a\r\n\r\n", None),
    ("bootstrap-dns: ?q=unpublished, escaped", "GET /bootstrap-dns?x&q=127%2E0.0.2 HTTP/1.1\r\nHost: a\r\n\r\n",
     None),
    ("bootstrap-dns: ?q=unpublished, 0% (TXT failed)", "GET /bootstrap-dns?q=127.0.0.4 HTTP/1.1\r\nHost: a\r\n\r\n",
     None),
    ("bootstrap-dns: ?q=published", "GET /bootstrap-dns?q=127.0.0.3 HTTP/1.1\r\nHost: a\r\n\r\n", None),
    ("bootstrap-dns: ?q=unknown", "GET /bootstrap-dns?q=zzz HTTP/1.1\r\nHost: a\r\n\r\n", None),
    ("bootstrap-dns: HEAD", "HEAD /bootstrap-dns HTTP/1.1\r\nHost: a\r\n\r\n", None),
]

def send(port, req):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(req.encode("utf-8", "surrogateescape"))
    s.settimeout(0.7)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except socket.timeout:
        pass
    s.close()
    return out


def norm(raw):
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 1)[1] if b" " in lines[0] else lines[0]
    hdrs = []
    for l in lines[1:]:
        name, _, val = l.partition(b":")
        name = name.strip().lower()
        val = val.strip()
        if name == b"date" or (name == b"connection" and val.lower() == b"close"):
            continue
        hdrs.append((name, val))
    return status, sorted(hdrs), body


def wait_port(port, proc):
    for _ in range(100):
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(argv, port):
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_port(port, p):
        p.kill()
        raise RuntimeError("%s did not start" % argv[0])
    return p


def stop(procs):
    for p in procs:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()


def run_cases(derper, derpd, key, flags, cases, rows):
    pa, pb = free_port(), free_port()
    procs = []
    try:
        procs.append(start([derper, "-a", "127.0.0.1:%d" % pa, "-c", key, "-stun=false", "-http-port=-1"] + flags,
                           pa))
        procs.append(start([derpd, "-a", "127.0.0.1:%d" % pb, "-c", key, "--shards", "2"] + flags, pb))
        if "-bootstrap-dns-names" in flags:  # both resolve at start, off the request path
            for port in (pa, pb):
                for _ in range(100):
                    if send(port, "GET /bootstrap-dns HTTP/1.1\r\nHost: a\r\n\r\n").endswith(b"}"):
                        break
                    time.sleep(0.05)
        fails = 0
        for name, req, note in cases:
            ra, rb = norm(send(pa, req)), norm(send(pb, req))
            if note is not None:
                def nolen(h):
                    return [x for x in h if x[0] != b"content-length"]
                same_hdrs = ra[0] == rb[0] and nolen(ra[1]) == nolen(rb[1])
                verdict = "known difference: " + note
                if note.startswith("derpd's own page") and not same_hdrs:
                    verdict, fails = "FAIL (headers differ)", fails + 1
            elif ra == rb:
                verdict = "same"
            else:
                verdict, fails = "FAIL", fails + 1
                print("--- %s\nderper: %r\nderpd:  %r" % (name, ra, rb), file=sys.stderr)
            rows.append((name, ra[0].decode(errors="replace"), rb[0].decode(errors="replace"), verdict))
        return fails
    finally:
        stop(procs)


def main():
    derper, derpd = os.environ.get("DERPER_BIN"), os.environ.get("DERPD_BIN", "build/src/derpd")
    if not derper or not os.access(derper, os.X_OK):
        print("skip: set DERPER_BIN to a derper binary")
        return 77
    tmp = tempfile.mkdtemp(prefix="derper-compare-")
    key = os.path.join(tmp, "derper.key")
    # derper (started first) writes the key file; derpd reads the same one: same 101s, same ServerKey.
    rows = []
    fails = run_cases(derper, derpd, key, [], CASES, rows)
    fails += run_cases(derper, derpd, key, FLAGS2, CASES2, rows)
    if "--table" in sys.argv:
        print("| request | derper v1.78.3 | derpd | |")
        print("|---|---|---|---|")
        for r in rows:
            print("| %s | %s | %s | %s |" % tuple(x.replace("|", "\\|") for x in r))
    else:
        for r in rows:
            print("%-50s %-45s %s" % (r[0], r[2], r[3]))
    print("%d cases, %d failed" % (len(rows), fails))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
