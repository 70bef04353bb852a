#!/usr/bin/python3
"""Configuration errors (SPEC §3): `tokensignd --check-config` names file, line and reason and
exits 1; the daemon refuses to start on a bad configuration or a PIN the token refuses."""

import os
import re
import select
import shutil
import subprocess
import tempfile

import harness

WAIT_EXIT = 20


def good_lines(tmp):
    return [
        "[hsm]",                                            # 1
        "module = %s" % harness.softhsm_module(),           # 2
        "token = tokensign-test",                           # 3
        "pin-file = %s/hsm-pin" % tmp,                      # 4
        "",                                                 # 5
        "[sign]",                                           # 6
        "socket = %s/sign.sock" % tmp,                      # 7
        "mode = 0660",                                      # 8
        "",                                                 # 9
        "[jwks]",                                           # 10
        "listen = 127.0.0.1:%d" % harness.free_port(),      # 11
        "max-age = 5m",                                     # 12
        "",                                                 # 13
        "[issuer:main]",                                    # 14
        "iss = https://login.example.test/main",            # 15
        "algorithm = ES256",                                # 16
        "audiences = api://orders, api://billing",          # 17
        "token-types = JWT, at+jwt",                        # 18
        "token-ttl = 15m",                                  # 19
        "max-token-ttl = 1h",                               # 20
        "allow = *",                                        # 21
    ]


HSM_LINE, ISSUER_LINE = 1, 14


class CheckConfigTest(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="tokensign-conf-it-")
        with open(os.path.join(cls.tmp, "hsm-pin"), "w") as f:
            f.write("1234\n")
        os.chmod(os.path.join(cls.tmp, "hsm-pin"), 0o600)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def lines(self):
        return good_lines(self.tmp)

    def check(self, lines):
        return harness.check_config("\n".join(lines) + "\n")

    def assertProblem(self, lines, expected_lines, words, ctx):
        """--check-config exits 1 and one message reads '...tokensignd.conf:LINE: reason' with
        LINE in expected_lines and every word of words in the reason (case-insensitive)."""
        rc, err = self.check(lines)
        text = "%s\n--- config ---\n%s\n--- stderr ---\n%s" % (ctx, "\n".join(
            "%2d %s" % (i + 1, l) for i, l in enumerate(lines)), err)
        self.assertEqual(rc, 1, text)
        found = False
        for m in re.finditer(r"tokensignd\.conf:(\d+): (.*)", err):
            if int(m.group(1)) in expected_lines and \
                    all(w.lower() in m.group(2).lower() for w in words):
                found = True
        self.assertTrue(found, "no 'tokensignd.conf:%s: ...%s...' problem: %s"
                        % ("|".join(map(str, expected_lines)), words, text))
        return err

    def test_good_config(self):
        rc, err = self.check(self.lines())
        self.assertEqual(rc, 0, err)
        # the documented example of SPEC §3's shape with every optional key spelled out
        lines = self.lines() + ["rotation-period = 30d", "prepublish = 1d"]
        lines[12:12] = ["", "[admin]", "socket = %s/admin.sock" % self.tmp, "mode = 0660"]
        rc, err = self.check(lines)
        self.assertEqual(rc, 0, err)

    def test_unknown_section(self):
        lines = self.lines() + ["", "[bogus]", "foo = 1"]
        self.assertProblem(lines, [len(lines) - 1], ["bogus"], "unknown section")
        lines = self.lines()
        lines.insert(13, "[issuers:main2]")
        self.assertProblem(lines, [14], ["issuers:main2"], "misspelt issuer section")

    def test_unknown_key(self):
        for at, key in ((2, "modul"), (7, "owner"), (12, "maxage"), (16, "colour")):
            lines = self.lines()
            lines.insert(at, "%s = blue" % key)
            self.assertProblem(lines, [at + 1], [key], "unknown key %s" % key)

    def test_bad_duration(self):
        for key, line in (("token-ttl", 19), ("max-token-ttl", 20)):
            for value in ("15q", "abc", "-5m", "m", "5 m m", "5mm"):
                lines = self.lines()
                lines[line - 1] = "%s = %s" % (key, value)
                self.assertProblem(lines, [line], [key], "%s = %s" % (key, value))
        lines = self.lines()
        lines[11] = "max-age = forever"
        self.assertProblem(lines, [12], ["max-age"], "bad max-age")
        lines = self.lines() + ["rotation-period = 30 days"]
        self.assertProblem(lines, [len(lines)], ["rotation-period"], "bad rotation-period")

    def test_durations_accepted(self):
        # SPEC §3: s, m (or min), h, d, w; sub-minute values are legal
        for ttl, max_ttl in (("30s", "1m"), ("2min", "1h"), ("1h", "2h"), ("1d", "1w")):
            lines = self.lines()
            lines[18] = "token-ttl = %s" % ttl
            lines[19] = "max-token-ttl = %s" % max_ttl
            rc, err = self.check(lines)
            self.assertEqual(rc, 0, "%s/%s: %s" % (ttl, max_ttl, err))

    def test_prepublish_shorter_than_max_age(self):
        lines = self.lines() + ["prepublish = 1m"]
        self.assertProblem(lines, [ISSUER_LINE, len(lines)], ["prepublish", "max-age"],
                           "prepublish 1m < max-age 5m")
        lines = self.lines() + ["prepublish = 299s"]
        self.assertProblem(lines, [ISSUER_LINE, len(lines)], ["prepublish", "max-age"],
                           "prepublish 299s < max-age 300s")
        # equal is fine
        lines = self.lines() + ["prepublish = 5m"]
        rc, err = self.check(lines)
        self.assertEqual(rc, 0, err)
        # and max-age raised above the default prepublish (1d)
        lines = self.lines()
        lines[11] = "max-age = 2d"
        lines += ["rotation-period = 30d"]
        self.assertProblem(lines, [ISSUER_LINE, 12], ["prepublish", "max-age"],
                           "max-age 2d > default prepublish 1d")

    def test_prepublish_not_shorter_than_rotation(self):
        for pre, rot in (("30d", None), ("2d", "1d"), ("1d", "1d")):
            lines = self.lines() + ["prepublish = %s" % pre]
            if rot:
                lines.append("rotation-period = %s" % rot)
            self.assertProblem(lines, [ISSUER_LINE] + list(range(22, len(lines) + 1)),
                               ["prepublish", "rotation-period"],
                               "prepublish %s, rotation-period %s" % (pre, rot or "30d"))

    def test_issuer_without_allow(self):
        lines = self.lines()[:-1]
        self.assertProblem(lines, [ISSUER_LINE], ["allow"], "no allow")
        lines = self.lines()
        lines[-1] = "allow ="
        rc, err = self.check(lines)
        self.assertEqual(rc, 1, "empty allow: " + err)
        self.assertIn("tokensignd.conf:21:", err)

    def test_bad_issuer_name(self):
        for name in ("Main", "a_b", "", "a.b", "x" * 33, "main/x", "ma in"):
            lines = self.lines()
            lines[ISSUER_LINE - 1] = "[issuer:%s]" % name
            self.assertProblem(lines, [ISSUER_LINE], [name] if name else ["issuer"],
                               "issuer name %r" % name)
        lines = self.lines()
        lines[ISSUER_LINE - 1] = "[issuer:%s]" % ("x" * 32)
        rc, err = self.check(lines)
        self.assertEqual(rc, 0, "32 characters is fine: " + err)

    def test_missing_token(self):
        lines = self.lines()
        del lines[2]
        self.assertProblem(lines, [HSM_LINE], ["token"], "no [hsm] token")

    def test_every_problem_reported(self):
        lines = self.lines()
        lines[2] = "tokn = x"              # line 3: unknown key (and no token)
        lines[18] = "token-ttl = soon"     # line 19: bad duration
        lines += ["", "[bogus]"]           # line 23: unknown section
        rc, err = self.check(lines)
        self.assertEqual(rc, 1, err)
        for n in (3, 19, 23):
            self.assertIn("tokensignd.conf:%d:" % n, err)

    def test_missing_file(self):
        p = subprocess.run([harness.tokensignd_path(), "--check-config", "-c",
                            "/nonexistent/tokensignd.conf"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=30)
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("/nonexistent/tokensignd.conf", p.stderr)

    def test_version_and_help(self):
        for arg in ("--version", "--help"):
            p = subprocess.run([harness.tokensignd_path(), arg], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=30)
            self.assertEqual(p.returncode, 0, p)
            self.assertTrue((p.stdout + p.stderr).strip(), arg)
        p = subprocess.run([harness.tokensignd_path(), "--no-such-option"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0, p)


class StartRefusedTest(harness.TestCase):
    """The daemon itself: a bad configuration or PIN makes it exit non-zero, never READY."""

    def run_to_exit(self, d):
        d.spawn()
        try:
            rc = d.proc.wait(WAIT_EXIT)
        except subprocess.TimeoutExpired:
            d.kill()
            self.fail("daemon did not exit within %ds; stderr:\n%s" % (WAIT_EXIT, d.log()))
        d.kill()
        ready = False
        while select.select([d._notify], [], [], 0)[0]:
            if "READY=1" in d._notify.recv(4096).decode("utf-8", "replace").split("\n"):
                ready = True
        self.assertFalse(ready, "sent READY=1 and then exited: " + d.log())
        return rc, d.log()

    def daemon(self, **kw):
        d = harness.Daemon(**kw)
        self.addCleanup(d.close)
        return d

    def test_bad_config_refused(self):
        d = self.daemon(extra_conf="[bogus]\nfoo = 1\n")
        rc, log = self.run_to_exit(d)
        self.assertNotEqual(rc, 0, log)
        n = d.config_text().split("\n").index("[bogus]") + 1
        self.assertIn("tokensignd.conf:%d:" % n, log)
        self.assertIn("bogus", log)

    def test_unsafe_config_refused(self):
        ic = dict(harness.DEFAULT_ISSUER, prepublish="1m")
        d = self.daemon(issuers={"main": ic})
        rc, log = self.run_to_exit(d)
        self.assertNotEqual(rc, 0, log)
        self.assertIn("prepublish", log)
        self.assertFalse(os.path.exists(d.sign_socket), "socket made despite a bad config")

    def test_wrong_pin(self):
        d = self.daemon()
        d.provision()
        wrong = "wr0ngPIN" + d.pin[:6]
        d.write_pin(wrong + "\n")
        rc, log = self.run_to_exit(d)
        # tokensignd(8) EXIT STATUS: the one status the unit does not restart
        self.assertEqual(rc, 77, log)
        self.assertTrue(log.strip(), "no message on stderr")
        for secret in (wrong, d.pin, d.so_pin):
            self.assertNotIn(secret, log, "a PIN is in the log")
        # the token is not harmed: the right PIN works afterwards
        d.write_pin(d.pin + "\n")
        d.start()
        self.assertStillSigns(d)

    def test_pin_without_newline(self):
        d = self.daemon()
        d.provision()
        d.write_pin(d.pin)
        d.start()
        self.assertStillSigns(d)
        self.assertNotIn(d.pin, d.log())

    def test_missing_pin_file(self):
        d = self.daemon()
        d.provision()
        os.unlink(d.pin_file)
        rc, log = self.run_to_exit(d)
        self.assertNotEqual(rc, 0, log)
        self.assertIn(d.pin_file, log)

    def test_unknown_token(self):
        d = self.daemon()
        d.provision()
        d.token_label = "no-such-token"
        d.write_config()
        rc, log = self.run_to_exit(d)
        self.assertNotEqual(rc, 0, log)
        self.assertIn("no-such-token", log)


if __name__ == "__main__":
    harness.main()
