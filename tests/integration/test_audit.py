#!/usr/bin/python3
"""Audit that holds (issue 12, item 4), outside the journal (audit records are JSON lines on
stderr):

- One audit record per signing decision, granted and refused, at every stage (403, 413, 415,
  400, 503), with the caller, the issuer, what was known of kid, jti and aud, the result and the
  reason (the error code); nothing for requests that never reach an issuer (404, 405).
- [sign] audit = required: a token whose audit record cannot be written (stderr a pipe nobody
  reads any more) is a 503 audit_unavailable and no token; best-effort signs all the same. (An
  absent journal socket cannot be staged: sd_journal_send() reports success when the socket
  does not exist.)
- A storm of requests on the public JWKS port that make libmicrohttpd log (cut-off and
  malformed requests) among 404s: a bounded number of log lines, a "suppressed" count, and every
  audit record of the tokens signed meanwhile is there.

Environment: as the other shim tests (tests/shim/meson.build): TOKENSIGND, SOFTHSM_MODULE,
P11SHIM, PYTHONPATH."""

import json
import os
import secrets
import socket
import subprocess
import threading
import time

import harness

CLAIMS = {"sub": "user-42", "aud": "api://orders"}
SIGN = "/v1/issuers/main/sign"
NOBODY = 65534


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
        try:
            cls.d.start()
        except BaseException:
            cls.d.close()
            raise

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
                                     cwd=self.workdir)
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


if __name__ == "__main__":
    harness.main()
