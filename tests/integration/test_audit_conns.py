#!/usr/bin/python3
"""Audit records under connections that stay open (issue 15, item 2):

- Under the journal, the caller's systemd unit is looked up once per connection: each record
  names the unit of the caller on whose connection it was decided, two callers in two units on
  interleaved keep-alive connections (spread over both sign workers) each get their own, granted
  and refused alike. Needs root and a writable systemd cgroup hierarchy (skipped otherwise).
- Outside the journal, audit records and log lines written by concurrent workers never
  interleave: 8 keep-alive connections sign, are refused and logged at once, and every line of
  stderr (a regular file, and a pipe) is one whole JSON record or one whole log line, one record
  per decision.

Environment: TOKENSIGND, SOFTHSM_MODULE, PYTHONPATH (tests/integration/meson.build)."""

import ctypes
import json
import os
import re
import secrets
import socket
import threading
import time

import harness
from test_audit import JournalDaemon, PipeDaemon, journal_fields

CLAIMS = {"sub": "user-42", "aud": "api://orders"}
SIGNED_ID = "4b9e2d7c1f0a4e6b8c3d5a7f9e1b2c4d"
REFUSED_ID = "9c3a5e7b2d4f4a6c8e1b3d5f7a9c2e4b"


class KeepAlive:
    """HTTP/1.1 requests one after another on one connected Unix socket."""

    def __init__(self, sock):
        self.s = sock
        self.s.settimeout(harness.IO_TIMEOUT)
        self.buf = b""

    def sign(self, claims, issuer="main"):
        data = json.dumps({"claims": claims}).encode()
        self.s.sendall(b"POST /v1/issuers/%s/sign HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                       % (issuer.encode(), len(data)) + data)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        n = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
        while len(rest) < n:
            rest += self._recv()
        self.buf = rest[n:]
        return int(head.split()[1]), json.loads(rest[:n])

    def _recv(self):
        b = self.s.recv(65536)
        if not b:
            raise AssertionError("the daemon closed a keep-alive connection")
        return b


def sd_pid_get_unit(pid):
    """What libsystemd says pid's unit is (None: none), as the daemon will ask it."""
    lib = ctypes.CDLL("libsystemd.so.0")
    out = ctypes.c_char_p()
    if lib.sd_pid_get_unit(ctypes.c_int(pid), ctypes.byref(out)) < 0:
        return None
    return out.value.decode()


class UnitCaller:
    """A child process in a cgroup named like a systemd unit, which connects n sockets to path
    and hands them over (SCM_RIGHTS), then lives until close(): SO_PEERCRED names it, and its
    unit is that cgroup. None of the candidate hierarchies works: self.unit is None."""

    HIERARCHIES = ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup", "/sys/fs/cgroup/unified")

    def __init__(self, path, n, name):
        self.unit, self.dir, self.socks = None, None, []
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.pid = os.fork()
        if self.pid == 0:
            parent.close()
            self._child(child, path, n, name)
        child.close()
        self.ctl = parent
        for base in self.HIERARCHIES:
            d = os.path.join(base, name)
            if not os.path.exists(os.path.join(base, "cgroup.procs")):
                continue  # not a cgroup hierarchy (the tmpfs above them, say)
            try:
                os.mkdir(d)
            except OSError:
                continue
            parent.sendall(d.encode() + b"\n")
            ok = parent.recv(1)
            if ok == b"y" and sd_pid_get_unit(self.pid) == name:
                self.unit, self.dir = name, d
                break
            parent.sendall(b"back\n")
            parent.recv(1)
            os.rmdir(d)
        if self.unit is None:
            return
        parent.sendall(b"connect\n")
        _, fds, _, _ = socket.recv_fds(parent, 16, n)
        self.socks = [socket.socket(fileno=fd) for fd in fds]

    @staticmethod
    def _child(ctl, path, n, name):
        def join(cgroup):
            """Moves this process into cgroup; never creates a file (O_CREAT)."""
            try:
                fd = os.open(os.path.join(cgroup, "cgroup.procs"), os.O_WRONLY)
            except OSError:
                return False
            try:
                os.write(fd, b"0")
                return True
            except OSError:
                return False
            finally:
                os.close(fd)

        code = 1
        try:
            f = ctl.makefile("rb")
            while True:
                line = f.readline().strip().decode()
                if not line:
                    break
                if line == "back":  # into the hierarchy's root again, to leave d removable
                    for base in UnitCaller.HIERARCHIES:
                        join(base)
                    ctl.sendall(b"y")
                elif line == "connect":
                    socks = [socket.socket(socket.AF_UNIX) for _ in range(n)]
                    for s in socks:
                        s.connect(path)
                    socket.send_fds(ctl, [b"s"], [s.fileno() for s in socks])
                    ctl.recv(1)  # until the test is done
                    break
                else:
                    ctl.sendall(b"y" if join(line) else b"n")
            code = 0
        finally:
            os._exit(code)

    def close(self):
        for s in self.socks:
            s.close()
        try:
            self.ctl.sendall(b"\n")
        except OSError:
            pass
        self.ctl.close()
        os.waitpid(self.pid, 0)
        if self.dir:
            for _ in range(50):
                try:
                    os.rmdir(self.dir)
                    break
                except OSError:
                    time.sleep(0.1)


class Units(harness.TestCase):
    """Each record names its own connection's caller's unit."""

    def test_two_callers_two_units(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to make cgroups")
        d = JournalDaemon("best-effort")
        self.addCleanup(d.close)
        d.start()
        tag = secrets.token_hex(3)
        callers = []
        for who in ("a", "b"):
            c = UnitCaller(d.sign_socket, 2, "tokensign-test-%s-%s.service" % (tag, who))
            self.addCleanup(c.close)
            if c.unit is None:
                self.skipTest("no systemd cgroup hierarchy this test can make a unit in")
            callers.append(c)
        a, b = callers
        # Connected a, a, b, b: the acceptor gives each new connection to the worker with the
        # fewest, so each worker holds one connection of each caller; a cache per worker or per
        # process would name the wrong unit.
        conns = [(a, KeepAlive(a.socks[0])), (b, KeepAlive(b.socks[0])),
                 (a, KeepAlive(a.socks[1])), (b, KeepAlive(b.socks[1]))]
        # The daemon blocks on a journal socket holding net.unix.max_dgram_qlen (10) entries,
        # as it would on journald: read them as they come.
        got, stop = [], threading.Event()

        def drain():
            d.journal.settimeout(0.1)
            while not stop.is_set():
                try:
                    got.append(journal_fields(d.journal.recv(1 << 20)))
                except socket.timeout:
                    pass
        reader = threading.Thread(target=drain)
        reader.start()
        jtis = {}
        for round_ in range(3):
            for i, (c, k) in enumerate(conns):
                jti = "u-%d-%d-%s" % (round_, i, tag)
                status, body = k.sign(dict(CLAIMS, jti=jti))
                self.assertEqual(status, 200, body)
                jtis[jti] = c
            status, body = conns[round_ % 4][1].sign(dict(CLAIMS, aud="api://nope"))
            self.assertEqual((status, body.get("error")), (400, "aud_not_allowed"))
        time.sleep(0.3)
        stop.set()
        reader.join()
        entries = [e for e in got if e.get("TOKENSIGN_EVENT") in ("signed", "refused")]
        signed = [e for e in entries if e.get("MESSAGE_ID") == SIGNED_ID]
        refused = [e for e in entries if e.get("MESSAGE_ID") == REFUSED_ID]
        self.assertEqual(sorted(e["TOKENSIGN_JTI"] for e in signed), sorted(jtis))
        for e in signed:
            c = jtis[e["TOKENSIGN_JTI"]]
            self.assertEqual((e["TOKENSIGN_CALLER_PID"], e["TOKENSIGN_CALLER_UNIT"]),
                             (str(c.pid), c.unit), e)
        self.assertEqual(len(refused), 3)
        units = {str(c.pid): c.unit for c in callers}
        for e in refused:
            self.assertEqual(e["TOKENSIGN_CALLER_UNIT"], units[e["TOKENSIGN_CALLER_PID"]], e)


class NoInterleaving(harness.TestCase):
    """Audit records and log lines written by concurrent workers each stay one whole line, on a
    regular file (no lock of ours: the kernel keeps each write whole) and on a pipe (our lock)."""

    CONNS, PER_CONN = 8, 120
    LOG_LINE = re.compile(r"^tokensignd: (emerg|alert|crit|error|warning|notice|info|debug): ")

    def daemon(self, cls):
        issuers = {"main": dict(harness.DEFAULT_ISSUER),
                   # a caller refused here is logged (rate-limited) and audited
                   "closed": dict(harness.DEFAULT_ISSUER, allow="uid:4242",
                                  iss="https://login.example.test/closed")}
        d = cls(issuers=issuers)
        self.addCleanup(d.close)
        d.start()
        return d

    def storm(self, d):
        """CONNS clients at once; returns the jtis of the tokens they were given."""
        errors, jtis = [], []

        def client(i):
            try:
                k = KeepAlive(socket.socket(socket.AF_UNIX))
                k.s.connect(d.sign_socket)
                for n in range(self.PER_CONN):
                    # long members, so that records are several hundred bytes
                    jti = "c%d-%d-%s" % (i, n, "x" * 100)
                    if n % 8 == 7:  # refused on its headers: the connection is closed after
                        status, body = k.sign(dict(CLAIMS, jti=jti), issuer="closed")
                        k.s.close()
                        k = KeepAlive(socket.socket(socket.AF_UNIX))
                        k.s.connect(d.sign_socket)
                        expect = (403, "forbidden")
                    elif n % 8 == 3:
                        status, body = k.sign(dict(CLAIMS, jti=jti, aud="api://" + "y" * 150))
                        expect = (400, "aud_not_allowed")
                    else:
                        status, body = k.sign(dict(CLAIMS, jti=jti))
                        expect = (200, None)
                        jtis.append(jti)
                    if (status, body.get("error")) != expect:
                        errors.append((status, body))
                k.s.close()
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(repr(e))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(self.CONNS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        return jtis

    def check(self, d, mark, jtis):
        time.sleep(0.3)
        signed, refused, logged = [], 0, 0
        for line in d.log()[mark:].splitlines():
            if self.LOG_LINE.match(line):
                self.assertNotIn('{"', line, "a record inside a log line")
                logged += 1
                continue
            rec = json.loads(line)  # a torn or merged record is not one JSON object
            if rec["event"] == "signed":
                signed.append(rec["jti"])
            else:
                self.assertIn(rec["reason"], ("aud_not_allowed", "forbidden"), rec)
                refused += 1
        self.assertEqual(sorted(signed), sorted(jtis))
        self.assertEqual(refused, self.CONNS * self.PER_CONN // 4)
        self.assertGreater(logged, 10, "log lines were written meanwhile")

    def test_file(self):
        d = self.daemon(harness.Daemon)
        mark = len(d.log())
        self.check(d, mark, self.storm(d))

    def test_pipe(self):
        d = self.daemon(PipeDaemon)
        mark = len(d.log())
        jtis = self.storm(d)
        time.sleep(0.3)
        self.check(d, mark, jtis)


if __name__ == "__main__":
    harness.main()
