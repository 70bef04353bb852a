#!/usr/bin/python3
"""Helper calls in the metrics (docs/operations.md, "Monitoring"), through the p11shim: a
C_Sign that fails with CKR_DEVICE_ERROR is one tokensign_hsm_errors_total{op="sign",
ckr="CKR_DEVICE_ERROR"} and one tokensign_sign_requests_total{result="hsm_unavailable"}; a
session the helper reopens or a login it repeats is a tokensign_hsm_session_recoveries_total;
a helper killed is a helper restart."""

import os
import signal
import time

import harness
import test_metrics  # its parser; not its test classes (unittest would run them here)


class MetricsHsmTest(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.spec = test_metrics.spec_types()
        cls.port = harness.free_port()
        cls.d = harness.shim_daemon(extra_conf="[metrics]\nlisten = 127.0.0.1:%d\n" % cls.port)
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def tearDown(self):
        harness.write_faults(self.d)

    def scrape(self):
        r = harness.tcp_http("127.0.0.1", self.port, "GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        return test_metrics.parse(r.body, self.spec)[1]

    @staticmethod
    def value(samples, name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def test_device_error_counted(self):
        self.assertSigned(self.d.sign("main", harness.VALID_CLAIMS))
        before = self.scrape()
        harness.write_faults(self.d, "C_Sign CKR_DEVICE_ERROR 1")
        self.assertError(self.d.sign("main", harness.VALID_CLAIMS), 503, "hsm_unavailable")
        self.assertSigned(self.d.sign("main", harness.VALID_CLAIMS))
        after = self.scrape()

        def moved(name, **labels):
            return self.value(after, name, **labels) - self.value(before, name, **labels)
        self.assertEqual(moved("tokensign_hsm_errors_total", op="sign",
                               ckr="CKR_DEVICE_ERROR"), 1)
        self.assertEqual(moved("tokensign_hsm_operations_total", op="sign"), 2)
        self.assertEqual(moved("tokensign_sign_requests_total", issuer="main",
                               result="hsm_unavailable"), 1)
        self.assertEqual(moved("tokensign_sign_requests_total", issuer="main",
                               result="granted"), 1)
        errors = [k for k in after if k[0] == "tokensign_hsm_errors_total"]
        for _, labels in errors:
            ckr = dict(labels)["ckr"]
            self.assertTrue(ckr in ("helper_lost", "other") or
                            (ckr.startswith("CKR_") and ckr.replace("_", "").isalnum()),
                            errors)

    def test_session_recoveries_counted(self):
        self.assertSigned(self.d.sign("main", harness.VALID_CLAIMS))
        name = "tokensign_hsm_session_recoveries_total"
        before = self.value(self.scrape(), name)
        # a dropped session: the shim really closes it, and it was the signing helper's only
        # one, so the token logged the helper out with it: reopened, then logged in again
        # (two repairs), and the signature made on the new session
        harness.write_faults(self.d, "C_Sign CKR_SESSION_HANDLE_INVALID 1")
        self.assertSigned(self.d.sign("main", harness.VALID_CLAIMS))
        self.assertEqual(self.value(self.scrape(), name) - before, 2)
        # a lost login: logged in again once
        harness.write_faults(self.d, "C_Sign LOGOUT 1")
        self.assertSigned(self.d.sign("main", harness.VALID_CLAIMS))
        self.assertEqual(self.value(self.scrape(), name) - before, 3)
        # a signature that needed no repair moves nothing
        harness.write_faults(self.d)
        self.assertSigned(self.d.sign("main", harness.VALID_CLAIMS))
        self.assertEqual(self.value(self.scrape(), name) - before, 3)

    def test_helper_restart_counted(self):
        before = self.value(self.scrape(), "tokensign_helper_restarts_total")
        pids = self.d.helpers()["sign"]
        self.assertTrue(pids, "no signing helper found")
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        # the next calls find the helper gone and start another
        end = time.time() + 20
        while time.time() < end:
            self.d.sign("main", harness.VALID_CLAIMS)
            harness.tcp_http("127.0.0.1", self.d.jwks_port, "GET", "/healthz")
            if self.value(self.scrape(), "tokensign_helper_restarts_total") > before:
                break
            time.sleep(0.2)
        self.assertGreater(self.value(self.scrape(), "tokensign_helper_restarts_total"), before)
        self.assertSigned(self.d.sign("main", harness.VALID_CLAIMS))


if __name__ == "__main__":
    harness.main()
