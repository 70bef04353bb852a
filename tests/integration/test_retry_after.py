#!/usr/bin/python3
"""Every 503 says when to come back: Retry-After on a signature the token failed
(hsm_unavailable), on /readyz while the token is unreachable, and on the admin status's
token-dependent answers; never on a 200 or a 4xx (docs/api.md)."""

import time

import harness


class RetryAfterTest(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = harness.shim_daemon()
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def tearDown(self):
        harness.write_faults(self.d)

    def test_a_failed_signature(self):
        harness.write_faults(self.d, "C_Sign CKR_DEVICE_ERROR 1")
        r = self.d.sign("main", harness.VALID_CLAIMS)
        self.assertError(r, 503, "hsm_unavailable")
        self.assertEqual(r.headers.get("retry-after"), "1", r)
        ok = self.d.sign("main", harness.VALID_CLAIMS)
        self.assertSigned(ok)
        self.assertNotIn("retry-after", ok.headers)

    def test_not_ready(self):
        harness.write_faults(self.d, "C_GetTokenInfo CKR_GENERAL_ERROR *")
        deadline = time.time() + 10
        r = self.d.unix_request("GET", "/readyz")
        while r.status != 503 and time.time() < deadline:
            time.sleep(0.1)
            r = self.d.unix_request("GET", "/readyz")
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.headers.get("retry-after"), "1", r)

    def test_no_retry_after_on_a_refusal(self):
        r = self.d.sign("main", {"sub": "no aud"})
        self.assertEqual(r.status // 100, 4, r)
        self.assertNotIn("retry-after", r.headers)


if __name__ == "__main__":
    harness.main()
