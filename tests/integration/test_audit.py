#!/usr/bin/python3
"""Audit that holds (issue 12, item 4), outside the journal (audit records are JSON lines on
stderr):

- One audit record per signing decision, granted and refused, at every stage (403, 413, 415,
  400, 503), with the caller, the issuer, what was known of kid, jti and aud, the result and the
  reason (the error code); nothing for requests that never reach an issuer (404, 405). A
  refused caller asking 400 times: 400 records, but its log line rate-limited.
- [sign] audit = required: a token whose audit record cannot be written (stderr a pipe nobody
  reads any more) is a 503 audit_unavailable and no token; best-effort signs all the same. (An
  absent journal socket cannot be staged: sd_journal_send() reports success when the socket
  does not exist.)
- Under the journal (the daemon in a mount namespace where the journal socket is the test's):
  granted and refused entries with their fields; a journal that is gone (its socket file left,
  nobody receiving) is a failed record: required 503, best-effort 200.
- A storm on the public JWKS port for 20 s (404s, and requests that make libmicrohttpd log a
  line: headers too large, requests cut off): a bounded number of log lines, "N messages
  suppressed" lines, and every audit record of the tokens signed meanwhile is there.

Environment: as the other shim tests (tests/shim/meson.build): TOKENSIGND, SOFTHSM_MODULE,
P11SHIM, PYTHONPATH."""

import json
import multiprocessing
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time

import harness

CLAIMS = {"sub": "user-42", "aud": "api://orders"}
SIGN = "/v1/issuers/main/sign"
NOBODY = 65534
RATE_BURST = 100  # daemon/ratelimit.h


def records(log, event=None):
    """The JSON lines of log (the audit records), optionally only those of one event."""
    out = []
    for line in log.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if event is None or rec.get("event") == event:
                out.append(rec)
    return out


class Decisions(harness.TestCase):
    """Every decision on a signing request for a configured issuer is one record."""

    @classmethod
    def setUpClass(cls):
        issuer = dict(harness.DEFAULT_ISSUER, allow="uid:0")
        cls.d = harness.shim_daemon(issuers={"main": issuer}, sign_mode="0666")
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def decided(self, request):
        """Runs request(); returns (its answer, the audit records written meanwhile)."""
        before = len(records(self.d.log()))
        r = request()
        time.sleep(0.2)
        return r, records(self.d.log())[before:]

    def one_refusal(self, recs, reason, r):
        self.assertEqual(len(recs), 1, "one record for %r: %r" % (r, recs))
        rec = recs[0]
        self.assertEqual((rec["event"], rec["result"], rec["reason"], rec["issuer"]),
                         ("refused", "refused", reason, "main"), rec)
        return rec

    def test_granted(self):
        jti = "granted-" + secrets.token_hex(4)
        r, recs = self.decided(lambda: self.d.sign("main", dict(CLAIMS, jti=jti)))
        body = self.assertSigned(r)
        self.assertEqual(len(recs), 1, recs)
        # the record of the first release, result appended
        self.assertEqual(list(recs[0]), ["event", "issuer", "kid", "jti", "aud", "exp", "uid",
                                         "pid", "result"], recs)
        self.assertEqual((recs[0]["event"], recs[0]["result"], recs[0]["kid"], recs[0]["jti"]),
                         ("signed", "granted", body["kid"], jti))

    def test_403_caller(self):
        r, recs = self.decided(lambda: self.d.sign("main", dict(CLAIMS, jti="not-read"),
                                                   as_uid=NOBODY))
        self.assertError(r, 403, "forbidden")
        rec = self.one_refusal(recs, "forbidden", r)
        self.assertEqual(rec["uid"], NOBODY)
        self.assertIsInstance(rec["pid"], int)
        # the body of a refused caller is never read: nothing of it in the record
        self.assertEqual(sorted(rec), ["event", "issuer", "pid", "reason", "result", "uid"])

    def test_413_by_length(self):
        r, recs = self.decided(lambda: self.d.unix_request(
            "POST", SIGN, headers={"Content-Type": "application/json",
                                   "Content-Length": "100000"}))
        self.assertError(r, 413, "body_too_large")
        self.assertEqual(self.one_refusal(recs, "body_too_large", r)["uid"], os.getuid())

    def test_415(self):
        r, recs = self.decided(lambda: self.d.unix_request(
            "POST", SIGN, json.dumps({"claims": CLAIMS}), headers={"Content-Type":
                                                                   "text/plain"}))
        self.assertError(r, 415, "unsupported_media_type")
        self.one_refusal(recs, "unsupported_media_type", r)

    def test_400_policy(self):
        r, recs = self.decided(lambda: self.d.sign(
            "main", {"aud": ["api://orders", "api://nope"], "jti": "refused-jti"}))
        self.assertError(r, 400, "aud_not_allowed")
        rec = self.one_refusal(recs, "aud_not_allowed", r)
        self.assertEqual((rec["jti"], rec["aud"]), ("refused-jti", ["api://orders",
                                                                    "api://nope"]))
        self.assertNotIn("kid", rec)
        r, recs = self.decided(lambda: self.d.unix_request(
            "POST", SIGN, b'{"claims": {', headers={"Content-Type": "application/json"}))
        self.assertError(r, 400, "invalid_json")
        self.assertNotIn("jti", self.one_refusal(recs, "invalid_json", r))
        # a jti the policy refuses is not copied into the record
        r, recs = self.decided(lambda: self.d.sign("main", dict(CLAIMS, jti="x" * 129)))
        self.assertError(r, 400, "jti_invalid")
        self.assertNotIn("jti", self.one_refusal(recs, "jti_invalid", r))

    def test_503_token(self):
        jti = "hsm-" + secrets.token_hex(4)
        harness.write_faults(self.d, "C_Sign CKR_DEVICE_ERROR 1")
        try:
            r, recs = self.decided(lambda: self.d.sign("main", dict(CLAIMS, jti=jti)))
        finally:
            harness.write_faults(self.d)
        self.assertError(r, 503, "hsm_unavailable")
        rec = self.one_refusal(recs, "hsm_unavailable", r)
        self.assertEqual((rec["jti"], rec["aud"]), (jti, "api://orders"))
        self.assertTrue(rec["kid"] and rec["exp"], rec)

    def test_refused_caller_flood(self):
        """A caller that may not sign, asking 400 times at once: every refusal has its audit
        record, the "refused caller" log line is rate-limited (burst 100, 20 a second)."""
        n = 400

        def flood():
            return [harness.unix_http(self.d.sign_socket, "POST", SIGN, {"claims": CLAIMS}).status
                    for _ in range(n)]

        before_log = len(self.d.log())
        before = len(records(self.d.log(), "refused"))
        t0 = time.monotonic()
        statuses = harness.run_as(NOBODY, NOBODY, [], flood)
        elapsed = time.monotonic() - t0
        time.sleep(0.3)
        self.assertEqual(statuses, [403] * n)
        refused = records(self.d.log(), "refused")[before:]
        self.assertEqual(len([r for r in refused if r["uid"] == NOBODY]), n, "a record each")
        lines = self.d.log()[before_log:].count("refused caller uid %d" % NOBODY)
        self.assertGreaterEqual(lines, min(n, RATE_BURST), "the first ones are logged")
        self.assertLessEqual(lines, RATE_BURST + 20 * elapsed + 1, "%d lines in %.1fs"
                             % (lines, elapsed))

    def test_not_decisions(self):
        """404 path, 405 and 404 issuer come before the request is known to be a signing
        request for a configured issuer: no record."""
        for method, path, status in (("POST", "/v1/issuers/main/nope", 404),
                                     ("GET", SIGN, 405),
                                     ("POST", "/v1/issuers/nope/sign", 404)):
            r, recs = self.decided(lambda: self.d.unix_request(method, path, {"claims": CLAIMS}))
            self.assertEqual(r.status, status, r)
            self.assertEqual(recs, [], (method, path))


class PipeDaemon(harness.Daemon):
    """A Daemon whose stderr is a pipe; a thread copies it to the log until cut() closes the
    reading end, after which every write to stderr fails (EPIPE: the daemon ignores SIGPIPE)."""

    def spawn(self):
        if not self.provisioned:
            self.provision()
        if self._notify is None:
            self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._notify.bind(self.notify_socket)
        rfd, wfd = os.pipe()
        env = dict(self.env, NOTIFY_SOCKET=self.notify_socket)
        self._logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([harness.tokensignd_path(), "-c", self.conf_path], env=env,
                                     stdin=subprocess.DEVNULL, stdout=wfd, stderr=wfd,
                                     cwd=self.workdir, preexec_fn=harness._die_with_parent)
        os.close(wfd)
        self._rfd, self._stop = rfd, threading.Event()
        self._copier = threading.Thread(target=self._copy, daemon=True)
        self._copier.start()
        return self.proc

    def _copy(self):
        import select
        while not self._stop.is_set():
            if select.select([self._rfd], [], [], 0.05)[0]:
                data = os.read(self._rfd, 65536)
                if not data:
                    break
                self._logf.write(data)
                self._logf.flush()

    def cut(self):
        self._stop.set()
        self._copier.join()
        os.close(self._rfd)


class Required(harness.TestCase):
    """[sign] audit = required: no token without its record; best-effort: tokens all the same."""

    def daemon(self, mode):
        d = PipeDaemon()
        d.config_text = lambda: harness.Daemon.config_text(d).replace(
            "[sign]\n", "[sign]\naudit = %s\n" % mode)
        d.write_config()
        self.addCleanup(d.close)
        d.start()
        return d

    def test_pipe_closed(self):
        for mode, want in (("required", 503), ("best-effort", 200)):
            with self.subTest(mode=mode):
                d = self.daemon(mode)
                self.assertSigned(d.sign("main", dict(CLAIMS)), "while stderr is read")
                d.cut()
                r = d.sign("main", dict(CLAIMS))
                if want == 503:
                    self.assertError(r, 503, "audit_unavailable")
                    self.assertNotIn(b'"token"', r.body)
                else:
                    self.assertSigned(r, "best-effort signs without its record")
                # a refusal stays what it is, record or not
                self.assertError(d.sign("main", {"sub": "x"}), 400, "aud_missing")
                self.assertIsNone(d.proc.poll(), "the daemon lives on")


def journal_fields(datagram):
    """The fields of one native journal protocol datagram (systemd.journal-fields(7)): KEY=value
    lines, or KEY, newline, a 64-bit little-endian length and the value (values with newlines)."""
    fields, i = {}, 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            k, n = line, int.from_bytes(datagram[nl + 1:nl + 9], "little")
            v, i = datagram[nl + 9:nl + 9 + n], nl + 9 + n + 1
        fields[k.decode()] = v.decode("utf-8")
    return fields


class JournalDaemon(harness.Daemon):
    """A Daemon in its own mount namespace, where /run/systemd/journal is a directory of the
    test's: the journal socket there is the test's, which reads what sd_journal_send() sends.
    JOURNAL_STREAM names the daemon's stderr (the log file), as under systemd."""

    def __init__(self, mode, **kw):
        super().__init__(**kw)
        self.mode = mode
        self.write_config()
        self.journal_dir = os.path.join(self.workdir, "journal")
        os.mkdir(self.journal_dir)
        self.journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.journal.bind(os.path.join(self.journal_dir, "socket"))
        self.journal.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        open(self.log_path, "ab").close()
        st = os.stat(self.log_path)
        self.env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)

    def config_text(self):
        return super().config_text().replace("[sign]\n", "[sign]\naudit = %s\n"
                                             % getattr(self, "mode", "best-effort"))

    def spawn(self):
        if not self.provisioned:
            self.provision()
        if self._notify is None:
            self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._notify.bind(self.notify_socket)
        script = ('mount -t tmpfs none /run && mkdir -p /run/systemd/journal && '
                  'mount --bind "$0" /run/systemd/journal && exec "$@"')
        self._logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", script, self.journal_dir, harness.tokensignd_path(),
             "-c", self.conf_path], env=dict(self.env, NOTIFY_SOCKET=self.notify_socket),
            stdin=subprocess.DEVNULL, stdout=self._logf, stderr=self._logf, cwd=self.workdir,
            preexec_fn=harness._die_with_parent)
        return self.proc

    def entries(self):
        """Every journal entry received so far (and not read before)."""
        out = []
        self.journal.setblocking(False)
        try:
            while True:
                out.append(journal_fields(self.journal.recv(1 << 20)))
        except BlockingIOError:
            pass
        return out

    def close(self):
        self.journal.close()
        super().close()


class Journal(harness.TestCase):
    """Under systemd the records are journal entries; a journal that does not take them is a
    failed record ([sign] audit = required: 503)."""

    def test_entries(self):
        d = JournalDaemon("best-effort")
        self.addCleanup(d.close)
        d.start()
        d.entries()
        jti = "j-" + secrets.token_hex(4)
        body = self.assertSigned(d.sign("main", dict(CLAIMS, jti=jti)))
        self.assertError(d.sign("main", {"aud": "api://nope", "jti": "r\nj"}), 400,
                         "aud_not_allowed")
        time.sleep(0.2)
        got = {e.get("MESSAGE_ID"): e for e in d.entries()}
        signed = got.get("4b9e2d7c1f0a4e6b8c3d5a7f9e1b2c4d")
        self.assertIsNotNone(signed, got)
        self.assertEqual((signed["TOKENSIGN_EVENT"], signed["TOKENSIGN_RESULT"],
                          signed["TOKENSIGN_JTI"], signed["TOKENSIGN_KID"],
                          signed["TOKENSIGN_CALLER_UID"]),
                         ("signed", "granted", jti, body["kid"], str(os.getuid())))
        # every field, as written without printf: names, numbers and the empty unit
        self.assertEqual((signed["PRIORITY"], signed["TOKENSIGN_ISSUER"], signed["TOKENSIGN_AUD"],
                          signed["TOKENSIGN_EXP"], signed["TOKENSIGN_CALLER_PID"],
                          signed["MESSAGE"]),
                         ("6", "main", '"%s"' % CLAIMS["aud"], str(body["exp"]), str(os.getpid()),
                          "issuer main: signed jti %s with key %s for uid %d"
                          % (jti, body["kid"], os.getuid())))
        self.assertIn("TOKENSIGN_CALLER_UNIT", signed)
        refused = got.get("9c3a5e7b2d4f4a6c8e1b3d5f7a9c2e4b")
        self.assertIsNotNone(refused, got)
        self.assertEqual((refused["TOKENSIGN_EVENT"], refused["TOKENSIGN_RESULT"],
                          refused["TOKENSIGN_REASON"], refused["TOKENSIGN_ISSUER"],
                          refused["TOKENSIGN_JTI"], refused["TOKENSIGN_AUD"],
                          refused["TOKENSIGN_CALLER_UID"], refused["TOKENSIGN_CALLER_PID"]),
                         ("refused", "refused", "aud_not_allowed", "main", "r\nj",
                          '"api://nope"', str(os.getuid()), str(os.getpid())))
        self.assertNotIn("TOKENSIGN_KID", refused)
        self.assertEqual(refused["PRIORITY"], "5")

    def test_journal_gone(self):
        """journald stopped: its socket file is still there, nobody receives (ECONNREFUSED)."""
        for mode, want in (("required", 503), ("best-effort", 200)):
            with self.subTest(mode=mode):
                d = JournalDaemon(mode)
                self.addCleanup(d.close)
                d.start()
                self.assertSigned(d.sign("main", dict(CLAIMS)))
                d.journal.close()
                r = d.sign("main", dict(CLAIMS))
                if want == 503:
                    self.assertError(r, 503, "audit_unavailable")
                else:
                    self.assertSigned(r)
                self.assertIn("cannot write an audit record", d.log())


STORM_SECONDS = 20
PIPELINED = 10  # 404s per connection, before its cut-off request
RATE, BURST, REPORT_S = 20, 100, 10  # daemon/ratelimit.h
SUPPRESSED = re.compile(r"http \(JWKS port\): (\d+) messages suppressed")


# Requests that make libmicrohttpd log a line: headers over the connection's 8 KiB (431), and
# (not always: only when it had read the piece before the close) a request cut off in its headers.
BAD = (b"GET /x HTTP/1.1\r\nHo", b"GET /x HTTP/1.1\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n")


def storm_worker(port, seconds, out, worker=0):
    """For seconds: connections of PIPELINED 404s each, then a request of BAD. Each connection
    comes from another loopback address (127.1.WORKER.N): the per-address connection cap
    (docs/operations.md, "Limits") would otherwise refuse most of a storm from one address
    before it reaches the log, and this test is about the log's own limit."""
    ask = b"GET /nope/.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n" * PIPELINED
    requests = cutoffs = errors = 0
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
        source = ("127.1.%d.%d" % (worker, n % 250 + 1), 0)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5,
                                          source_address=source) as s:
                s.sendall(ask)
                got = b""
                while got.count(b"HTTP/1.1 404") < PIPELINED:
                    b = s.recv(65536)
                    if not b:
                        break
                    got += b
                requests += got.count(b"HTTP/1.1 404")
                bad = cutoffs % 2
                s.sendall(BAD[bad])
                cutoffs += 1
                while bad and s.recv(65536):  # read the 431 to the end: the server closes
                    pass
        except OSError:
            errors += 1
    out.put((requests, cutoffs, errors))


class Storm(harness.TestCase):
    """Unauthenticated clients cannot flood the log, and the audit records of the tokens signed
    meanwhile are all there."""

    def test_jwks_storm(self):
        d = harness.Daemon()
        self.addCleanup(d.close)
        d.start()
        mark = len(d.log())
        out = multiprocessing.Queue()
        workers = [multiprocessing.Process(target=storm_worker,
                                           args=(d.jwks_port, STORM_SECONDS, out, w))
                   for w in range(3)]
        t0 = time.monotonic()
        for w in workers:
            w.start()
        jtis = []
        while any(w.is_alive() for w in workers):
            jti = "storm-" + secrets.token_hex(6)
            r = d.sign("main", dict(CLAIMS, jti=jti))
            self.assertSigned(r, "signing during the storm")
            jtis.append(jti)
        for w in workers:
            w.join()
        storm = time.monotonic() - t0
        requests = cutoffs = errors = 0
        for _ in workers:
            a, b, c = out.get(timeout=30)
            requests, cutoffs, errors = requests + a, cutoffs + b, errors + c
        # the count of the flood's end is reported within a report period or two
        deadline = time.monotonic() + 2 * REPORT_S + 5
        while time.monotonic() < deadline and not SUPPRESSED.search(d.log()[mark:]):
            time.sleep(0.5)
        time.sleep(REPORT_S + 1)
        elapsed = time.monotonic() - t0
        log = d.log()[mark:]
        lines = [ln for ln in log.splitlines() if not ln.startswith("{")]
        http = [ln for ln in lines if "http: " in ln]
        suppressed = sum(int(n) for n in SUPPRESSED.findall(log))
        info = "%d requests (%d cut off, %d failed) in %.0fs, %d log lines; first lines:\n%s" % (
            requests, cutoffs, errors, storm, len(lines), "\n".join(lines[:20]))
        print("\nstorm: " + info.split("; first")[0], file=sys.stderr)
        self.assertGreater(cutoffs, 1000, info)
        # the burst, the rate while the storm lasted, the reports, a few lines of our own
        self.assertLessEqual(len(lines), BURST + RATE * storm + elapsed / REPORT_S + 10, info)
        self.assertGreater(suppressed, 0, info)
        # the storm made more lines than the limit lets through: the limit was what held
        self.assertGreater(len(http) + suppressed, BURST + RATE * storm, info)
        signed = {r["jti"] for r in records(log, "signed")}
        self.assertEqual([j for j in jtis if j not in signed], [], "records missing")
        self.assertGreater(len(jtis), 50, info)
        self.assertStillSigns(d)


if __name__ == "__main__":
    harness.main()
