#!/usr/bin/python3
"""SoftHSM's file store between processes, and `tokensign-hsm --touch-token` (docs/design.md,
"Several instances on one token"; the daemon's management helper runs it).

- The store's flaw, shown on a real token by p11coherence: a process that writes an object
  right after another process wrote one does not see the other's object afterwards. Should a
  SoftHSM release fix that, this test says so (the touch would then be unneeded).
- A touch from another process makes it visible.
- A touch removes the objects a killed touch left, and leaves every other object alone.
- A touch that cannot reach the module or the token exits 1 and says why on stderr.
- SoftHSM loses the token for good when a re-read of its directory fails (here: the daemon's
  management helper, the process that holds the module for maintenance, has no file descriptor
  left when another process's write makes it re-read); the daemon's health probe, which that
  helper answers, sees it (C_GetTokenInfo), so /readyz fails and a watchdog would restart it.
"""

import json
import os
import resource
import subprocess
import time

import harness

P11COHERENCE = os.environ.get("P11COHERENCE")


class CoherenceTest(harness.TestCase):

    def setUp(self):
        if not P11COHERENCE:
            self.fail("P11COHERENCE is not set: run through meson test")
        self.d = harness.Daemon()
        self.addCleanup(self.d.close)
        self.d.provision()

    def coherence(self, *args):
        r = subprocess.run([P11COHERENCE] + list(args), env=self.d.env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def touch(self, module=None, token=None):
        return subprocess.run(
            [harness.tokensign_hsm_path(), "--touch-token", module or self.d.module,
             token or self.d.token_label], env=self.d.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)

    def test_softhsm_hides_and_touch_shows(self):
        for _ in range(3):
            seen = json.loads(self.coherence(self.d.module, self.d.token_label,
                                             harness.tokensign_hsm_path()))
            self.assertEqual(seen["seen_after_own_write"], 0,
                             "this SoftHSM shows another process's object after a write of "
                             "ours: tokensign-hsm --touch-token may no longer be needed (%r)"
                             % seen)
            self.assertEqual(seen["seen_after_touch"], 1, seen)

    def test_touch_without_touch_shows_nothing(self):
        """The control: the same run with a program that does nothing in place of the touch."""
        seen = json.loads(self.coherence(self.d.module, self.d.token_label, "/bin/true"))
        self.assertEqual(seen, {"seen_after_own_write": 0, "seen_after_touch": 0})

    def test_touch_removes_leftovers_only(self):
        self.coherence("--create", self.d.module, self.d.token_label, "left",
                       "tokensign-touch")
        self.coherence("--create", self.d.module, self.d.token_label, "keep", "someone-else")
        apps = sorted(o.get("application") for o in self.d.probe() if o["class"] == "data")
        self.assertEqual(apps, ["someone-else", "tokensign-touch"])
        r = self.touch()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout + r.stderr, "")
        apps = [o.get("application") for o in self.d.probe() if o["class"] == "data"]
        self.assertEqual(apps, ["someone-else"])

    def test_touch_errors(self):
        r = self.touch(module=os.path.join(self.d.workdir, "no-such-module.so"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("tokensign-hsm --touch-token: cannot load PKCS#11 module", r.stderr)
        r = self.touch(token="no-such-token")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no initialized token matches 'no-such-token'", r.stderr)

    def test_a_helper_that_lost_the_token_is_replaced(self):
        """SoftHSM loses the token for good in a process that fails to re-read it
        (docs/design.md, "A failed re-read loses the token for the process"). Before the
        helpers, that made the daemon unready until restarted; now the management helper that
        lost it is replaced, and the new one reads the token afresh: ready again, and signing."""
        d = harness.Daemon(jwks_max_age="1s", issuers={"main": dict(
            harness.DEFAULT_ISSUER, **{"rotation-period": "60s", "prepublish": "2s",
                                       "token-ttl": "3s", "max-token-ttl": "3s"})})
        self.addCleanup(d.close)
        d.start()
        self.assertEqual(d.unix_request("GET", "/readyz").status, 200)
        helpers = d.helpers()
        pid = helpers["manage"]
        self.assertIsNotNone(pid, helpers)
        old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        # Well below the descriptors it holds (a maintenance pass may have a few files open
        # for a moment): not one more can be opened, so its next re-read fails.
        resource.prlimit(pid, resource.RLIMIT_NOFILE,
                         (max(3, len(os.listdir("/proc/%d/fd" % pid)) - 10), old[1]))
        try:
            subprocess.run([P11COHERENCE, "--create", d.module, d.token_label, "x", "other"],
                           env=d.env, check=True, timeout=60)
            deadline = time.time() + 15
            while d.helpers()["manage"] in (pid, None) and time.time() < deadline:
                time.sleep(0.1)
        finally:
            try:
                resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
            except ProcessLookupError:
                pass  # replaced, as it should be
        self.assertNotEqual(d.helpers()["manage"], pid, d.log())
        self.assertRegex(d.log(), r"token helper %d \(management\) lost the token "
                                  r"\(C_GetTokenInfo: CKR_GENERAL_ERROR" % pid)
        deadline = time.time() + 10
        while d.unix_request("GET", "/readyz").status != 200 and time.time() < deadline:
            time.sleep(0.2)
        self.assertEqual(d.unix_request("GET", "/readyz").status, 200, d.log())
        self.assertSigned(d.sign("main", {"aud": "api://orders"}))
        self.assertNoSanitizerReport(d)

if __name__ == "__main__":
    harness.main()
