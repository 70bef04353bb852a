#!/usr/bin/python3
"""Probes and status never wait for a key generation (docs/operations.md, "Health").

A key generation holds the keyring's writer lock for as long as the token takes, seconds for an
RSA-4096 key on a slow HSM. tokensignd runs against SoftHSM through p11shim
(tests/shim/README.md), whose `C_GenerateKeyPair SLEEP=MS 1` makes one generation that slow; the
scheduler starts it when the pending key takes over. While it runs:

- GET /readyz on the sign socket answers 200 "ready" (the active key signs; a generation in
  progress is not a reason to drain the instance);
- GET /v1/status and GET /v1/keys on the admin socket answer 200, with the last known state;
- a signing request is answered with a token;

all before the generation has ended: the shim logs a C_GenerateKeyPair line only when the call
returns, and there is none yet when the last answer has arrived. Afterwards the status shows the
new pending key.

Environment (tests/shim/meson.build): TOKENSIGND, P11PROBE, SOFTHSM_MODULE and P11SHIM."""

import os
import time

import harness

# The pending key takes over 12 s after the start; the slow generation of its successor then
# runs for SLOW_MS, well within the 12 s the new active key lasts, so signing never stops.
ISSUERS = {"main": {"algorithm": "ES256", "rotation-period": "12s", "prepublish": "3s",
                    "token-ttl": "5s", "max-token-ttl": "5s",
                    "audiences": "api://orders", "allow": "*"}}
SLOW_MS = 8000
SLOW_LINE = "C_GenerateKeyPair SLEEP=%d" % SLOW_MS
START_TIMEOUT = 40.0   # for the scheduler to begin the slow generation (one rotation period
                       # plus a loaded machine's start)
ANSWER_WITHIN = 4.0    # seconds: an answer that waited for the generation takes SLOW_MS
CLAIMS = {"sub": "user-42", "aud": "api://orders"}


class Probes(harness.TestCase):
    def setUp(self):
        self.d = harness.shim_daemon(issuers=ISSUERS, admin=True, jwks_max_age="1s")
        self.addCleanup(self.d.close)
        self.d.start()

    def generations_done(self):
        """C_GenerateKeyPair calls that have returned (the shim logs a call when it returns)."""
        with open(self.d.shim_log) as f:
            return sum(1 for line in f if line.startswith("C_GenerateKeyPair "))

    def slow_generation_started(self):
        """The shim takes the fault's count when the call begins: at 0 it has begun."""
        try:
            with open(self.d.faults) as f:
                return SLOW_LINE + " 0" in f.read()
        except FileNotFoundError:
            return False

    def timed(self, what, fn):
        t0 = time.monotonic()
        r = fn()
        took = time.monotonic() - t0
        self.assertLess(took, ANSWER_WITHIN, "%s took %.1fs: it waited for the key "
                        "generation\n%s" % (what, took, self.d.log()[-3000:]))
        return r

    def admin(self, path):
        return harness.unix_http(self.d.admin_sock, "GET", path)

    def test_answers_during_a_slow_generation(self):
        harness.write_faults(self.d, SLOW_LINE + " 1")
        deadline = time.monotonic() + START_TIMEOUT
        while not self.slow_generation_started():
            self.assertLess(time.monotonic(), deadline, "the scheduler did not start a key "
                            "generation within %gs\n%s" % (START_TIMEOUT, self.d.log()))
            time.sleep(0.05)
        done = self.generations_done()

        ready = self.timed("GET /readyz", lambda: self.d.unix_request("GET", "/readyz"))
        status = self.timed("GET /v1/status", lambda: self.admin("/v1/status"))
        keys = self.timed("GET /v1/keys", lambda: self.admin("/v1/keys"))
        signed = self.timed("a signature", lambda: self.d.sign("main", CLAIMS))

        self.assertEqual(self.generations_done(), done,
                         "the generation ended before the answers: this run proves nothing; "
                         "raise SLOW_MS")
        self.assertEqual((ready.status, ready.json()), (200, {"status": "ready"}), ready)
        self.assertEqual(status.status, 200, status)
        st = status.json()
        self.assertEqual(st["token"], "ok", st)
        self.assertTrue(st["issuers"][0]["signing"], st)
        self.assertEqual(keys.status, 200, keys)
        active = [k for k in keys.json()["keys"] if k["state"] == "active"]
        self.assertEqual(len(active), 1, keys.json())
        self.assertEqual(self.assertSigned(signed)["kid"], active[0]["kid"])

        # The generation ends, and the status shows its key as the next one.
        deadline = time.monotonic() + SLOW_MS / 1000 + 20
        while True:
            st = self.admin("/v1/status").json()
            if self.generations_done() > done and st["issuers"][0]["pending_kid"]:
                break
            self.assertLess(time.monotonic(), deadline, "no pending key after the slow "
                            "generation: %r\n%s" % (st, self.d.log()))
            time.sleep(0.2)
        self.assertStillSigns(self.d, claims=CLAIMS)


if __name__ == "__main__":
    harness.main()
