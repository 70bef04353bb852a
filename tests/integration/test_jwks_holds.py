#!/usr/bin/python3
"""The JWKS never shrinks by accident (SPEC §5, docs/design.md "Custody", invariant C7): when
the token cannot be read, or answers in a way it does not stand behind, the daemon keeps serving
the last good key set, byte for byte with the same ETag, and says so (GET /v1/status
"keys_stale", the log; /readyz 503 while the token does not answer). Once the token is back the
set is the same again: nothing in the lifecycle happened meanwhile (rotation-period 1 h).

Three ways the token goes away, through the p11shim fault module (tests/shim/README.md):
1. every search fails (C_FindObjectsInit CKR_DEVICE_ERROR): the token answers C_GetTokenInfo;
2. the token itself does not answer (C_GetTokenInfo CKR_GENERAL_ERROR);
3. every search finds nothing (C_FindObjects answers CKR_OK with no object), which is how
   SoftHSM answers for a token it lost (docs/design.md, "A failed re-read loses the token")."""

import time

import harness

ISSUER = {"iss": "https://login.example.test/main", "algorithm": "ES256",
          "rotation-period": "1h", "prepublish": "2s", "token-ttl": "5m", "max-token-ttl": "5m",
          "audiences": "api://x", "allow": "*"}
RESCAN = 1.0  # prepublish / 2: the daemon re-reads the token this often
CLAIMS = {"sub": "u", "aud": "api://x"}


set_faults = harness.write_faults


class JwksHoldsTest(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        d = cls.d = harness.shim_daemon({"main": ISSUER}, admin=True, jwks_max_age="1s")
        set_faults(d)
        harness.start_or_close(d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def tearDown(self):
        set_faults(self.d)

    def snapshot(self):
        r = self.d.http("GET", "/main/.well-known/jwks.json")
        self.assertEqual(r.status, 200, r)
        return r.body, r.headers["etag"]

    def status(self):
        r = harness.unix_http(self.d.admin_sock, "GET", "/v1/status")
        self.assertEqual(r.status, 200, r)
        return r.json()

    def wait_for(self, what, pred, timeout=10):
        deadline = time.time() + timeout
        while not pred():
            self.assertLess(time.time(), deadline, "%s:\n%s" % (what, self.d.log()[-3000:]))
            time.sleep(0.1)

    def outage(self, *faults, unready):
        before = self.snapshot()
        self.assertEqual(len(__import__("json").loads(before[0])["keys"]), 2, before)
        self.assertSigned(self.d.sign("main", CLAIMS))
        set_faults(self.d, *faults)
        self.wait_for("keys_stale in GET /v1/status", lambda: self.status()["keys_stale"])
        # Several rescans while the token is away: the set served never changes.
        end = time.time() + 3 * RESCAN
        while time.time() < end:
            self.assertEqual(self.snapshot(), before, "the JWKS changed while the token was away")
            if unready:
                r = self.d.unix_request("GET", "/readyz")
                self.assertEqual((r.status, r.json()),
                                 (503, {"status": "not_ready", "reason": "token unreachable"}))
            time.sleep(0.2)
        st = self.status()
        self.assertNotEqual(st["level"], "ok", st)
        self.assertIn("the last good key sets stay published", self.d.log())
        set_faults(self.d)
        self.wait_for("keys_stale cleared", lambda: not self.status()["keys_stale"])
        self.assertEqual(self.snapshot(), before, "the JWKS is not the same after the outage")
        r = self.d.unix_request("GET", "/readyz")
        self.assertEqual(r.status, 200, r)
        self.assertSigned(self.d.sign("main", CLAIMS))
        self.assertNoSanitizerReport(self.d)

    def test_1_searches_fail(self):
        self.outage("C_FindObjectsInit CKR_DEVICE_ERROR *", unready=False)

    def test_2_token_does_not_answer(self):
        self.outage("C_GetTokenInfo CKR_GENERAL_ERROR *", unready=True)

    def test_3_searches_find_nothing(self):
        # Every search answers "nothing" without asking the token: what SoftHSM does for a token
        # it lost. The daemon does not believe that all its keys are gone.
        self.outage("C_FindObjects CKR_OK *", unready=False)


if __name__ == "__main__":
    harness.main()
