#!/usr/bin/python3
"""Recovery from token errors SoftHSM never produces on its own (docs/design.md "Recovery from the
token", "Fail closed"; SPEC §4 503, §6): tokensignd runs against SoftHSM through the p11shim
fault-injecting module (tests/shim/README.md), and each test makes chosen PKCS#11 calls fail.

- A dropped session is reopened, a lost login is restored with one C_Login, a stale key handle is
  looked up again: the request still gets a token that verifies against the published JWKS.
- Each repair is tried once: a fault that persists becomes 503 hsm_unavailable within a bounded
  number of calls, with one log line naming the call and the CKR_* code, and the daemon signs
  again as soon as the token does.
- A PIN error is never retried (a wrong PIN must not lock the token) and never logs the PIN: at
  start, after a lost login (a request's, or the watchdog probe's) the daemon exits with status
  77 (EXIT_PIN_REFUSED, tokensignd(8) EXIT STATUS) after that one C_Login. Only
  CKR_USER_PIN_NOT_INITIALIZED (the token did not check the PIN) is asked once more.
- /readyz follows the token; /healthz does not.
- At first start a key that cannot be generated or recorded stops the daemon and leaves nothing
  in the token. A new pair that reads back wrong is destroyed and made again (three tries).
- A failing `tokensign-hsm --touch-token` child is logged once per episode; signing goes on.
- A key pair that looks incomplete (SoftHSM's store can show a process another's fresh private
  key without its attributes, for good) is read again by a new management helper before it is
  quarantined.

Environment (tests/shim/meson.build): TOKENSIGND, P11PROBE, SOFTHSM_MODULE and P11SHIM (the
built shim module)."""

import json
import os
import re
import subprocess
import threading
import time
import unittest

import jwt

import harness
import tokencheck

ISS = harness.DEFAULT_ISSUER["iss"]
CLAIMS = {"sub": "user-42", "aud": "api://orders"}
EXIT_TIMEOUT = 20.0
# tokensignd(8), EXIT STATUS: the token refused the PIN. The unit's RestartPreventExitStatus=.
EXIT_PIN_REFUSED = 77
# The attributes hsm_check_private() reads in one C_GetAttributeValue call: the key type and the
# 11 SPEC §6 rules (daemon/hsm_keys.c private_rules).
PRIVATE_CHECK_ATTRS = 12
LOG_LINE = re.compile(r"^C_[A-Za-z]+ (CKR_[A-Z_]+|0x[0-9a-f]{8})$")


def real_module():
    return os.environ["SOFTHSM_MODULE"]


def shim_daemon(cls=harness.Daemon):
    """A harness.Daemon (not started) that loads its token through p11shim. Its fault file and
    call log are d.faults and d.shim_log."""
    return harness.shim_daemon(cls=cls)


def token_objects(d):
    """The token's objects, read with the real module (the shim and its faults stay out)."""
    env = dict(d.env)
    for k in ("P11SHIM_FAULTS", "P11SHIM_LOG"):
        env.pop(k, None)
    return harness.p11probe(real_module(), d.token_label, d.pin_file, env)


def count_class(objs, cls):
    return len([o for o in objs if o["class"] == cls])


class RecoveryCase(harness.TestCase):
    def setUp(self):
        self.d = shim_daemon()
        self.addCleanup(self.d.close)

    # -- the shim --

    def set_faults(self, *lines):
        harness.write_faults(self.d, *lines)

    def clear_faults(self):
        self.set_faults()

    def faults_text(self):
        with open(self.d.faults) as f:
            return f.read()

    def calls(self):
        """Every line of the shim's call log so far, checked for its format."""
        try:
            with open(self.d.shim_log) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        for line in lines:
            self.assertRegex(line, LOG_LINE, "malformed p11shim log line")
        return lines

    def calls_during(self, fn, *args, **kw):
        """(fn's result, the shim log lines written while it ran)."""
        before = len(self.calls())
        result = fn(*args, **kw)
        return result, self.calls()[before:]

    @staticmethod
    def count(lines, fn, rv=None):
        return len([line for line in lines
                    if line.split()[0] == fn and (rv is None or line.split()[1] == rv)])

    # -- the daemon --

    def start(self):
        self.d.start()
        return self.d

    def sign(self):
        return self.d.sign("main", dict(CLAIMS))

    def verify(self, body):
        """body is a 200 sign answer: its token verifies against the live JWKS (PyJWT) with
        the kid the answer names, and the daemon's claims."""
        token = body["token"]
        key = jwt.PyJWKClient(self.d.jwks_url("main"), cache_keys=False) \
            .get_signing_key_from_jwt(token)
        self.assertEqual(jwt.get_unverified_header(token)["kid"], body["kid"])
        claims = jwt.decode(token, key.key, algorithms=["ES256"], audience="api://orders",
                            issuer=ISS)
        self.assertEqual(claims["sub"], CLAIMS["sub"])
        return claims

    def assertSignsAndVerifies(self, r, msg=None):
        body = self.assertSigned(r, msg)
        self.verify(body)
        return body

    def assertHsmUnavailable(self, r, msg=None):
        return self.assertError(r, 503, "hsm_unavailable", msg)

    def daemon_log_lines(self):
        return self.d.log().splitlines()

    def assertLogged(self, *words):
        """Some line of the daemon's log names all of words."""
        lines = self.daemon_log_lines()
        self.assertTrue(any(all(w in line for w in words) for line in lines),
                        "no daemon log line names %r; log:\n%s" % (words, self.d.log()))

    def spawn_expect_exit(self):
        """Starts the daemon and waits for it to give up; returns its exit status. Fails if it
        comes up instead."""
        self.d.spawn()
        try:
            rc = self.d.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.d.kill()
            self.fail("tokensignd did not exit within %gs; log:\n%s"
                      % (EXIT_TIMEOUT, self.d.log()))
        self.d.stop()
        return rc


class SessionAndLoginRecovery(RecoveryCase):
    """One fault, one repair, the request still signs (design.md: "a closed or invalid session
    is reopened; CKR_USER_NOT_LOGGED_IN triggers one re-login; a stale key handle is looked up
    again by CKA_ID")."""

    def check_session_reopened(self, ckr):
        self.start()
        self.assertSignsAndVerifies(self.sign(), "before the fault")
        self.set_faults("C_Sign %s 1" % ckr)
        r, calls = self.calls_during(self.sign)
        self.assertSignsAndVerifies(r, "C_Sign %s once" % ckr)
        fault = "C_Sign " + ckr
        self.assertIn(fault, calls, "the fault was not injected")
        self.assertIn("C_OpenSession CKR_OK", calls[calls.index(fault):],
                      "no session was opened after the fault: %r" % calls)
        self.assertEqual(self.count(calls, "C_Sign", "CKR_OK"), 1, calls)
        self.assertRegex(self.faults_text(), r"C_Sign %s 0" % ckr)
        self.assertSignsAndVerifies(self.sign(), "the request after")

    def test_01_session_handle_invalid_once_reopens(self):
        self.check_session_reopened("CKR_SESSION_HANDLE_INVALID")

    def test_02_session_closed_once_reopens(self):
        self.check_session_reopened("CKR_SESSION_CLOSED")

    def test_03_logout_relogs_in_once(self):
        self.start()
        self.assertSignsAndVerifies(self.sign(), "before the fault")
        logins_before = self.count(self.calls(), "C_Login")
        self.set_faults("C_Sign LOGOUT 1")
        r, calls = self.calls_during(self.sign)
        self.assertSignsAndVerifies(r, "after a real logout in C_Sign")
        self.assertIn("C_Sign CKR_USER_NOT_LOGGED_IN", calls, "the fault was not injected")
        self.assertEqual(self.count(self.calls(), "C_Login"), logins_before + 1,
                         "exactly one more C_Login: %r" % calls)
        self.assertEqual(self.count(calls, "C_Login", "CKR_OK"), 1, calls)
        # the login is back for good: the next request needs no C_Login
        r, calls = self.calls_during(self.sign)
        self.assertSignsAndVerifies(r, "the request after")
        self.assertEqual(self.count(calls, "C_Login"), 0, calls)

    def test_04_stale_key_handle_is_looked_up_again(self):
        self.start()
        first = self.assertSignsAndVerifies(self.sign(), "before the fault")
        self.set_faults("C_SignInit CKR_KEY_HANDLE_INVALID 1")
        r, calls = self.calls_during(self.sign)
        body = self.assertSignsAndVerifies(r, "C_SignInit CKR_KEY_HANDLE_INVALID once")
        self.assertEqual(body["kid"], first["kid"], "the same key, found again")
        i = calls.index("C_SignInit CKR_KEY_HANDLE_INVALID")
        self.assertIn("C_FindObjectsInit CKR_OK", calls[i:], "no lookup after the fault")
        self.assertEqual(self.count(calls, "C_Sign"), 1, calls)
        self.assertSignsAndVerifies(self.sign(), "the request after")


class SessionCopies(RecoveryCase):
    """[hsm] session-copies = yes (docs/performance.md): each signing helper signs with its own
    session copy of the key. The sign socket's acceptor gives a lone connection to the first
    worker, so these one-connection requests all run in one worker, and so in its signing
    helper's one session."""

    def setUp(self):
        self.d = shim_daemon(harness.CopiesDaemon)
        self.addCleanup(self.d.close)

    def test_copy_made_once_per_session(self):
        self.start()
        r, calls = self.calls_during(lambda: [self.sign() for _ in range(10)])
        for x in r:
            self.assertSignsAndVerifies(x)
        # One copy per signing helper at most (each has its own session), not one per request.
        self.assertGreaterEqual(self.count(calls, "C_CopyObject", "CKR_OK"), 1, calls)
        self.assertLessEqual(self.count(calls, "C_CopyObject"), harness.SIGN_WORKERS, calls)
        self.assertNotIn("does not copy", self.d.log())

    def test_copy_refused_signs_with_the_token_key(self):
        self.set_faults("C_CopyObject CKR_ACTION_PROHIBITED *")
        self.start()
        r, calls = self.calls_during(lambda: [self.sign() for _ in range(10)])
        for x in r:
            self.assertSignsAndVerifies(x)
        # Asked once per session, not per request, and said in the log.
        self.assertLessEqual(self.count(calls, "C_CopyObject"), harness.SIGN_WORKERS, calls)
        self.assertLogged("does not copy", "CKR_ACTION_PROHIBITED")

    def test_unsafe_copy_is_destroyed_and_never_signs(self):
        # A token that weakened a copy: p11shim flips a bit of the attributes read back (the
        # first is CKA_TOKEN), so the copy looks like a token object. The daemon reads the
        # copy's five attributes in one call, and no other read asks for five.
        self.start()
        self.set_faults("C_GetAttributeValue:5 CORRUPT 1")
        r, calls = self.calls_during(self.sign)
        self.assertRegex(self.faults_text(), r"C_GetAttributeValue:5 CORRUPT 0")
        self.assertSignsAndVerifies(r, "the token key signs instead")
        i = calls.index("C_CopyObject CKR_OK")
        self.assertIn("C_DestroyObject CKR_OK", calls[i:], calls)
        self.assertLogged("session copy", "not private, sensitive and unextractable")

    def test_stale_copy_is_made_again(self):
        self.start()
        first = self.assertSignsAndVerifies(self.sign(), "before the fault")
        self.set_faults("C_SignInit CKR_KEY_HANDLE_INVALID 1")
        r, calls = self.calls_during(self.sign)
        body = self.assertSignsAndVerifies(r, "C_SignInit CKR_KEY_HANDLE_INVALID once")
        self.assertEqual(body["kid"], first["kid"])
        i = calls.index("C_SignInit CKR_KEY_HANDLE_INVALID")
        self.assertIn("C_CopyObject CKR_OK", calls[i:], "no new copy after the fault")

    def test_logout_drops_the_copies(self):
        self.start()
        self.assertSignsAndVerifies(self.sign(), "before the fault")
        self.set_faults("C_Sign LOGOUT 1")
        r, calls = self.calls_during(self.sign)
        self.assertSignsAndVerifies(r, "after a real logout in C_Sign")
        i = calls.index("C_Sign CKR_USER_NOT_LOGGED_IN")
        self.assertIn("C_Login CKR_OK", calls[i:])
        # A logout destroyed the private session objects and made the token key's handle
        # stale: the key is found again and copied anew, and the next requests use the copy.
        j = calls.index("C_Login CKR_OK", i)
        self.assertIn("C_CopyObject CKR_OK", calls[j:], calls)
        # The lost copies are forgotten, never destroyed by their stale handles: a token may
        # have given such a handle to a new object already.
        self.assertEqual(self.count(calls[j:], "C_DestroyObject"), 0, calls)
        self.assertSignsAndVerifies(self.sign(), "the request after")
        self.assertNotIn("does not copy", self.d.log())

    def test_reopened_session_gets_a_new_copy(self):
        self.start()
        self.assertSignsAndVerifies(self.sign(), "before the fault")
        self.set_faults("C_Sign CKR_SESSION_CLOSED 1")
        r, calls = self.calls_during(self.sign)
        self.assertSignsAndVerifies(r, "C_Sign CKR_SESSION_CLOSED once")
        i = calls.index("C_Sign CKR_SESSION_CLOSED")
        j = calls.index("C_OpenSession CKR_OK", i)
        self.assertIn("C_CopyObject CKR_OK", calls[j:], calls)


class FailClosed(RecoveryCase):
    """What cannot be repaired becomes 503 hsm_unavailable for that request, logged with the
    call and the CKR_* code, and nothing more (design.md "Recovery from the token")."""

    def test_05_device_error_is_503_then_recovers(self):
        self.start()
        self.assertSignsAndVerifies(self.sign(), "before the fault")
        self.set_faults("C_Sign CKR_DEVICE_ERROR 1")
        r, calls = self.calls_during(self.sign)
        self.assertHsmUnavailable(r, "C_Sign CKR_DEVICE_ERROR")
        self.assertEqual(calls.count("C_Sign CKR_DEVICE_ERROR"), 1, calls)
        self.assertEqual(self.count(calls, "C_Sign"), 1, "a device error is not retried")
        self.assertLogged("C_Sign", "CKR_DEVICE_ERROR")
        self.assertSignsAndVerifies(self.sign(), "the request after")

    def test_05b_other_token_errors_are_503_then_recover(self):
        self.start()
        for ckr in ("CKR_DEVICE_REMOVED", "CKR_DEVICE_MEMORY", "CKR_TOKEN_NOT_PRESENT",
                    "CKR_GENERAL_ERROR"):
            with self.subTest(ckr=ckr):
                self.set_faults("C_Sign %s 1" % ckr)
                r, calls = self.calls_during(self.sign)
                self.assertHsmUnavailable(r, "C_Sign %s" % ckr)
                self.assertIn("C_Sign " + ckr, calls)
                self.assertLogged("C_Sign", ckr)
                self.assertSignsAndVerifies(self.sign(), "the request after %s" % ckr)

    def test_06_persistent_session_error_is_bounded(self):
        """A signing helper holds one session, its login session: a session the token drops
        takes the login and the private key handles with it (closing a process's last session
        logs it out). So one repair of a dropped session is a reopen, then a re-login and a
        lookup of the key, and the lookup's retry may meet the fault again and reopen once
        more: per request at most two C_Sign, one reopen per dropped session, at most two
        logins, and then 503, not a loop. The helper is not restarted for a token error."""
        self.start()
        self.assertSignsAndVerifies(self.sign(), "before the fault")
        helpers = self.d.helpers()
        self.set_faults("C_Sign CKR_SESSION_HANDLE_INVALID *")
        for attempt in range(2):
            r, calls = self.calls_during(self.sign)
            self.assertHsmUnavailable(r, "C_Sign CKR_SESSION_HANDLE_INVALID forever")
            n = self.count(calls, "C_Sign")
            self.assertGreaterEqual(n, 1, calls)
            self.assertLessEqual(n, 2, "at most one retry per request: %r" % calls)
            after = calls[calls.index("C_Sign CKR_SESSION_HANDLE_INVALID"):]
            dropped = self.count(after, "C_Sign", "CKR_SESSION_HANDLE_INVALID")
            self.assertLessEqual(self.count(after, "C_OpenSession"), dropped,
                                 "one reopen per dropped session: %r" % calls)
            # (one for the helper's lookup of a key it forgot after the last failure, one
            # for the lookup after the stale handle)
            self.assertLessEqual(self.count(calls, "C_Login"), 2, calls)
        self.assertEqual(self.d.helpers(), helpers, "a token error restarted a helper")
        self.assertLogged("C_Sign", "CKR_SESSION_HANDLE_INVALID")
        self.clear_faults()
        self.assertSignsAndVerifies(self.sign(), "after the fault cleared")

    def assertExitsPinRefused(self, before, why):
        """The daemon exits by itself with EXIT_PIN_REFUSED, and of the shim log lines after
        the first `before` exactly one is a C_Login (refused)."""
        try:
            rc = self.d.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail("%s: tokensignd still runs %gs after the token refused the PIN; log:\n%s"
                      % (why, EXIT_TIMEOUT, self.d.log()))
        self.d.stop()
        calls = self.calls()[before:]
        self.assertEqual(rc, EXIT_PIN_REFUSED, "%s: exit status; log:\n%s" % (why, self.d.log()))
        self.assertEqual(self.count(calls, "C_Login"), 1,
                         "%s: one C_Login, never a second: %r" % (why, calls))
        self.assertIn("C_Login CKR_PIN_INCORRECT", calls)
        self.assertLogged("the token refused the PIN", "CKR_PIN_INCORRECT", "77")
        self.assertNotIn(self.d.pin, self.d.log())

    def test_08_lost_login_with_wrong_pin_is_tried_once(self):
        self.start()
        self.assertSignsAndVerifies(self.sign(), "before the fault")
        before = len(self.calls())
        self.set_faults("C_Sign LOGOUT *", "C_Login CKR_PIN_INCORRECT *")
        try:
            r = self.sign()
        except (OSError, harness.HarnessError):
            # The refusal shuts the daemon down at once, which can close this very
            # connection before its 503 is sent (the shutdown does not drain requests).
            r = None
        if r is not None:
            self.assertHsmUnavailable(r, "logged out, PIN refused")
        self.assertExitsPinRefused(before, "a request's lost login")

    def test_08c_watchdog_probe_with_wrong_pin_is_tried_once(self):
        """The watchdog's probe of the token finds the login lost and logs in again: refused,
        the daemon exits with EXIT_PIN_REFUSED instead of withholding the heartbeat until
        systemd restarts it into another C_Login with the same PIN."""
        self.d.env["WATCHDOG_USEC"] = "400000"
        self.start()
        self.assertSignsAndVerifies(self.sign(), "before the fault")
        before = len(self.calls())
        self.set_faults("C_GetSessionInfo CKR_USER_NOT_LOGGED_IN *",
                        "C_Login CKR_PIN_INCORRECT *")
        self.assertExitsPinRefused(before, "the watchdog probe's lost login")

    def test_08b_persistent_logout_is_bounded(self):
        """Every C_Sign logs the token out: the request fails closed after a bounded number
        of logins and signs, instead of looping login -> sign -> logout."""
        self.start()
        self.assertSignsAndVerifies(self.sign(), "before the fault")
        self.set_faults("C_Sign LOGOUT *")
        r, calls = self.calls_during(self.sign)
        self.assertHsmUnavailable(r, "C_Sign LOGOUT forever")
        self.assertGreaterEqual(self.count(calls, "C_Login"), 1, calls)
        # one re-login per attempt; hsm_sign() makes a second attempt after the key lookup
        self.assertLessEqual(self.count(calls, "C_Login"), 2, calls)
        self.assertLessEqual(self.count(calls, "C_Sign"), 2, calls)
        self.clear_faults()
        self.assertSignsAndVerifies(self.sign(), "after the fault cleared")
        # A token that keeps saying "not logged in" while C_Login says "already logged in"
        # (no real logout, so the key handle stays valid): one re-login, one retry, 503.
        self.set_faults("C_Sign CKR_USER_NOT_LOGGED_IN *")
        r, calls = self.calls_during(self.sign)
        self.assertHsmUnavailable(r, "C_Sign CKR_USER_NOT_LOGGED_IN forever")
        self.assertEqual(self.count(calls, "C_Login"), 1, calls)
        self.assertEqual(self.count(calls, "C_Sign"), 2, calls)
        self.assertLogged("C_Sign", "CKR_USER_NOT_LOGGED_IN")
        self.clear_faults()
        self.assertSignsAndVerifies(self.sign(), "after the fault cleared")

    def test_09_readyz_follows_the_token_healthz_does_not(self):
        self.start()
        for path in ("/healthz", "/readyz"):
            r = self.d.unix_request("GET", path)
            self.assertEqual(r.status, 200, r)
        self.set_faults("C_GetSessionInfo CKR_DEVICE_REMOVED *")
        r, calls = self.calls_during(self.d.unix_request, "GET", "/readyz")
        self.assertEqual(r.status, 503, r)
        body = r.json()
        self.assertEqual(body.get("status"), "not_ready", r)
        self.assertIn("C_GetSessionInfo CKR_DEVICE_REMOVED", calls)
        r = self.d.unix_request("GET", "/healthz")
        self.assertEqual((r.status, r.json()), (200, {"status": "ok"}), r)
        self.clear_faults()
        r = self.d.unix_request("GET", "/readyz")
        self.assertEqual((r.status, r.json()), (200, {"status": "ready"}), r)
        # The session answers but the token does not (SoftHSM, once it has lost the token's
        # directory, still keeps the session): not ready either.
        self.set_faults("C_GetTokenInfo CKR_GENERAL_ERROR *")
        r, calls = self.calls_during(self.d.unix_request, "GET", "/readyz")
        self.assertEqual((r.status, r.json().get("status")), (503, "not_ready"), r)
        self.assertIn("C_GetTokenInfo CKR_GENERAL_ERROR", calls)
        self.clear_faults()
        r = self.d.unix_request("GET", "/readyz")
        self.assertEqual((r.status, r.json()), (200, {"status": "ready"}), r)
        r = self.d.unix_request("GET", "/healthz")
        self.assertEqual((r.status, r.json()), (200, {"status": "ok"}), r)


class StartUp(RecoveryCase):
    """Faults before the daemon is up: it refuses to start and leaves the token clean."""

    def test_07_wrong_pin_at_start_is_never_retried(self):
        self.set_faults("C_Login CKR_PIN_INCORRECT *")
        rc = self.spawn_expect_exit()
        self.assertEqual(rc, EXIT_PIN_REFUSED, "tokensignd must exit with the status that "
                         "systemd does not restart; log:\n" + self.d.log())
        calls = self.calls()
        self.assertEqual(self.count(calls, "C_Login"), 1, "a PIN error is never retried: %r"
                         % calls)
        self.assertLogged("C_Login", "CKR_PIN_INCORRECT")
        with open(self.d.pin_file) as f:
            pin = f.read().strip()
        self.assertTrue(pin)
        self.assertNotIn(pin, self.d.log(), "the daemon logged the PIN")
        self.assertNotIn(pin, "\n".join(calls))

    def test_07b_every_pin_refusal_is_final_other_login_errors_are_not(self):
        """Each way a token refuses a PIN exits with EXIT_PIN_REFUSED after one C_Login; a
        device error at login is an ordinary failure (1), which systemd may restart."""
        for ckr, want in (("CKR_PIN_LOCKED", EXIT_PIN_REFUSED),
                          ("CKR_PIN_EXPIRED", EXIT_PIN_REFUSED),
                          ("CKR_PIN_INVALID", EXIT_PIN_REFUSED),
                          ("CKR_PIN_LEN_RANGE", EXIT_PIN_REFUSED),
                          ("CKR_USER_PIN_NOT_INITIALIZED", EXIT_PIN_REFUSED),
                          ("CKR_DEVICE_ERROR", 1)):
            with self.subTest(ckr=ckr):
                self.set_faults("C_Login %s *" % ckr)
                before = len(self.calls())
                rc = self.spawn_expect_exit()
                calls = self.calls()[before:]
                self.assertEqual(rc, want, "%s: log:\n%s" % (ckr, self.d.log()))
                # CKR_USER_PIN_NOT_INITIALIZED: the token did not check the PIN; asked once
                # more (test_07c), then final.
                n = 2 if ckr == "CKR_USER_PIN_NOT_INITIALIZED" else 1
                self.assertEqual(calls.count("C_Login " + ckr), n, calls)
                self.assertEqual(self.count(calls, "C_Login"), n, calls)

    def test_07c_pin_not_initialized_once_is_asked_again(self):
        """SoftHSM answers CKR_USER_PIN_NOT_INITIALIZED while another process rewrites the
        token's file (two instances making their first keys at once: test_instances saw one
        exit 77 for it). The token did not check the PIN, so one more C_Login a moment later
        is safe, and the daemon starts."""
        self.set_faults("C_Login CKR_USER_PIN_NOT_INITIALIZED 1")
        self.start()
        self.assertIn("CKR_USER_PIN_NOT_INITIALIZED 0", self.faults_text())
        calls = self.calls()
        self.assertEqual(calls.count("C_Login CKR_USER_PIN_NOT_INITIALIZED"), 1, calls)
        self.assertSignsAndVerifies(self.sign(), "after a login asked twice")

    def test_10_keygen_failure_at_first_start(self):
        self.set_faults("C_GenerateKeyPair CKR_DEVICE_MEMORY *")
        rc = self.spawn_expect_exit()
        self.assertGreater(rc, 0, "log:\n" + self.d.log())
        self.assertIn("C_GenerateKeyPair CKR_DEVICE_MEMORY", self.calls())
        self.assertLogged("issuer main", "CKR_DEVICE_MEMORY")
        objs = token_objects(self.d)
        self.assertEqual(objs, [], "the token must hold no key and no record")

    def test_11_record_failure_destroys_the_new_pair(self):
        self.set_faults("C_CreateObject CKR_DEVICE_MEMORY 1")
        rc = self.spawn_expect_exit()
        self.assertGreater(rc, 0, "log:\n" + self.d.log())
        calls = self.calls()
        self.assertIn("C_GenerateKeyPair CKR_OK", calls, "the pair was generated")
        i = calls.index("C_CreateObject CKR_DEVICE_MEMORY")
        self.assertEqual(calls[i:].count("C_DestroyObject CKR_OK"), 2,
                         "both halves destroyed: %r" % calls[i:])
        self.assertLogged("issuer main", "CKR_DEVICE_MEMORY")
        objs = token_objects(self.d)
        self.assertEqual(count_class(objs, "private_key"), 0, objs)
        self.assertEqual(count_class(objs, "public_key"), 0, objs)
        self.assertEqual(count_class(objs, "data"), 0, objs)
        # the fault is spent: the next start makes exactly one key
        self.assertRegex(self.faults_text(), r"C_CreateObject CKR_DEVICE_MEMORY 0")
        self.start()
        body = self.assertSignsAndVerifies(self.sign(), "after the retry start")
        objs = token_objects(self.d)
        self.assertEqual(count_class(objs, "private_key"), harness.KEYS_AT_START, objs)
        self.assertEqual(count_class(objs, "public_key"), harness.KEYS_AT_START, objs)
        records = [json.loads(o["value"]) for o in objs if o["class"] == "data"]
        self.assertEqual(len(records), harness.KEYS_AT_START, objs)
        self.assertIn(body["kid"], [rec["kid"] for rec in records])


    def test_11b_spoiled_new_pair_is_replaced(self):
        """A fresh pair that reads back wrong (SoftHSM can hand one back when another process
        writes the token at that moment) is destroyed and another one is generated."""
        self.set_faults("C_GetAttributeValue:%d CORRUPT 1" % PRIVATE_CHECK_ATTRS)
        self.start()
        self.assertRegex(self.faults_text(), r"CORRUPT 0", "the check never read the pair")
        self.assertLogged("issuer main", "failed its check and was destroyed",
                          "generating another")
        self.assertSignsAndVerifies(self.sign(), "with the second pair")
        objs = token_objects(self.d)
        for cls in ("private_key", "public_key", "data"):
            self.assertEqual(count_class(objs, cls), harness.KEYS_AT_START, objs)

    def test_11c_three_spoiled_pairs_stop_the_first_start(self):
        self.set_faults("C_GetAttributeValue:%d CORRUPT 3" % PRIVATE_CHECK_ATTRS)
        rc = self.spawn_expect_exit()
        self.assertGreater(rc, 0, "log:\n" + self.d.log())
        self.assertRegex(self.faults_text(), r"CORRUPT 0")
        self.assertEqual(self.d.log().count("generating another"), 2, self.d.log())
        self.assertLogged("issuer main has no key and none could be made")
        self.assertEqual(token_objects(self.d), [], "the spoiled pairs are destroyed")


class Concurrency(RecoveryCase):
    def test_12_parallel_requests_share_a_fault_budget(self):
        """Five C_Sign device errors among 24 concurrent requests: exactly five get 503, the
        rest sign. The requests are spread over the signing helpers, each a process with its
        own copy of the shim, so this shows that the shim counts exactly across processes
        (tests/shim/README.md, "Threads and processes") and that each helper's one session
        survives a failure in it or in another helper: no session is reopened, no login
        repeated, no helper restarted."""
        self.start()
        self.assertSignsAndVerifies(self.sign(), "before the fault")
        helpers = self.d.helpers()
        self.assertEqual(len(helpers["sign"]), harness.SIGN_WORKERS, helpers)
        served = self.d.helper_stat("voluntary_ctxt_switches")
        self.set_faults("C_Sign CKR_DEVICE_ERROR 5")
        results = [None] * 24

        def worker(i):
            try:
                results[i] = self.sign()
            except Exception as e:  # noqa: BLE001 - reported below
                results[i] = e

        before = len(self.calls())
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(results))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        calls = self.calls()[before:]
        statuses = sorted(getattr(r, "status", repr(r)) for r in results)
        self.assertEqual(statuses, [200] * 19 + [503] * 5, results)
        for r in results:
            if r.status == 200:
                self.verify(r.json())
            else:
                self.assertHsmUnavailable(r)
        self.assertEqual(calls.count("C_Sign CKR_DEVICE_ERROR"), 5, calls)
        self.assertEqual(calls.count("C_Sign CKR_OK"), 19, calls)
        self.assertRegex(self.faults_text(), r"C_Sign CKR_DEVICE_ERROR 0")
        self.assertEqual(self.count(calls, "C_OpenSession"), 0, calls)
        self.assertEqual(self.count(calls, "C_Login"), 0, calls)
        self.assertEqual(self.d.helpers(), helpers, "a token error restarted a helper")
        # Every signing helper served some of them: the budget was one across processes.
        grew = [pid for pid, n in self.d.helper_stat("voluntary_ctxt_switches").items()
                if n > served[pid]]
        self.assertEqual(sorted(grew), helpers["sign"], "helpers that served a request")
        self.assertSignsAndVerifies(self.sign(), "after")

    def test_13_corrupt_signature_never_verifies(self):
        """CORRUPT flips a bit of the token's signature. The daemon has no signature self-check
        yet, so today it answers 200 with a token that must not verify; once it checks, the
        answer must be 503 hsm_unavailable. Either way no bad token verifies."""
        self.start()
        self.assertSignsAndVerifies(self.sign(), "before the fault")
        self.set_faults("C_Sign CORRUPT 1")
        r = self.sign()
        if r.status == 200:
            body = self.assertSigned(r)
            jwk = [k for k in self.d.jwks("main")["keys"] if k["kid"] == body["kid"]][0]
            self.assertFalse(harness.verify_es256(body["token"], jwk),
                             "CORRUPT did not corrupt the signature")
            with self.assertRaises(jwt.InvalidSignatureError):
                self.verify(body)
        else:
            self.assertHsmUnavailable(r, "C_Sign CORRUPT")
        self.assertRegex(self.faults_text(), r"C_Sign CORRUPT 0")
        self.assertSignsAndVerifies(self.sign(), "the request after")


class StartupSessionLoss(RecoveryCase):
    """A session error on the login session while the keys are read at start-up. Closing the
    daemon's only session logs the token out; the reopened session would see no private
    records and the issuer would look empty, so a second key, active at once and never
    published, would replace the real one (SPEC §6). Every lookup of private objects now
    checks the login first (hsm_require_login)."""

    def setUp(self):
        super().setUp()
        self.start()
        self.old = self.assertSigned(self.sign())["kid"]
        self.d.stop()
        self.set_faults("C_FindObjectsInit CKR_SESSION_HANDLE_INVALID 1")
        self.d.spawn()
        try:
            self.d.wait_ready()
            self.came_up = True
        except harness.HarnessError:
            self.came_up = False  # failing closed would be fine
        self.assertRegex(self.faults_text(), r"C_FindObjectsInit CKR_SESSION_HANDLE_INVALID 0")
        self.objs = token_objects(self.d)
        self.new = self.sign() if self.came_up else None
        self.jwks = self.d.jwks("main") if self.came_up else None

    def test_session_loss_at_start_makes_no_new_key(self):
        self.assertEqual(count_class(self.objs, "private_key"), harness.KEYS_AT_START, self.objs)
        if self.came_up:
            self.assertEqual(self.new.json()["kid"], self.old)
            self.assertIn(self.old, [k["kid"] for k in self.jwks["keys"]])


class LostLoginRepaired(RecoveryCase):
    """Once the token has lost its login and the one re-login of that request failed, a later
    request must log in again: C_SignInit reports the private key handle stale (SoftHSM drops
    private handles at logout), and the lookup by CKA_ID must log in before it searches, or it
    finds no key and every request stays 503."""

    def setUp(self):
        super().setUp()
        self.start()
        self.assertSigned(self.sign())
        self.set_faults("C_Sign LOGOUT 1", "C_Login CKR_DEVICE_ERROR 1")
        r, calls = self.calls_during(self.sign)
        self.assertHsmUnavailable(r, "logout + a failed re-login")
        self.assertEqual(self.count(calls, "C_Login"), 1, calls)
        self.clear_faults()
        # the token answers again; no /readyz in between
        self.after = [self.sign() for _ in range(2)]

    def test_login_is_restored_once_the_token_answers(self):
        self.assertEqual([r.status for r in self.after], [200, 200], self.after)


class TouchFailure(RecoveryCase):
    """After its own writes, the daemon has its management helper run `tokensign-hsm
    --touch-token` (design.md, "Several instances on one token"); the child loads the same
    module, so the shim's faults reach it. C_GetSlotList is a call a helper makes only when it
    starts: failing it fails every touch and nothing else (no helper is restarted meanwhile). A
    failing touch is logged once per episode, with the child's own reason, and signing goes
    on."""

    WARNING = "another instance's changes to the token may be seen late"

    def setUp(self):
        self.d = shim_daemon()
        self.d.issuers = {"main": dict(harness.DEFAULT_ISSUER, **{
            "rotation-period": "2s", "prepublish": "1s", "token-ttl": "3s",
            "max-token-ttl": "3s"})}
        self.d.jwks_max_age = "1s"
        self.d.write_config()
        self.addCleanup(self.d.close)

    def rotations(self, n):
        """Waits for n more keys to be generated (each one a write, and so a touch)."""
        want = self.d.log().count('"event":"generated"') + n
        deadline = time.time() + 4 * n + 5
        while self.d.log().count('"event":"generated"') < want:
            self.assertLess(time.time(), deadline, "no rotation; log:\n" + self.d.log())
            time.sleep(0.1)
        time.sleep(0.5)  # the next maintenance pass: the touch

    def test_failing_touch_is_logged_once_per_episode(self):
        self.start()
        helpers = self.d.helpers()
        started = 1 + len(helpers["sign"])  # the management helper and the signing helpers
        self.rotations(1)
        self.assertNotIn(self.WARNING, self.d.log())
        # one from each helper's start, the others from touch children
        self.assertGreaterEqual(self.calls().count("C_GetSlotList CKR_OK"), started + 1,
                                "no touch child ran")

        self.set_faults("C_GetSlotList CKR_DEVICE_ERROR *")
        self.rotations(2)
        self.assertGreaterEqual(self.calls().count("C_GetSlotList CKR_DEVICE_ERROR"), 2)
        self.assertLogged("tokensign-hsm --touch-token: C_GetSlotList: CKR_DEVICE_ERROR")
        self.assertLogged(self.WARNING, "tokensign-hsm --touch-token exited with status 1")
        self.assertEqual(self.d.log().count(self.WARNING), 1, self.d.log())
        self.assertSignsAndVerifies(self.sign(), "while touches fail")
        self.assertEqual(self.d.helpers(), helpers, "a failing touch restarted a helper")

        self.clear_faults()
        self.rotations(1)
        self.set_faults("C_GetSlotList CKR_DEVICE_ERROR *")
        self.rotations(1)
        self.assertEqual(self.d.log().count(self.WARNING), 2, "a new episode is logged again")
        self.assertSignsAndVerifies(self.sign(), "after")
        self.assertEqual(self.d.helpers(), helpers, "a failing touch restarted a helper")


class FreshViewTest(harness.TestCase):
    """docs/design.md, "SoftHSM's file store is not coherent between writing processes": a
    module instance can keep showing another process's fresh private key without its
    attributes, so a pair that looks incomplete for the first time is read again, by a new
    management helper (a new module instance), before it is believed. The shim's
    `C_FindObjectsInit:3 EMPTY 1` makes one search for private keys (CKO_PRIVATE_KEY = 3) find
    none: every pair looks incomplete to that reading."""

    REREAD = "reading the token again with a new management helper"

    def setUp(self):
        # A short prepublish: a rescan every 2 s (tokencheck.rescan_interval)
        issuer = dict(harness.DEFAULT_ISSUER, **{"rotation-period": "1h", "prepublish": "4s"})
        self.d = harness.shim_daemon(issuers={"main": issuer}, admin=True, jwks_max_age="2s")
        self.addCleanup(self.d.close)

    def status(self):
        r = harness.unix_http(self.d.admin_sock, "GET", "/v1/status")
        self.assertEqual(r.status, 200, r)
        return r.json()

    def test_incomplete_pair_is_read_again_before_quarantine(self):
        d = self.d
        d.start()
        kid = self.assertSigned(d.sign("main", harness.VALID_CLAIMS))["kid"]
        d.stop()
        # A new start reads every key afresh (none is known yet). Its first two searches for
        # private keys find none: the migration of public halves' index read
        # (daemon/hsm/hsm_migrate.c), then the first refresh's.
        harness.write_faults(d, "C_FindObjectsInit:3 EMPTY 2")
        d.start()
        with open(d.faults) as f:
            self.assertIn("EMPTY 0", f.read(), "the fault was not injected")
        status = self.status()
        self.assertEqual(status["quarantined"], 0, status)
        self.assertEqual(status["level"], "ok", status)
        self.assertEqual(self.assertSigned(d.sign("main", harness.VALID_CLAIMS))["kid"], kid,
                         "the active key was replaced instead of read again")
        log = d.log()
        self.assertEqual(log.count(self.REREAD), 1, log[-3000:])
        self.assertNotIn("kept in quarantine", log)

    def test_pair_still_incomplete_after_the_second_reading_is_quarantined_once(self):
        d = self.d
        d.start()
        kid = self.assertSigned(d.sign("main", harness.VALID_CLAIMS))["kid"]
        d.stop()
        # The migration's reading and both of the first refresh find no private key: the
        # second reading is believed, the keys are quarantined, and a key is made. The refresh
        # after that generation sees the pairs whole (the faults are used up) and takes them
        # back; neither it nor the rescans after it read again for the same keys.
        harness.write_faults(d, "C_FindObjectsInit:3 EMPTY 3")
        d.start()
        with open(d.faults) as f:
            self.assertIn("EMPTY 0", f.read(), "the faults were not injected")
        manage = d.helpers()["manage"]
        time.sleep(2.5 * 2)  # two rescans
        self.assertEqual(d.helpers()["manage"], manage, "the management helper was renewed "
                         "again for keys already read twice")
        log = d.log()
        self.assertEqual(log.count(self.REREAD), 1, log[-3000:])
        self.assertIn("kept in quarantine", log)
        status = self.status()
        self.assertEqual(status["quarantined"], 0, status)
        self.assertEqual(self.assertSigned(d.sign("main", harness.VALID_CLAIMS))["kid"], kid)

class RecordRevisedUnderTheHelper(harness.TestCase):
    """A record is revised by writing the new revision, then destroying the old one. A signing
    helper that searched for records just before the write and read them just after the destroy
    finds no record of the key (test_crash caught one during a forced rotation: 503). It
    searches again before it answers "no record": the new revision is there by then. The shim's
    `C_FindObjectsInit:0 EMPTY 1` makes the next search for data objects (CKO_DATA = 0: the
    records) find none, as that reading did."""

    def test_a_search_that_finds_no_record_is_made_again(self):
        d = harness.shim_daemon()
        self.addCleanup(d.close)
        d.start()
        # No signature yet: the signing helper learns the key (and reads its records) at the
        # first one.
        harness.write_faults(d, "C_FindObjectsInit:0 EMPTY 1")
        self.assertSigned(d.sign("main", harness.VALID_CLAIMS))
        with open(d.faults) as f:
            self.assertIn("EMPTY 0", f.read(), "the fault was not injected")
        self.assertNotIn("no record of ours describes the key", d.log())


class KeyHalfMisreadOnce(harness.TestCase):
    """Before destroying a key pair, the management helper reads each half's class and privacy
    (one C_GetAttributeValue of two attributes) and refuses a half that is not the private
    object it was. Two instances revoking one pending key at once saw one such reading that was
    wrong only for a moment (SoftHSM's file store is not coherent between processes): the loser
    answered 409. A half that reads wrong is read again 50 ms later, and only a second wrong
    reading is believed. A revocation reads two attributes twice before the key pair (the
    record's check, which destroys the record, and a look at the gone record), so the shim's
    `C_GetAttributeValue:2 SLEEP=0 2` lets those through and the next line flips a bit of the
    private half's class: once (`CORRUPT 1`), or in both readings (`CORRUPT 2`)."""

    SKIP = "C_GetAttributeValue:2 SLEEP=0 2"

    def setUp(self):
        self.d = harness.shim_daemon(admin=True)
        self.addCleanup(self.d.close)
        self.d.start()

    def pending(self):
        r = harness.unix_http(self.d.admin_sock, "GET", "/v1/status")
        self.assertEqual(r.status, 200, r)
        kid = {i["issuer"]: i for i in r.json()["issuers"]}["main"]["pending_kid"]
        self.assertIsNotNone(kid)
        return kid

    def revoke(self, kid, *faults):
        harness.write_faults(self.d, *faults)
        r = harness.unix_http(self.d.admin_sock, "POST",
                              "/v1/issuers/main/keys/%s/revoke" % kid, body={},
                              headers={"Content-Type": "application/json"})
        with open(self.d.faults) as f:
            left = f.read()
        harness.write_faults(self.d)
        return r, left

    def test_a_half_misread_once_is_read_again_and_destroyed(self):
        kid = self.pending()
        r, left = self.revoke(kid, self.SKIP, "C_GetAttributeValue:2 CORRUPT 1")
        self.assertIn("CORRUPT 0", left, "the fault was not injected")
        self.assertEqual(r.status, 200, "%r\n%s" % (r, self.d.log()[-3000:]))
        view = tokencheck.read(self.d)
        self.assertNotIn(kid, {k.kid for k in view.keys})
        self.assertNotIn(kid, {j["kid"] for j in self.d.jwks("main")["keys"]})

    def test_a_half_misread_twice_is_refused_and_kept(self):
        kid = self.pending()
        key_id = {k.kid: k.id for k in tokencheck.read(self.d).keys}[kid]
        r, left = self.revoke(kid, self.SKIP, "C_GetAttributeValue:2 CORRUPT 2")
        self.assertIn("CORRUPT 0", left, "the faults were not injected")
        self.assertEqual(r.status, 409, r)
        self.assertRegex(r.json().get("message", ""),
                         r"object \d+ is no longer the private object it was")
        # Nothing of the pair was destroyed on the doubtful readings (its record went first,
        # as a revocation does: the key is out of every JWKS).
        view = tokencheck.read(self.d)
        self.assertIn(key_id, view.privs)
        self.assertIn(key_id, view.pubs)

class RecordVanishedDuringARefresh(harness.TestCase):
    """Every rescan reads all records: one search, then each record found. Another instance that
    revises a record meanwhile (new revision written, old destroyed) leaves a handle that
    vanished between the two: that reading would miss the record, and the key looked
    unrecorded for one rescan, so the active key left the JWKS, was audited "retired", signing
    failed closed, and the next rescan made it active again. The records are searched again
    when a handle vanished. The shim's `C_GetAttributeValue:1 CKR_OBJECT_HANDLE_INVALID 1`
    makes the next one-attribute read (a rescan reads each record's CKA_PRIVATE first) answer as
    if the object had just been destroyed."""

    def test_a_record_that_vanished_is_searched_again(self):
        issuer = dict(harness.DEFAULT_ISSUER, **{"rotation-period": "1h", "prepublish": "4s"})
        d = harness.shim_daemon(issuers={"main": issuer}, jwks_max_age="1s")
        self.addCleanup(d.close)
        d.start()
        self.assertSigned(d.sign("main", harness.VALID_CLAIMS))
        kids = sorted(k["kid"] for k in d.jwks("main")["keys"])
        self.assertEqual(len(kids), 2, kids)  # active and pending
        before = len(d.log())
        harness.write_faults(d, "C_GetAttributeValue:1 CKR_OBJECT_HANDLE_INVALID 1")
        seen = set()
        deadline = time.time() + 3 * tokencheck.rescan_interval({"main": issuer}) + 1
        while time.time() < deadline:
            seen.add(tuple(sorted(k["kid"] for k in d.jwks("main")["keys"])))
            self.assertSigned(d.sign("main", harness.VALID_CLAIMS))
            time.sleep(0.05)
        with open(d.faults) as f:
            self.assertIn("INVALID 0", f.read(), "the fault was not injected")
        self.assertEqual(seen, {tuple(kids)}, "the JWKS changed")
        log = d.log()[before:]
        self.assertNotIn('"event":"retired"', log)
        self.assertNotIn("no key may sign now", log)


if __name__ == "__main__":
    harness.main()
