"""bench/benchlib.py: what bench/soak and bench/overload share: durations,
free ports, starting and stopping servers, and reading a server's RSS, open
files and /debug/varz."""
import argparse
import os
import re
import signal
import socket
import ssl
import subprocess
import time


def duration(s):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)?", s)
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {s!r} (100us, 500ms, 30s, 10m, 1h)")
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_accept(proc, port, secs=10):
    """Wait until 127.0.0.1:port accepts while proc runs; False if it exits or time runs out."""
    end = time.time() + secs
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def stop(proc, secs=5):
    """SIGTERM, then SIGKILL after secs; the exit code (negative = signal)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(secs)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def read_rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def count_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


VARZ_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def varz(port, ca_file=None, tls_insecure=False):
    """/debug/varz of the server on 127.0.0.1:port (over TLS, for the name
    localhost, when ca_file is given; over TLS without verifying the
    certificate with tls_insecure) as {name or name{labels}: value}; None if
    unreachable."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=3)
        if ca_file or tls_insecure:
            if ca_file:
                ctx = ssl.create_default_context(cafile=ca_file)
            else:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
        sock.sendall(b"GET /debug/varz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = sock.recv(65536)
            if not b:
                break
            data += b
        sock.close()
    except (OSError, ssl.SSLError):
        return None
    out = {}
    body = data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")
    for line in body.splitlines():
        m = VARZ_LINE.match(line)
        if m:
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def by_label(v, metric):
    """{label value: count} for metric{reason="..."} lines."""
    pre = metric + '{reason="'
    return {k[len(pre):-2]: int(x) for k, x in v.items() if k.startswith(pre)}




def runq_wait_ns(pid):
    """{thread id: ns it has waited on a run queue (runnable, not running)}, from
    /proc/PID/task/*/schedstat; {} if unreadable."""
    out = {}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    out[tid] = int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                pass
    except OSError:
        pass
    return out
