#!/usr/bin/env python3
"""systemd's notify protocol against a real NOTIFY_SOCKET listener.

    test_service_notify.py CASE      (ready_watchdog_stop, abstract_reload, wedge)

Each case binds an AF_UNIX datagram socket as systemd does, starts derpd
($DERPD_BIN) with NOTIFY_SOCKET (and WATCHDOG_USEC) set, and checks what
arrives and when:
- ready_watchdog_stop: READY=1 (with STATUS) once derpd listens: a TCP connect
  and GET /derp/probe succeed right after it; WATCHDOG=1 every WATCHDOG_USEC/2;
  SIGTERM gives STOPPING=1, no WATCHDOG=1 after it, exit 0.
- abstract_reload: an abstract socket ("@name"); a WATCHDOG_PID naming another
  process turns the watchdog off; SIGHUP gives RELOADING=1 then READY=1.
- wedge: DERPD_TEST_WEDGE_SHARD_AFTER_MS stops shard 0 in its loop: the
  pings stop (none from one period after it), the log names the shard,
  STOPPING=1 still comes on SIGTERM, and derpd exits 1 when the shard does
  not join.
- upgrade: a live upgrade (SIGUSR2) under the watchdog, with WATCHDOG_PID
  set as systemd sets it: the new process sends MAINPID=<its pid>, READY=1 and
  at once WATCHDOG=1, and takes over the pings, the old one sends no STOPPING=1 and exits 0, the
  port keeps answering, and SIGTERM to the new one gives STOPPING=1, exit 0.
Each message's sender is read from SO_PASSCRED credentials, as systemd does.
Exit 0 on success, 1 on failure, 77 (skip) for a derpd built without
libsystemd.
"""
import ctypes
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

DERPD = os.environ.get("DERPD_BIN", os.path.join(os.path.dirname(__file__), "..", "build", "src", "derpd"))
# Sanitizer builds start slower and tick later: wider margins, same checks.
SLOW = 2.0 if os.environ.get("DERPD_SANITIZE", "none") not in ("", "none") else 1.0


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Derpd:
    """derpd with NOTIFY_SOCKET pointing at a socket of ours."""

    def __init__(self, tmp, name, abstract=False, env=None, args=(), wrap=()):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if abstract:
            addr = "@derpd-notify-test-%d-%s" % (os.getpid(), name)
            self.sock.bind("\0" + addr[1:])
        else:
            addr = os.path.join(tmp, name + ".sock")
            self.sock.bind(addr)
        self.port = free_port()
        e = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "DERPD_TEST_WEDGE_SHARD_AFTER_MS"):
            e.pop(k, None)
        e["NOTIFY_SOCKET"] = addr
        e.update(env or {})
        self.log_path = os.path.join(tmp, name + ".log")
        self.log = open(self.log_path, "w")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            # -stun-port=0: the cases run side by side, and beside other tests.
            list(wrap) + [DERPD, "-dev", "-a", "127.0.0.1:%d" % self.port, "-stun-port=0"] + list(args),
            env=e, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.msgs = []  # (seconds since start, message, sender pid)

    def recv(self, until, stop=None):
        """Collect messages until `until` seconds after start, or until one
        satisfies stop (returned)."""
        while True:
            left = self.t0 + until - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                return None
            m = data.decode()
            pid = 0
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", cdata[:12])[0]
            t = time.monotonic() - self.t0
            self.msgs.append((t, m, pid))
            if stop and stop(m):
                return (t, m, pid)

    def now(self):
        return time.monotonic() - self.t0

    def logtext(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.sock.close()


def fields(m):
    return dict(l.split("=", 1) for l in m.split("\n") if "=" in l)


def probe(port):
    """GET /derp/probe on a fresh connection: the status line."""
    c = socket.create_connection(("127.0.0.1", port), timeout=2)
    c.sendall(b"GET /derp/probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = c.recv(4096).decode(errors="replace")
    c.close()
    return data.split("\r\n", 1)[0]


def watchdogs(d, t_from=0.0, t_to=1e9, pid=None):
    return [t for t, m, p in d.msgs
            if "WATCHDOG=1" in m.split("\n") and t_from <= t <= t_to and pid in (None, p)]


def case_ready_watchdog_stop(tmp):
    d = Derpd(tmp, "rws", env={"WATCHDOG_USEC": "1000000"}, args=["--shards", "2"])
    try:
        r = d.recv(10 * SLOW, lambda m: "READY=1" in m.split("\n"))
        check(r, "no READY=1 within %.0f s" % (10 * SLOW))
        f = fields(r[1])
        check("listening on 127.0.0.1:%d" % d.port in f.get("STATUS", ""),
              "STATUS does not name the port: %r" % r[1])
        # READY=1 means listening: the connect and the request succeed now.
        status = probe(d.port)
        check(status.startswith("HTTP/1.1 200"), "/derp/probe right after READY=1: %r" % status)
        check(not watchdogs(d), "WATCHDOG=1 before READY=1")
        t_ready = r[0]
        d.recv(t_ready + 3.2)
        w = watchdogs(d, t_ready)
        # WATCHDOG_USEC=1s: one every 0.5 s, the first 0.5 s after READY=1.
        check(5 <= len(w) <= 7, "%d WATCHDOG=1 in 3.2 s, want 6 (every 0.5 s): %s" % (len(w), w))
        gaps = [b - a for a, b in zip([t_ready] + w, w)]
        check(all(0.35 <= g <= 0.5 + 0.25 * SLOW for g in gaps), "WATCHDOG=1 gaps %s, want 0.5 s" % gaps)
        d.proc.send_signal(signal.SIGTERM)
        t_term = d.now()
        r = d.recv(t_term + 5 * SLOW, lambda m: "STOPPING=1" in m.split("\n"))
        check(r, "no STOPPING=1 after SIGTERM")
        rc = d.proc.wait(timeout=10 * SLOW)
        d.recv(d.now() + 0.3)
        check(rc == 0, "exit %d after SIGTERM, want 0" % rc)
        check(not watchdogs(d, r[0] + 0.001), "WATCHDOG=1 after STOPPING=1")
    finally:
        d.close()


def case_abstract_reload(tmp):
    # WATCHDOG_PID names another process (our own): derpd must not ping.
    d = Derpd(tmp, "abs", abstract=True,
              env={"WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())})
    try:
        r = d.recv(10 * SLOW, lambda m: "READY=1" in m.split("\n"))
        check(r, "no READY=1 on an abstract socket")
        d.recv(r[0] + 1.5)
        check(not watchdogs(d), "WATCHDOG=1 although WATCHDOG_PID is another process")
        n = len(d.msgs)
        d.proc.send_signal(signal.SIGHUP)
        d.recv(d.now() + 3 * SLOW, lambda m: m == "READY=1")
        after = [m for _, m, _ in d.msgs[n:]]
        check(len(after) == 2 and after[0].startswith("RELOADING=1\nMONOTONIC_USEC=") and after[1] == "READY=1",
              "SIGHUP: want RELOADING=1 (with MONOTONIC_USEC) then READY=1, got %r" % after)
        d.proc.send_signal(signal.SIGTERM)
        check(d.recv(d.now() + 5 * SLOW, lambda m: m == "STOPPING=1"), "no STOPPING=1")
        check(d.proc.wait(timeout=10 * SLOW) == 0, "exit status after SIGTERM")
    finally:
        d.close()


def case_wedge(tmp):
    wedge = 1.5
    d = Derpd(tmp, "wedge", args=["--shards", "2"],
              env={"WATCHDOG_USEC": "1000000", "DERPD_TEST_WEDGE_SHARD_AFTER_MS": str(int(wedge * 1000))})
    try:
        r = d.recv(10 * SLOW, lambda m: "READY=1" in m.split("\n"))
        check(r, "no READY=1")
        d.recv(wedge + 4.0)
        before = watchdogs(d, 0, wedge)
        check(len(before) >= 2, "only %d WATCHDOG=1 before the wedge: %s" % (len(before), watchdogs(d)))
        # The check after the wedge may still see shard 0's last tick; from
        # one period (0.5 s) later on there must be none.
        late = watchdogs(d, wedge + 0.5 + 0.25 * SLOW)
        check(not late, "WATCHDOG=1 after shard 0 was wedged: %s" % late)
        log = d.logtext()
        check("wedged by DERPD_TEST_WEDGE_SHARD_AFTER_MS" in log, "no wedge line in the log")
        check("service: shard 0 has not ticked" in log, "the log does not name the stalled shard")
        # The main thread still answers signals; the wedged shard never joins.
        d.proc.send_signal(signal.SIGTERM)
        check(d.recv(d.now() + 5 * SLOW, lambda m: m == "STOPPING=1"), "no STOPPING=1 with a wedged shard")
        rc = d.proc.wait(timeout=10 * SLOW)
        check(rc == 1, "exit %d with a shard that never stops, want 1" % rc)
        check("shard 0 did not stop within 5s" in d.logtext(), "no 'did not stop' line")
    finally:
        d.close()


def case_upgrade(tmp):
    # We adopt the new derpd once the old one exits (as systemd, PID 1, would).
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # WATCHDOG_PID names the main process, as systemd sets it.
    d = Derpd(tmp, "upgrade", env={"WATCHDOG_USEC": "1000000"}, args=["--shards", "2"],
              wrap=["sh", "-c", 'export WATCHDOG_PID=$$; exec "$0" "$@"'])
    new = None
    try:
        old = d.proc.pid
        r = d.recv(10 * SLOW, lambda m: "READY=1" in m.split("\n"))
        check(r and r[2] == old, "no READY=1 from the first process")
        d.recv(r[0] + 1.2)
        check(watchdogs(d, pid=old), "no WATCHDOG=1 from the first process")
        d.proc.send_signal(signal.SIGUSR2)
        t_usr2 = d.now()
        r = d.recv(t_usr2 + 20 * SLOW, lambda m: m.startswith("MAINPID="))
        check(r, "no MAINPID= after SIGUSR2")
        f = fields(r[1])
        new = int(f["MAINPID"])
        check(new != old and r[2] == new, "MAINPID=%d sent by pid %d, old pid %d" % (new, r[2], old))
        lines = r[1].split("\n")
        check("READY=1" in lines and "listening on" in f.get("STATUS", ""),
              "MAINPID= without READY=1 and STATUS: %r" % r[1])
        # systemd keeps the old process's watchdog clock: the new one pings at once.
        check("WATCHDOG=1" in lines, "MAINPID= without WATCHDOG=1: %r" % r[1])
        t_new = r[0]
        status = probe(d.port)
        check(status.startswith("HTTP/1.1 200"), "/derp/probe after the upgrade: %r" % status)
        rc = d.proc.wait(timeout=15 * SLOW)
        check(rc == 0, "the old process exited %d, want 0" % rc)
        d.recv(max(d.now(), t_new + 2.0) + 0.3)  # what queued while we waited, and more
        check(len(watchdogs(d, t_new, pid=new)) >= 3, "the new process does not ping: %s" % d.msgs[-6:])
        stale = [(t, m) for t, m, p in d.msgs if p == old and t > t_new]
        check(not stale, "the old process still notified after MAINPID=: %s" % stale)
        check(not [m for _, m, p in d.msgs if p == old and "STOPPING=1" in m], "STOPPING=1 from the old process")
        os.kill(new, signal.SIGTERM)
        check(d.recv(d.now() + 5 * SLOW, lambda m: m == "STOPPING=1"), "no STOPPING=1 from the new process")
        for _ in range(int(100 * SLOW)):
            wpid, st = os.waitpid(new, os.WNOHANG)
            if wpid:
                break
            time.sleep(0.1)
        check(wpid == new and os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0,
              "the new process did not exit 0 after SIGTERM")
        new = None
    finally:
        if new:
            try:
                os.kill(new, signal.SIGKILL)
                os.waitpid(new, 0)
            except OSError:
                pass
        d.close()


CASES = {
    "ready_watchdog_stop": case_ready_watchdog_stop,
    "abstract_reload": case_abstract_reload,
    "wedge": case_wedge,
    "upgrade": case_upgrade,
}


def main():
    names = sys.argv[1:] or list(CASES)
    if os.environ.get("DERPD_SYSTEMD", "true") != "true":
        print("service_notify: derpd built without libsystemd (-Dsystemd): skipped")
        return 77
    passed = failed = 0
    for n in names:
        with tempfile.TemporaryDirectory(prefix="derpd-notify.") as tmp:
            try:
                CASES[n](tmp)
                print("service_notify %s: ok" % n)
                passed += 1
            except Fail as e:
                print("service_notify %s: FAIL: %s" % (n, e))
                for p in sorted(os.listdir(tmp)):
                    if p.endswith(".log"):
                        with open(os.path.join(tmp, p)) as f:
                            sys.stdout.write("--- %s\n%s" % (p, f.read()))
                failed += 1
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
