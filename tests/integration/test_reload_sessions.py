#!/usr/bin/python3
"""Reloads do not leak PKCS#11 sessions or helper processes (docs/design.md "Custody", C9, and
"Privilege separation": tokensignd loads no module; its keeper starts one management helper and
one signing helper per sign worker, and each helper holds one session, its login session, for
its whole life).

Every SIGHUP stops the scheduler thread and starts a new one (daemon/reload.c); a reload must
neither open a session that stays open nor restart a helper. tokensignd runs against SoftHSM
through p11shim (tests/shim/README.md), which every helper and every touch child loads, and
whose call log has one line per C_OpenSession and C_CloseSession with its result: the sessions
open are the successful opens less the successful closes.

- After 50 reloads the daemon's helpers hold exactly as many sessions as before them (one
  each), the helpers are the same processes, and the daemon signs before, during (a client
  signs all along) and after them.
- A reload whose new runtime cannot be built (no key can be made for a new issuer) leaves one
  scheduler running, on the old keys, no extra session and the same helpers.
- The old scheduler has stopped before the new runtime is built (two keyrings, each under its own
  lock, must never write to the token at once), and the new one starts after it: with the
  management helper stopped (SIGSTOP), nothing of a new runtime can be built, and meanwhile no
  scheduler thread runs.

Environment (tests/shim/meson.build): TOKENSIGND, P11PROBE, SOFTHSM_MODULE and P11SHIM (the
built shim module)."""

import json
import os
import re
import signal
import socket
import sys
import threading
import time

import harness

CLAIMS = {"sub": "user-42", "aud": "api://orders"}
RELOADS = 50
RELOAD_TIMEOUT = 30.0
SETTLE_TIMEOUT = 15.0
LOG_LINE = re.compile(r"^C_[A-Za-z]+ (CKR_[A-Z_]+|0x[0-9a-f]{8})$")


shim_daemon = harness.shim_daemon


def read_response(sock):
    """One HTTP/1.1 answer with a Content-Length body from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise harness.HarnessError("connection closed before the headers: %r" % data)
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
    if not m:
        raise harness.HarnessError("no Content-Length in %r" % head)
    while len(body) < int(m.group(1)):
        chunk = sock.recv(65536)
        if not chunk:
            raise harness.HarnessError("connection closed in the body")
        body += chunk
    return harness._parse_response(head + b"\r\n\r\n" + body)


class ReloadSessions(harness.TestCase):
    def setUp(self):
        self.d = shim_daemon()
        self.addCleanup(self.d.close)
        self.d.start()

    # -- what the shim saw --

    def calls(self):
        """Every line of the shim's call log so far, checked for its format."""
        with open(self.d.shim_log) as f:
            lines = f.read().splitlines()
        for line in lines:
            self.assertRegex(line, LOG_LINE, "malformed p11shim log line")
        return lines

    def open_sessions(self):
        """Successful C_OpenSession less successful C_CloseSession, over the whole log. The
        tokensign-hsm --touch-token children (hsm_resync) load the shim too; each closes the one
        session it opens, so a finished child adds nothing."""
        lines = self.calls()
        return lines.count("C_OpenSession CKR_OK") - lines.count("C_CloseSession CKR_OK")

    def settled_sessions(self, want):
        """The open-session count once it is want, or whatever it is after SETTLE_TIMEOUT: a
        touch child holds one briefly."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            n = self.open_sessions()
            if n == want or time.monotonic() > deadline:
                return n
            time.sleep(0.1)

    def threads(self):
        """[(tid, name)] of the daemon's threads."""
        return self.d.threads()

    def thread_names(self):
        return [name for _, name in self.threads()]

    def schedulers(self):
        return [tid for tid, name in self.threads() if name == "scheduler"]

    def helpers(self):
        """The daemon's helpers, checked for their number: one management helper, one signing
        helper per sign worker."""
        h = self.d.helpers()
        self.assertIsNotNone(h["keeper"], h)
        self.assertIsNotNone(h["manage"], h)
        self.assertEqual(len(h["sign"]), harness.SIGN_WORKERS, h)
        return h

    def wait_quiet(self, quiet=1.0, timeout=SETTLE_TIMEOUT):
        """Waits until the shim's call log has not grown for quiet seconds: the scheduler's
        pass is over and nothing asks the token anything."""
        deadline = time.monotonic() + timeout
        n, since = len(self.calls()), time.monotonic()
        while time.monotonic() - since < quiet:
            self.assertLess(time.monotonic(), deadline, "the token never went quiet")
            time.sleep(0.1)
            m = len(self.calls())
            if m != n:
                n, since = m, time.monotonic()

    # -- the daemon --

    def sign_on_every_worker(self):
        """One signature by each sign worker: the acceptor gives each new connection to the
        worker holding the fewest (daemon/http.c), so keep-alive connections held open together
        land on one worker each. From then on every worker has used a signing helper (each
        worker's own one when it is free, daemon/keys/hsmc.c), and a helper that signed has
        looked up the key in its own session."""
        conns = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                 for _ in range(harness.SIGN_WORKERS)]
        try:
            for c in conns:
                c.settimeout(harness.IO_TIMEOUT)
                c.connect(self.d.sign_socket)
            body = json.dumps({"claims": CLAIMS}).encode()
            req = (b"POST /v1/issuers/main/sign HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                   + body)
            for c in conns:
                c.sendall(req)
            for i, c in enumerate(conns):
                self.assertSigned(read_response(c), "warm-up signature %d" % i)
        finally:
            for c in conns:
                c.close()
        self.assertEqual(self.thread_names().count("sign-worker"), harness.SIGN_WORKERS,
                         "not every sign worker served a connection")

    def reload(self, done="reload: done"):
        """SIGHUP, then waits for one more log line containing done than before, and for the
        READY=1 that follows it. Reading the notify socket matters: the daemon's sd_notify()
        blocks once the socket's queue is full (net.unix.max_dgram_qlen, 10 by default), and
        each reload sends two datagrams (RELOADING=1, READY=1)."""
        before = self.d.log().count(done)
        self.d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while self.d.log().count(done) == before:
            if self.d.proc.poll() is not None:
                self.fail("tokensignd died during a reload (%r); log:\n%s"
                          % (self.d.proc.returncode, self.d.log()))
            if time.monotonic() > deadline:
                self.fail("no %r within %gs of SIGHUP; log:\n%s"
                          % (done, RELOAD_TIMEOUT, self.d.log()))
            time.sleep(0.02)
        self.d.wait_ready()

    def expected_sessions(self):
        # One per helper, whether it has signed or not: each logs in when it starts and keeps
        # that session for its life (daemon/hsm/helper.c). The management helper serves the
        # scheduler, runtime_new() on reload and every other token request but signatures;
        # the signing helpers serve the sign workers. tokensignd and the keeper load no module,
        # and a touch child closes its one session before it exits.
        return 1 + harness.SIGN_WORKERS

    def set_faults(self, *lines):
        harness.write_faults(self.d, *lines)

    # -- the tests --

    def test_01_fifty_reloads_leave_the_sessions_as_they_were(self):
        self.sign_on_every_worker()
        for _ in range(3):
            self.assertStillSigns(self.d, claims=CLAIMS)
        helpers = self.helpers()
        want = self.expected_sessions()
        baseline = self.settled_sessions(want)
        self.assertEqual(baseline, want, "sessions open before the reloads")

        failures, stop = [], threading.Event()

        def client():
            while not stop.is_set():
                try:
                    r = self.d.sign("main", dict(CLAIMS))
                    if r.status != 200:
                        failures.append(r)
                except Exception as e:  # noqa: BLE001 - reported below
                    failures.append(e)
                time.sleep(0.01)

        t = threading.Thread(target=client)
        t.start()
        try:
            for i in range(RELOADS):
                self.reload()
                self.assertStillSigns(self.d, claims=CLAIMS)
        finally:
            stop.set()
            t.join()
        self.assertEqual(failures, [], "signing failed during the reloads")
        self.assertNotIn("keys will not rotate", self.d.log())

        for _ in range(3):
            body = self.assertStillSigns(self.d, claims=CLAIMS)
        keys = {k["kid"]: k for k in self.d.jwks("main")["keys"]}
        self.assertTrue(harness.verify_es256(body["token"], keys[body["kid"]]), body)
        after = self.settled_sessions(want)
        sys.stderr.write("open PKCS#11 sessions: %d before %d reloads, %d after\n"
                         % (baseline, RELOADS, after))
        self.assertEqual(after, baseline,
                         "sessions open after %d reloads (before: %d)" % (RELOADS, baseline))
        self.assertEqual(self.helpers(), helpers, "a reload restarted a helper")
        self.assertNotIn("starting another", self.d.log())
        self.assertEqual(self.thread_names().count("scheduler"), 1)
        self.assertEqual(self.d.stop(), 0, self.d.log())
        self.assertNoSanitizerReport(self.d)

    def test_02_a_failed_reload_keeps_one_scheduler_and_no_extra_session(self):
        self.sign_on_every_worker()
        helpers = self.helpers()
        want = self.expected_sessions()
        self.assertEqual(self.settled_sessions(want), want, "sessions open before the reload")

        # A new issuer whose first keys cannot be made: runtime_new() fails after the old
        # scheduler stopped, and the old keyring gets a scheduler again.
        self.set_faults("C_GenerateKeyPair CKR_DEVICE_ERROR *")
        self.d.issuers["other"] = dict(harness.DEFAULT_ISSUER,
                                       iss="https://login.example.test/other")
        self.d.write_config()
        self.reload("the running configuration stays")
        self.assertNotIn("reload: done", self.d.log())
        self.assertNotIn("keys will not rotate", self.d.log())
        self.assertEqual(self.thread_names().count("scheduler"), 1, self.thread_names())
        self.assertStillSigns(self.d, claims=CLAIMS)
        self.assertError(self.d.sign("other", dict(CLAIMS)), 404, "unknown_issuer")
        self.assertEqual(self.settled_sessions(want), want, "sessions open after the reload")
        self.assertEqual(self.helpers(), helpers, "a failed reload restarted a helper")

        # The next reload, with the token healthy again, serves the new issuer.
        self.set_faults()
        self.reload()
        self.assertStillSigns(self.d, claims=CLAIMS)
        self.assertStillSigns(self.d, "other", claims=CLAIMS)
        self.assertEqual(self.thread_names().count("scheduler"), 1, self.thread_names())
        self.assertEqual(self.settled_sessions(want), want, "sessions open after the reloads")
        self.assertEqual(self.helpers(), helpers, "a reload restarted a helper")
        self.assertNotIn("starting another", self.d.log())
        self.assertEqual(self.d.stop(), 0, self.d.log())
        self.assertNoSanitizerReport(self.d)

    def test_03_the_old_scheduler_stops_before_the_new_runtime_is_built(self):
        # Two keyrings must never write to the token at once (daemon/reload.c). Every token
        # request of a reload and of a scheduler goes to the management helper, and every step
        # of runtime_new() needs it, beginning with the token's mechanisms (C_GetMechanismInfo,
        # algorithms_prepare in daemon/runtime.c). So with that helper stopped (SIGSTOP), a
        # reload can stop the old scheduler but build nothing: no scheduler thread may run
        # then. Once it goes on, the reload's first token call is C_GetMechanismInfo, and one
        # scheduler runs again, a new thread. Nothing signs here.
        helpers = self.helpers()
        want = self.expected_sessions()
        self.assertEqual(self.settled_sessions(want), want, "sessions open before the reload")
        # The first maintenance pass is over; the next is a rescan interval (30 s) away, so
        # the old scheduler sleeps, holding no request to the helper that is stopped next.
        self.wait_quiet()
        (old_scheduler,) = self.schedulers()
        before = len(self.calls())
        reloads = self.d.log().count("reload: done")
        os.kill(helpers["manage"], signal.SIGSTOP)
        try:
            self.d.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + RELOAD_TIMEOUT
            while self.schedulers():
                self.assertLess(time.monotonic(), deadline,
                                "the old scheduler did not stop: %r" % self.threads())
                time.sleep(0.02)
            # The reload now waits for the stopped helper; it stays that way.
            for _ in range(20):
                self.assertEqual(self.schedulers(), [], "a scheduler runs while the new "
                                 "runtime cannot have been built: %r" % self.threads())
                time.sleep(0.05)
            self.assertEqual(self.d.log().count("reload: done"), reloads,
                             "the reload finished without the management helper")
            self.assertEqual(len(self.calls()), before,
                             "a token call while the management helper was stopped")
        finally:
            os.kill(helpers["manage"], signal.SIGCONT)
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while self.d.log().count("reload: done") == reloads:
            self.assertLess(time.monotonic(), deadline, "no reload: done; log:\n" + self.d.log())
            time.sleep(0.02)
        self.d.wait_ready()
        self.assertEqual(self.settled_sessions(want), want, "sessions open after the reload")
        lines = self.calls()[before:]
        self.assertTrue(lines and lines[0].startswith("C_GetMechanismInfo "),
                        "the reload's first token call is not runtime_new()'s: %r" % lines)
        self.assertEqual(lines.count("C_OpenSession CKR_OK"), lines.count("C_CloseSession CKR_OK"),
                         "a session of the reload stayed open: %r" % lines)
        new_schedulers = self.schedulers()
        self.assertEqual(len(new_schedulers), 1, self.threads())
        self.assertNotEqual(new_schedulers, [old_scheduler], "the old scheduler still runs")
        self.assertEqual(self.helpers(), helpers, "a reload restarted a helper")
        self.assertStillSigns(self.d, claims=CLAIMS)


if __name__ == "__main__":
    harness.main()
