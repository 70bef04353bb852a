"""keyrotate (SPEC §2) against the real tokensignd on a throwaway SoftHSM token, over the real
admin socket: list, status, rotate, revoke, the confirmation rules, options and exit codes.

KEYROTATE is the path of the built keyrotate binary (build/keyrotate/keyrotate)."""

import datetime
import json
import os
import pty
import re
import shutil
import socket
import subprocess
import time

import harness

NOBODY = 65534
TIME_RE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
MEMBERS = ["issuer", "kid", "alg", "state", "created_at", "activates_at", "retires_at",
           "destroy_after"]
SECOND_ISSUER = {"algorithm": "ES256", "audiences": "api://billing", "allow": "*"}


def keyrotate_path():
    return os.path.abspath(os.environ["KEYROTATE"])


def run(args, stdin=subprocess.DEVNULL, env=None, user=None, exe=None, timeout=60):
    """keyrotate args -> CompletedProcess (text). user: run as that uid (gid the same, no
    supplementary groups)."""
    kw = {}
    if user is not None:
        kw = {"user": user, "group": user, "extra_groups": []}
    return subprocess.run([exe or keyrotate_path()] + list(args), stdin=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env, timeout=timeout, **kw)


def local_time(t, utc_offset_hours):
    """What keyrotate prints for NumericDate t under TZ with that fixed offset."""
    return (datetime.datetime(1970, 1, 1) + datetime.timedelta(
        seconds=t + utc_offset_hours * 3600)).strftime("%Y-%m-%d %H:%M:%S")


class KeyrotateCase(harness.TestCase):
    issuers = None  # the harness's default: one issuer, "main"

    def setUp(self):
        self.d = harness.Daemon(issuers=self.issuers)
        self.addCleanup(self.d.close)
        self.sock = os.path.join(self.d.workdir, "admin.sock")
        self.d.extra_conf = "[admin]\nsocket = %s\nmode = %s\n" % (self.sock, self.admin_mode())
        self.d.write_config()
        self.d.start()

    def admin_mode(self):
        return "0660"

    # -- helpers --

    def kr(self, *args, **kw):
        return run(["--socket", self.sock] + list(args), **kw)

    def ok(self, *args, **kw):
        r = self.kr(*args, **kw)
        self.assertEqual(r.returncode, 0, "keyrotate %s: %r" % (" ".join(args), r))
        return r

    def fails(self, code, *args, **kw):
        r = self.kr(*args, **kw)
        self.assertEqual(r.returncode, code, "keyrotate %s: %r" % (" ".join(args), r))
        self.assertTrue(r.stderr.strip(), "no message on stderr: %r" % (r,))
        return r

    def keys(self, issuer=None):
        r = self.ok("list", "--json", *([issuer] if issuer else []))
        return json.loads(r.stdout)

    def state_of(self, keys, issuer="main"):
        """{state: [kid, ...]} of issuer."""
        out = {}
        for k in keys:
            if k["issuer"] == issuer:
                out.setdefault(k["state"], []).append(k["kid"])
        return out

    def wait_pending(self, issuer="main", timeout=10.0):
        """The issuer's (active kid, pending kid) once it has a pending key. The assertion that
        start-up alone gives one is test_list_json's; the other tests only need a key to act on."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.state_of(self.keys(issuer), issuer)
            if st.get("pending") and st.get("active"):
                return st["active"][0], st["pending"][0]
            if time.monotonic() > deadline:
                self.fail("%s has no active and pending key after %gs: %r" % (issuer, timeout, st))
            time.sleep(0.1)

    def past_first_second(self, issuer="main"):
        """Waits until the active key has signed for a second: a switch in the very second it
        started comes one second later (two keys cannot start in the same second), and a
        daemon that has just started is in that second."""
        k = [k for k in self.keys(issuer) if k["state"] == "active"][0]
        while time.time() < k["activates_at"] + 1:
            time.sleep(0.05)

    def jwks_kids(self, issuer="main"):
        return [k["kid"] for k in self.d.jwks(issuer)["keys"]]

    def signed_kid(self, issuer="main"):
        return self.assertStillSigns(self.d, issuer)["kid"]


class TestList(KeyrotateCase):
    issuers = {"main": dict(harness.DEFAULT_ISSUER), "billing": SECOND_ISSUER}

    def test_list_json(self):
        keys = self.keys()
        self.assertIsInstance(keys, list)
        for k in keys:
            self.assertEqual(list(k), MEMBERS, k)
            for m in MEMBERS[:4]:
                self.assertIsInstance(k[m], str, (m, k))
            for m in MEMBERS[4:]:
                self.assertIs(type(k[m]), int, (m, k))
            self.assertIn(k["state"], ("pending", "active", "retired"))
            self.assertLessEqual(k["activates_at"], k["retires_at"], k)
            self.assertLess(k["retires_at"], k["destroy_after"], k)
        # SPEC §6: right after start-up, exactly one active and one pending key per issuer.
        for name, alg in (("main", "ES256"), ("billing", "ES256")):
            st = self.state_of(keys, name)
            self.assertEqual(sorted(st), ["active", "pending"], (name, keys))
            self.assertEqual(len(st["active"]), 1, keys)
            self.assertEqual(len(st["pending"]), 1, keys)
            self.assertEqual({k["alg"] for k in keys if k["issuer"] == name}, {alg})
            self.assertEqual(sorted(st["active"] + st["pending"]), sorted(self.jwks_kids(name)))
        # Issuers in configuration order.
        self.assertEqual([k["issuer"] for k in keys],
                         sorted((k["issuer"] for k in keys), key=["main", "billing"].index))

    def test_list_table(self):
        self.wait_pending("main")
        self.wait_pending("billing")
        keys = self.keys()
        for tz, offset in (("UTC0", 0), ("JST-9", 9)):
            env = dict(os.environ, TZ=tz)
            r = self.ok("list", env=env)
            lines = r.stdout.rstrip("\n").split("\n")
            self.assertEqual(lines[0].split(), ["ISSUER", "KID", "ALG", "STATE", "CREATED",
                                                "ACTIVATES", "RETIRES", "DESTROY-AFTER"])
            self.assertEqual(len(lines), 1 + len(keys), r.stdout)
            for line, k in zip(lines[1:], keys):
                want = [k["issuer"], k["kid"], k["alg"], k["state"]]
                for m in MEMBERS[4:]:
                    want += local_time(k[m], offset).split(" ")
                self.assertEqual(line.split(), want, (tz, line))
            self.assertEqual(r.stderr, "")

    def test_list_issuer(self):
        self.wait_pending("billing")
        keys = self.keys("billing")
        self.assertTrue(keys)
        self.assertEqual({k["issuer"] for k in keys}, {"billing"})
        r = self.ok("list", "billing")
        self.assertNotIn("main ", r.stdout)
        for k in keys:
            self.assertIn(k["kid"], r.stdout)

    def test_list_unknown_issuer(self):
        for args in (["list", "nosuch"], ["list", "--json", "nosuch"]):
            r = self.fails(1, *args)
            self.assertEqual(r.stdout, "")
            self.assertIn("issuer", r.stderr)

    def test_status(self):
        active, pending = self.wait_pending("main")
        self.wait_pending("billing")
        st = json.loads(self.ok("status", "--json").stdout)
        self.assertEqual(st["token"], "ok")
        self.assertEqual([i["issuer"] for i in st["issuers"]], ["main", "billing"])
        main = st["issuers"][0]
        self.assertEqual(main["active_kid"], active)
        self.assertEqual(main["pending_kid"], pending)
        self.assertIs(main["signing"], True)
        self.assertIsNone(main["problem"])
        self.assertGreater(main["next_rotation"], time.time())

        r = self.ok("status", env=dict(os.environ, TZ="UTC0"))
        self.assertRegex(r.stdout, r"(?m)^token: ok$")
        when = local_time(main["next_rotation"], 0)
        self.assertRegex(r.stdout, r"(?m)^main +active %s +next rotation in \d+d \d+h \(%s\)$"
                         % (re.escape(active), re.escape(when)))
        self.assertRegex(r.stdout, r"(?m)^billing +active \S+ +next rotation in ")


class TestRotate(KeyrotateCase):
    def test_rotate(self):
        active, pending = self.wait_pending()
        r = self.ok("rotate", "main", env=dict(os.environ, TZ="UTC0"))
        m = re.fullmatch(r"main: (\S+) -> (\S+) at (%s) \((in \d+[dhms]( \d+[hms])?|now)\)\n"
                         % TIME_RE, r.stdout)
        self.assertTrue(m, r.stdout)
        self.assertEqual(m.group(1), active)
        self.assertEqual(m.group(2), pending)
        # Nothing switched yet: the pending key is younger than prepublish (1d).
        self.assertEqual(self.signed_kid(), active)
        self.assertIn(active, self.jwks_kids())

    def test_rotate_json(self):
        active, pending = self.wait_pending()
        before = int(time.time())
        ans = json.loads(self.ok("rotate", "main", "--json").stdout)
        self.assertEqual(ans["issuer"], "main")
        self.assertEqual(ans["active_kid"], active)
        self.assertEqual(ans["next_kid"], pending)
        self.assertIsInstance(ans["switch_at"], int)
        self.assertGreaterEqual(ans["switch_at"], before)
        k = [k for k in self.keys("main") if k["kid"] == pending][0]
        self.assertEqual(k["activates_at"], ans["switch_at"])

    def test_rotate_now_yes(self):
        active, pending = self.wait_pending()
        self.past_first_second()
        r = self.ok("rotate", "--now", "--yes", "main")
        self.assertRegex(r.stdout, r"^main: %s -> %s at %s \(now\)\n$"
                         % (re.escape(active), re.escape(pending), TIME_RE))
        self.assertIn("reject new tokens", r.stderr)
        # The old key is retired but still published; the pending one signs now.
        st = self.state_of(self.keys())
        self.assertEqual(st.get("retired"), [active], st)
        self.assertEqual(st.get("active"), [pending], st)
        kids = self.jwks_kids()
        self.assertIn(active, kids)
        self.assertIn(pending, kids)
        self.assertEqual(self.signed_kid(), pending)

    def test_rotate_now_without_tty_refuses(self):
        active, pending = self.wait_pending()
        before = self.keys()
        r = self.fails(1, "rotate", "main", "--now")
        self.assertEqual(r.stdout, "")
        self.assertIn("--yes", r.stderr)
        self.assertEqual(self.keys(), before)
        self.assertEqual(self.signed_kid(), active)

    def test_rotate_now_on_a_terminal(self):
        active, pending = self.wait_pending()
        self.past_first_second()
        before = self.keys()
        for answer, code in ((b"n\n", 1), (b"\n", 1), (b"y\n", 0)):
            master, slave = os.openpty()
            try:
                p = subprocess.Popen([keyrotate_path(), "--socket", self.sock, "rotate", "--now",
                                      "main"], stdin=slave, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
                os.write(master, answer)
                out, err = p.communicate(timeout=60)
            finally:
                os.close(master)
                os.close(slave)
            self.assertEqual(p.returncode, code, (answer, out, err))
            self.assertIn("Proceed? [y/N]", err)
            if code:
                self.assertEqual(self.keys(), before)
        self.assertEqual(self.signed_kid(), pending)

    def test_rotate_unknown_issuer(self):
        r = self.fails(1, "rotate", "nosuch")
        self.assertIn("issuer", r.stderr)
        self.fails(1, "rotate", "nosuch", "--now", "--yes")


class TestRevoke(KeyrotateCase):
    def test_revoke_pending(self):
        active, pending = self.wait_pending()
        r = self.ok("revoke", "--yes", "main", "--", pending)
        self.assertIn("destroyed", r.stderr)
        self.assertEqual(r.stdout, "main: revoked %s (was pending)\nmain: active %s, pending %s\n"
                         % (pending, active, self.state_of(self.keys())["pending"][0]))
        self.assertNotIn(pending, self.jwks_kids())
        self.assertNotIn(pending, [k["kid"] for k in self.keys()])
        self.assertNotIn(pending, self.ok("list").stdout)
        self.assertEqual(self.signed_kid(), active)

    def test_revoke_active(self):
        active, pending = self.wait_pending()
        self.past_first_second()
        ans = json.loads(self.ok("revoke", "main", "--yes", "--json", "--", active).stdout)
        self.assertEqual(ans["issuer"], "main")
        self.assertEqual(ans["revoked_kid"], active)
        self.assertEqual(ans["was"], "active")
        self.assertEqual(ans["active_kid"], pending)
        self.assertNotIn(ans["pending_kid"], (None, active, pending))
        self.assertNotIn(active, self.jwks_kids())
        self.assertNotIn(active, [k["kid"] for k in self.keys()])
        # Signing never stopped: the promoted key signs.
        for _ in range(3):
            self.assertEqual(self.signed_kid(), pending)

    def test_revoke_active_warns_about_relying_parties(self):
        active, pending = self.wait_pending()
        self.past_first_second()
        r = self.ok("revoke", "main", "--yes", "--", active)
        self.assertIn("leaves the JWKS", r.stderr)
        self.assertIn("reject new tokens", r.stderr)
        self.assertIn(pending, r.stderr)

    def test_revoke_without_tty_refuses(self):
        active, pending = self.wait_pending()
        before = self.keys()
        for kid in (active, pending):
            r = self.fails(1, "revoke", "main", "--", kid)
            self.assertEqual(r.stdout, "")
            self.assertIn("--yes", r.stderr)
        self.assertEqual(self.keys(), before)
        self.assertIn(active, self.jwks_kids())
        self.assertIn(pending, self.jwks_kids())

    def test_revoke_unknown(self):
        active, pending = self.wait_pending()
        before = self.keys()
        self.fails(1, "revoke", "--yes", "main", "--", "A" * 43)
        self.fails(1, "revoke", "--yes", "nosuch", "--", active)
        self.assertEqual(self.keys(), before)


class TestOptions(KeyrotateCase):
    def test_options_before_and_after_the_command(self):
        self.wait_pending()
        want = self.keys()
        for args in (["--json", "list"], ["list", "--json"], ["list", "main", "--json"],
                     ["--json", "list", "main"]):
            self.assertEqual(json.loads(self.ok(*args).stdout), want, args)
        r = run(["list", "--socket", self.sock, "--json"])
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(json.loads(r.stdout), want)
        # POSIXLY_CORRECT does not stop option parsing at the command.
        r = run(["status", "--json", "--socket", self.sock],
                env=dict(os.environ, POSIXLY_CORRECT="1"))
        self.assertEqual(r.returncode, 0, r)
        json.loads(r.stdout)

    def test_config_file(self):
        self.wait_pending()
        r = run(["-c", self.d.conf_path, "list", "--json"])
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(json.loads(r.stdout), self.keys())
        # --socket wins over -c.
        other = os.path.join(self.d.workdir, "other.conf")
        with open(other, "w") as f:
            f.write("[hsm]\nnot-checked = here\n\n[admin]\nsocket = /nonexistent/admin.sock"
                    "   ; a comment\n")
        r = run(["-c", other, "--socket", self.sock, "status"])
        self.assertEqual(r.returncode, 0, r)
        r = run(["-c", other, "status"])
        self.assertEqual(r.returncode, 3, r)
        self.assertIn("/nonexistent/admin.sock: ", r.stderr)  # the comment is not part of it
        # A file without an [admin] socket, and one that is not there.
        with open(other, "w") as f:
            f.write("[sign]\nsocket = %s\n" % self.d.sign_socket)
        for path in (other, os.path.join(self.d.workdir, "missing.conf")):
            r = run(["-c", path, "status"])
            self.assertEqual(r.returncode, 1, r)
            self.assertIn(path, r.stderr)

    def test_usage_errors(self):
        # Usage is checked before the daemon is asked anything: exit 2 even without one.
        for sock in (self.sock, "/nonexistent/admin.sock"):
            for args in (["bogus"], [], ["rotate"], ["revoke", "main"], ["list", "a", "b"],
                         ["status", "extra"], ["rotate", "main", "extra"],
                         ["revoke", "main", "kid", "extra"], ["--bogus", "list"],
                         ["list", "--bogus"], ["-x", "status"], ["list", "--now"],
                         ["status", "--yes"], ["list", "--yes"], ["revoke", "--now", "main", "k"],
                         ["rotate", "main", "--yes"], ["help", "bogus"],
                         ["help", "list", "extra"]):
                r = run(["--socket", sock] + args)
                self.assertEqual(r.returncode, 2, (args, r))
                self.assertEqual(r.stdout, "", args)
                self.assertTrue(r.stderr.strip(), args)
        r = run(["list", "--socket"])
        self.assertEqual(r.returncode, 2, r)
        # Nothing changed by any of them.
        self.assertEqual(len(self.state_of(self.keys()).get("active", [])), 1)

    def test_help(self):
        for cmd, words in (("list", ["ISSUER", "--json"]), ("status", ["--json"]),
                           ("rotate", ["ISSUER", "--now", "--yes"]),
                           ("revoke", ["ISSUER", "KID", "--yes"])):
            outs = []
            for args in ([cmd, "--help"], ["help", cmd], ["--help", cmd], [cmd, "-h"]):
                r = run(["--socket", "/nonexistent/admin.sock"] + args)
                self.assertEqual(r.returncode, 0, (args, r))
                self.assertEqual(r.stderr, "", args)
                self.assertIn("keyrotate", r.stdout)
                self.assertIn(cmd, r.stdout)
                for w in words:
                    self.assertIn(w, r.stdout, (args, w))
                outs.append(r.stdout)
            self.assertEqual(len(set(outs)), 1, cmd)
        for args in (["--help"], ["-h"], ["help"]):
            r = run(args)
            self.assertEqual(r.returncode, 0, r)
            for cmd in ("list", "status", "rotate", "revoke"):
                self.assertIn(cmd, r.stdout)
        r = run(["--version"])
        self.assertEqual(r.returncode, 0, r)
        self.assertRegex(r.stdout, r"^keyrotate \d+\.\d+")


class TestUnreachable(KeyrotateCase):
    def test_missing_socket(self):
        for path in ("/nonexistent/admin.sock", os.path.join(self.d.workdir, "no.sock")):
            for args in (["list"], ["status", "--json"], ["rotate", "main"],
                         ["revoke", "--yes", "main", "k"]):
                r = run(["--socket", path] + args)
                self.assertEqual(r.returncode, 3, (path, args, r))
                self.assertIn(path, r.stderr)
                self.assertEqual(r.stdout, "")

    def test_refused(self):
        regular = os.path.join(self.d.workdir, "regular-file")
        with open(regular, "w") as f:
            f.write("not a socket\n")
        stale = os.path.join(self.d.workdir, "stale.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(stale)  # bound, never listening: connect() is refused
        try:
            for path in (regular, stale):
                r = run(["--socket", path, "status"])
                self.assertEqual(r.returncode, 3, (path, r))
                self.assertIn("refused", r.stderr)
        finally:
            s.close()
        # A daemon that has stopped leaves nothing to connect to.
        self.d.stop()
        r = self.kr("list")
        self.assertEqual(r.returncode, 3, r)

    def test_no_permission_to_connect(self):
        # The socket is 0660 root:root: uid 65534 cannot even connect.
        exe = os.path.join(self.d.workdir, "keyrotate")
        shutil.copy(keyrotate_path(), exe)
        os.chmod(exe, 0o755)
        r = run(["--socket", self.sock, "list"], user=NOBODY, exe=exe)
        self.assertEqual(r.returncode, 3, r)
        self.assertIn("ermission", r.stderr)


class TestNonAdmin(KeyrotateCase):
    def admin_mode(self):
        return "0666"

    def test_refused_by_the_daemon(self):
        active, pending = self.wait_pending()
        before = self.keys()
        exe = os.path.join(self.d.workdir, "keyrotate")
        shutil.copy(keyrotate_path(), exe)
        os.chmod(exe, 0o755)
        for args in (["list"], ["status"], ["rotate", "main"], ["rotate", "--now", "--yes", "main"],
                     ["revoke", "--yes", "main", "--", pending]):
            r = run(["--socket", self.sock] + args, user=NOBODY, exe=exe)
            self.assertEqual(r.returncode, 1, (args, r))
            self.assertIn("refused", r.stderr, args)
            self.assertEqual(r.stdout, "", args)
        self.assertEqual(self.keys(), before)


if __name__ == "__main__":
    harness.main()
