#!/usr/bin/python3
"""sign-batch when the token fails one signature of a batch (p11shim, tests/shim/README.md):
that item alone is refused as a single sign would be (hsm_unavailable, or
signature_check_failed with self-check on), with its audit record; the other items are signed;
and the failure counts in tokensign_hsm_errors_total{op="sign-batch"}.

Environment: as the other shim tests (tests/shim/meson.build)."""

import time

import harness
import test_audit

CLAIMS = {"sub": "user-42", "aud": "api://orders"}
PATH = "/v1/issuers/main/sign-batch"


class BatchFaults(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.port = harness.free_port()
        issuer = dict(harness.DEFAULT_ISSUER, **{"self-check": "yes"})
        cls.d = harness.shim_daemon(
            issuers={"main": issuer},
            extra_conf="[metrics]\nlisten = 127.0.0.1:%d\n" % cls.port)
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def tearDown(self):
        harness.write_faults(self.d)
        self.assertStillSigns(self.d)

    def hsm_errors(self):
        text = harness.tcp_http("127.0.0.1", self.port, "GET", "/metrics").body.decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith('tokensign_hsm_errors_total{op="sign-batch"'))

    def one_item_fails(self, fault, code):
        jtis = ["f-%s-%d" % (code, i) for i in range(3)]
        before_recs = len(test_audit.records(self.d.log()))
        before_errors = self.hsm_errors()
        harness.write_faults(self.d, fault)
        try:
            r = self.d.unix_request("POST", PATH, {"requests": [
                {"claims": dict(CLAIMS, jti=j)} for j in jtis]})
        finally:
            harness.write_faults(self.d)
        self.assertEqual(r.status, 200, r)
        results = r.json()["results"]
        self.assertEqual(results[0], {"error": code, "message": results[0].get("message")},
                         results)
        for res in results[1:]:
            self.assertEqual(sorted(res), ["alg", "exp", "iat", "kid", "token"], results)
        time.sleep(0.2)
        recs = test_audit.records(self.d.log())[before_recs:]
        self.assertEqual(sorted((x["jti"], x["result"], x.get("reason")) for x in recs),
                         [(jtis[0], "refused", code), (jtis[1], "granted", None),
                          (jtis[2], "granted", None)], recs)
        return before_errors

    def test_a_token_error_is_that_items_alone(self):
        before = self.one_item_fails("C_Sign CKR_DEVICE_ERROR 1", "hsm_unavailable")
        self.assertEqual(self.hsm_errors() - before, 1)

    def test_a_corrupt_signature_is_that_items_alone(self):
        self.one_item_fails("C_Sign CORRUPT 1", "signature_check_failed")
        self.assertRegex(self.d.log(), r"does not verify")


if __name__ == "__main__":
    harness.main()
