"""keyrotate (SPEC §2) against the real tokensignd on a throwaway SoftHSM token, over the real
admin socket: list, status, rotate, revoke, purge, the confirmation rules, options and exit
codes. What the real daemon cannot easily be made to show (a token away, foreign objects, an
older daemon's status, the daemon's refusals of a purge racing the configuration) is answered
by FakeAdmin, a canned admin socket.

KEYROTATE is the path of the built keyrotate binary (build/keyrotate/keyrotate)."""

import datetime
import http.server
import json
import os
import pty
import re
import shutil
import socket
import socketserver
import subprocess
import tempfile
import threading
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


def on_terminal(argv, answer):
    """Runs argv with a terminal as stdin, types answer at it; (process, stdout, stderr)."""
    master, slave = os.openpty()
    try:
        p = subprocess.Popen(argv, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        os.write(master, answer)
        out, err = p.communicate(timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    return p, out, err

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

        self.assertEqual(st.get("level", "ok"), "ok")  # absent from a daemon before issue 11

        r = self.ok("status", env=dict(os.environ, TZ="UTC0"))
        self.assertEqual(r.stdout.split("\n")[0], "status: OK")
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
            p, out, err = on_terminal([keyrotate_path(), "--socket", self.sock, "rotate",
                                       "--now", "main"], answer)
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
            r = run(["-c", path, "list"])
            self.assertEqual(r.returncode, 1, r)
            self.assertIn(path, r.stderr)
            r = run(["-c", path, "status"])  # no level to tell: unknown
            self.assertEqual(r.returncode, 3, r)
            self.assertIn(path, r.stderr)

    def test_usage_errors(self):
        # Usage is checked before the daemon is asked anything: exit 2 even without one (3,
        # unknown, for status: SPEC §2's monitoring-plugin convention).
        for sock in (self.sock, "/nonexistent/admin.sock"):
            for args, code in (
                    (["bogus"], 2), ([], 2), (["rotate"], 2), (["revoke", "main"], 2),
                    (["list", "a", "b"], 2), (["status", "extra"], 3),
                    (["rotate", "main", "extra"], 2), (["revoke", "main", "kid", "extra"], 2),
                    (["--bogus", "list"], 2), (["list", "--bogus"], 2), (["-x", "status"], 3),
                    (["status", "-x"], 3), (["status", "--socket"], 3), (["list", "--now"], 2),
                    (["status", "--yes"], 3), (["status", "--now"], 3), (["list", "--yes"], 2),
                    (["revoke", "--now", "main", "k"], 2), (["rotate", "main", "--yes"], 2),
                    (["purge"], 2), (["purge", "a", "b"], 2), (["purge", "--now", "a"], 2),
                    (["--bogus", "purge", "a"], 2), (["help", "bogus"], 2),
                    (["help", "list", "extra"], 2)):
                r = run(["--socket", sock] + args)
                self.assertEqual(r.returncode, code, (args, r))
                self.assertEqual(r.stdout, "", args)
                self.assertTrue(r.stderr.strip(), args)
        r = run(["list", "--socket"])
        self.assertEqual(r.returncode, 2, r)
        # Nothing changed by any of them.
        self.assertEqual(len(self.state_of(self.keys()).get("active", [])), 1)

    def test_help(self):
        for cmd, words in (("list", ["ISSUER", "--json"]), ("status", ["--json"]),
                           ("rotate", ["ISSUER", "--now", "--yes"]),
                           ("revoke", ["ISSUER", "KID", "--yes"]),
                           ("purge", ["ISSUER", "--yes", "orphan", "configured"])):
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
            for cmd in ("list", "status", "rotate", "revoke", "purge"):
                self.assertRegex(r.stdout, r"(?m)^  %s " % cmd)
        r = run(["--version"])
        self.assertEqual(r.returncode, 0, r)
        self.assertRegex(r.stdout, r"^keyrotate \d+\.\d+")


class TestUnreachable(KeyrotateCase):
    def test_missing_socket(self):
        for path in ("/nonexistent/admin.sock", os.path.join(self.d.workdir, "no.sock")):
            for args in (["list"], ["status", "--json"], ["status"], ["rotate", "main"],
                         ["revoke", "--yes", "main", "k"], ["purge", "--yes", "old"]):
                r = run(["--socket", path] + args)
                self.assertEqual(r.returncode, 3, (path, args, r))
                self.assertIn(path, r.stderr)
                # A monitoring system reads stdout: the human status still names its level.
                self.assertEqual(r.stdout, "status: UNKNOWN\n" if args == ["status"] else "")

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
                     ["revoke", "--yes", "main", "--", pending], ["purge", "--yes", "main"]):
            r = run(["--socket", self.sock] + args, user=NOBODY, exe=exe)
            status = args[0] == "status"
            self.assertEqual(r.returncode, 3 if status else 1, (args, r))  # status: unknown
            self.assertIn("refused", r.stderr, args)
            self.assertEqual(r.stdout, "status: UNKNOWN\n" if status else "", args)
        self.assertEqual(self.keys(), before)


class TestPurge(KeyrotateCase):
    """purge's refusals against the real daemon, which has no orphans here."""

    issuers = {"main": dict(harness.DEFAULT_ISSUER), "billing": SECOND_ISSUER}

    def test_purge_configured_issuer(self):
        self.wait_pending("billing")
        before = self.keys()
        for args in (["purge", "--yes", "billing"], ["purge", "billing"],
                     ["--json", "purge", "--yes", "main"]):
            r = self.fails(1, *args)
            self.assertEqual(r.stdout, "", args)
            self.assertRegex(r.stderr, r"issuer \w+ is configured: purge is only for the keys "
                             r"of an issuer removed from the configuration", args)
        self.assertEqual(self.keys(), before)
        self.assertStillSigns(self.d, "billing", {"sub": "user-42", "aud": "api://billing"})

    def test_purge_unknown_issuer(self):
        self.wait_pending()
        before = self.keys()
        for args in (["purge", "--yes", "nosuch"], ["purge", "nosuch"]):
            r = self.fails(1, *args)
            self.assertEqual(r.stdout, "", args)
            self.assertIn("no orphaned keys of issuer nosuch in the token", r.stderr)
        self.assertEqual(self.keys(), before)


class TestOrphans(KeyrotateCase):
    """An issuer removed from the configuration: its keys stay as orphans (listed, counted in
    status, never published), and only purge destroys them."""

    issuers = {"main": dict(harness.DEFAULT_ISSUER), "old": SECOND_ISSUER}

    def old_objects(self):
        return [o for o in self.d.probe()
                if o.get("label") == "tokensign:old" or
                str(o.get("label", "")).startswith("tokensign:old:")]

    def test_orphans_listed_counted_and_purged(self):
        self.wait_pending("old")
        old_kids = sorted(k["kid"] for k in self.keys("old"))
        self.d.stop()
        self.d.issuers = {"main": self.d.issuers["main"]}
        self.d.write_config()
        self.d.start()
        self.assertTrue(self.old_objects())
        self.assertRaises(harness.HarnessError, self.d.jwks, "old")  # never published

        # list: old's keys, marked, and nothing else changed about main's.
        keys = self.keys()
        orphans = [k for k in keys if k["issuer"] == "old"]
        self.assertEqual(sorted(k["kid"] for k in orphans), old_kids, keys)
        for k in keys:
            self.assertEqual(list(k), MEMBERS + ["orphan"] if k["issuer"] == "old" else MEMBERS,
                             k)
            if k["issuer"] == "old":
                self.assertIs(k["orphan"], True)
        table = self.ok("list").stdout
        for kid in old_kids:
            self.assertRegex(table, r"(?m)^old +%s +ES256 +\w+ \(orphan\) " % re.escape(kid))
        self.assertNotIn("orphan", "\n".join(l for l in table.split("\n") if "main" in l))

        # status: a warning, and what it is about.
        r = self.kr("status", "--json")
        self.assertEqual(r.returncode, 1, r)
        st = json.loads(r.stdout)
        self.assertEqual(st["level"], "warning", st)
        self.assertEqual(st["orphans"], [{"issuer": "old", "keys": len(old_kids)}], st)
        r = self.kr("status")
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(r.stdout.split("\n")[0], "status: WARNING")
        self.assertRegex(r.stdout, r"(?m)^orphans: old, %d keys of an issuer no longer "
                         r"configured: kept until 'keyrotate purge old'$" % len(old_kids))

        # The daemon's own refusals, as keyrotate reads them.
        ans = harness.unix_http(self.sock, "POST", "/v1/issuers/main/purge", {})
        self.assertError(ans, 409, "issuer_configured")
        ans = harness.unix_http(self.sock, "POST", "/v1/issuers/nosuch/purge", {})
        self.assertError(ans, 404, "unknown_issuer")

        # Without a terminal and without --yes: refused, nothing destroyed.
        r = self.fails(1, "purge", "old")
        self.assertIn("--yes", r.stderr)
        for kid in old_kids:
            self.assertIn(kid, r.stderr)  # the warning names what would go
        self.assertEqual(sorted(k["kid"] for k in self.keys() if k["issuer"] == "old"),
                         old_kids)

        r = self.ok("purge", "--yes", "old")
        self.assertEqual(sorted(r.stdout.splitlines()),
                         sorted("old: destroyed %s" % kid for kid in old_kids))
        self.assertEqual(self.old_objects(), [])
        self.assertEqual([k for k in self.keys() if k["issuer"] == "old"], [])
        st = json.loads(self.ok("status", "--json").stdout)
        self.assertEqual(st["orphans"], [], st)
        r = self.fails(1, "purge", "--yes", "old")
        self.assertIn("no orphaned keys of issuer old", r.stderr)
        self.assertStillSigns(self.d, "main")


# ---- a canned admin socket, for answers the real daemon cannot easily be made to give ----

class _FakeHandler(http.server.BaseHTTPRequestHandler):
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        self.server.requests.append((self.command, self.path, body))
        status, obj = self.server.routes.get(
            (self.command, self.path), (404, {"error": "not_found", "message": "no such path"}))
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = answer

    def address_string(self):
        return "unix"

    def log_message(self, *args):
        pass


class FakeAdmin(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """routes: {(method, path): (status, JSON value or bytes)}; requests: what was asked."""

    daemon_threads = True

    def __init__(self, path, routes):
        super().__init__(path, _FakeHandler)
        self.routes = routes
        self.requests = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self):
        self.shutdown()
        self.server_close()


class FakeCase(harness.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="keyrotate-fake-")
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        self.sock = os.path.join(self.dir, "admin.sock")
        self.fake = FakeAdmin(self.sock, {})
        self.addCleanup(self.fake.close)

    def kr(self, *args, **kw):
        return run(["--socket", self.sock] + list(args), **kw)

    def posts(self):
        return [r for r in self.fake.requests if r[0] == "POST"]


def issuer_status(name="main", signing=True, problem=None, level=None):
    st = {"issuer": name, "active_kid": "A" * 43, "pending_kid": "P" * 43, "signing": signing,
          "next_rotation": int(time.time()) + 86400 * 30, "problem": problem}
    if level is not None:
        st["level"] = level
    return st


def daemon_status(token="ok", level=None, issuers=None, **degraded):
    st = {"token": token}
    if level is not None:
        st["level"] = level
    st.update(degraded)
    st["issuers"] = [issuer_status()] if issuers is None else issuers
    return st


class TestStatusLevels(FakeCase):
    """status's level and exit code (SPEC §2) from every shape of status it may get."""

    def check(self, status, code, lines=()):
        self.fake.routes[("GET", "/v1/status")] = (200, status)
        r = self.kr("status", "--json")
        self.assertEqual(r.returncode, code, (status, r))
        self.assertEqual(json.loads(r.stdout), status)  # as the daemon sent it, nothing else
        r = self.kr("status")
        self.assertEqual(r.returncode, code, (status, r))
        first = r.stdout.split("\n")[0]
        self.assertEqual(first, "status: " + ["OK", "WARNING", "CRITICAL", "UNKNOWN"][code],
                         (status, r.stdout))
        for line in lines:
            self.assertRegex(r.stdout, r"(?m)^%s$" % line, status)
        return r

    def test_daemon_level_is_used(self):
        self.check(daemon_status(level="ok", foreign=0, quarantined=0, orphans=[]), 0)
        r = self.check(daemon_status(
            level="warning", foreign=2, quarantined=1, orphans=[{"issuer": "old", "keys": 2},
                                                               {"issuer": "older", "keys": 1}],
            issuers=[issuer_status(level="warning", problem="no pending key: generation "
                                   "failed, next try in 30s")]), 1,
            [r"foreign: 2 objects in the token not exactly tokensign's: never used, never "
             r"destroyed \(the daemon's log names each\)",
             r"quarantined: 1 set aside \(a key claimed twice, a record that cannot be read\): "
             r"kept, never used, never destroyed \(the daemon's log names each\)",
             r"orphans: old, 2 keys of an issuer no longer configured: kept until 'keyrotate "
             r"purge old'",
             r"orphans: older, 1 key of an issuer no longer configured: kept until 'keyrotate "
             r"purge older'",
             r" +problem: no pending key: generation failed, next try in 30s"])
        self.assertEqual(r.stdout.split("\n")[1], "token: ok")
        self.check(daemon_status(token="unreachable", level="critical", foreign=0,
                                 quarantined=0, orphans=[],
                                 issuers=[issuer_status(signing=False, level="critical")]),
                   2, [r"token: unreachable", r"main +active A{43} .*  NOT SIGNING"])
        # The daemon's word wins over keyrotate's own reading.
        self.check(daemon_status(level="ok", foreign=3), 0)

    def test_older_daemon_level_is_derived(self):
        self.check(daemon_status(), 0, [r"token: ok", r"main +active A{43} +next rotation in "
                                        r"\d+d \d+h \(.*\)"])
        self.check(daemon_status(issuers=[issuer_status(problem="the next key could not be "
                                                        "generated")]), 1)
        self.check(daemon_status(issuers=[issuer_status(), issuer_status("b", signing=False)]),
                   2)
        self.check(daemon_status(token="unreachable"), 2)
        self.check(daemon_status(foreign=1), 1)
        self.check(daemon_status(quarantined=1), 1)
        self.check(daemon_status(orphans=[{"issuer": "old", "keys": 1}]), 1)
        self.check(daemon_status(foreign=0, quarantined=0, orphans=[]), 0)
        self.check(daemon_status(token="unreachable", foreign=1,
                                 issuers=[issuer_status(problem="x")]), 2)
        self.check(daemon_status(issuers=[]), 0)

    def test_no_level_to_tell_is_unknown(self):
        for status in (daemon_status(level="degraded"), daemon_status(level=None) | {"level": 1},
                       {"issuers": []}, {"token": "ok"}, [1, 2]):
            self.fake.routes[("GET", "/v1/status")] = (200, status)
            r = self.kr("status", "--json")
            self.assertEqual(r.returncode, 3, (status, r))
            self.assertEqual(json.loads(r.stdout), status)
            self.assertTrue(r.stderr.strip(), status)
            r = self.kr("status")
            self.assertEqual((r.returncode, r.stdout), (3, "status: UNKNOWN\n"), status)
            self.assertTrue(r.stderr.strip(), status)
        # An issuer the human form cannot show: no half-printed status either.
        self.fake.routes[("GET", "/v1/status")] = (200, daemon_status(issuers=[{"issuer": "x"}]))
        r = self.kr("status")
        self.assertEqual((r.returncode, r.stdout), (3, "status: UNKNOWN\n"), r)
        for answer in ((200, b"not json"), (500, {"error": "internal", "message": "boom"}),
                       (403, {"error": "forbidden", "message": "no"})):
            self.fake.routes[("GET", "/v1/status")] = answer
            r = self.kr("status")
            self.assertEqual((r.returncode, r.stdout), (3, "status: UNKNOWN\n"), (answer, r))
            r = self.kr("status", "--json")
            self.assertEqual((r.returncode, r.stdout), (3, ""), (answer, r))


ORPHAN_KEYS = [
    {"issuer": "main", "kid": "M" * 43, "alg": "ES256", "state": "active",
     "created_at": 1795880000, "activates_at": 1795880000, "retires_at": 1798472000,
     "destroy_after": 1798475660},
    {"issuer": "old", "kid": "O1" + "o" * 41, "alg": "ES256", "state": "retired",
     "created_at": 1795000000, "activates_at": 1795000000, "retires_at": 1795880000,
     "destroy_after": 1795883660, "orphan": True},
    {"issuer": "old", "kid": "O2" + "o" * 41, "alg": "RS256", "state": "active",
     "created_at": 1795880000, "activates_at": 1795880000, "retires_at": 1798472000,
     "destroy_after": 1798475660, "orphan": True},
]
OLD_KIDS = [k["kid"] for k in ORPHAN_KEYS if k["issuer"] == "old"]


class TestPurgeAnswers(FakeCase):
    """purge's confirmation and how it reads each answer of POST /v1/issuers/NAME/purge."""

    def setUp(self):
        super().setUp()
        self.fake.routes[("GET", "/v1/keys")] = (200, {"keys": ORPHAN_KEYS})
        self.fake.routes[("POST", "/v1/issuers/old/purge")] = (
            200, {"issuer": "old", "destroyed": OLD_KIDS})

    def test_purge(self):
        r = self.kr("purge", "--yes", "old")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.stdout, "".join("old: destroyed %s\n" % k for k in OLD_KIDS))
        self.assertIn("cannot be undone", r.stderr)
        for kid in OLD_KIDS:
            self.assertIn(kid, r.stderr)
        self.assertEqual(self.posts(), [("POST", "/v1/issuers/old/purge", b"{}")])
        r = self.kr("--json", "purge", "old", "--yes")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(json.loads(r.stdout), {"issuer": "old", "destroyed": OLD_KIDS})

    def test_list_marks_orphans(self):
        r = self.kr("list", "--json")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(json.loads(r.stdout), ORPHAN_KEYS)
        r = self.kr("list", env=dict(os.environ, TZ="UTC0"))
        self.assertEqual(r.returncode, 0, r)
        rows = [line.split() for line in r.stdout.splitlines()[1:]]
        self.assertEqual([row[3:5] for row in rows],
                         [["active", local_time(1795880000, 0).split(" ")[0]],
                          ["retired", "(orphan)"],
                          ["active", "(orphan)"]], r.stdout)

    def test_without_terminal_refuses(self):
        r = self.kr("purge", "old")
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(r.stdout, "")
        self.assertIn("no terminal", r.stderr)
        self.assertIn("--yes", r.stderr)
        self.assertEqual(self.posts(), [])

    def test_on_a_terminal(self):
        for answer, code in ((b"n\n", 1), (b"\n", 1), (b"yes\n", 0)):
            p, out, err = on_terminal([keyrotate_path(), "--socket", self.sock, "purge", "old"],
                                      answer)
            self.assertEqual(p.returncode, code, (answer, out, err))
            self.assertIn("Proceed? [y/N]", err)
            self.assertEqual(len(self.posts()), 0 if code else 1, answer)

    def test_refused_before_asking(self):
        # The key list shows main configured and nosuch absent: nothing is asked or sent.
        for name, words in (("main", "issuer main is configured: purge is only for the keys "
                                     "of an issuer removed from the configuration"),
                            ("nosuch", "no orphaned keys of issuer nosuch in the token")):
            for args in (["purge", name], ["purge", "--yes", name]):
                r = self.kr(*args)
                self.assertEqual((r.returncode, r.stdout), (1, ""), r)
                self.assertIn(words, r.stderr)
        self.assertEqual(self.posts(), [])

    def test_daemon_refusals(self):
        # The configuration changed between the list and the purge, or another admin was faster.
        for answer, code, words in (
                ((409, {"error": "issuer_configured", "message": "x"}), 1,
                 "issuer old is configured: purge is only for the keys of an issuer removed "
                 "from the configuration"),
                ((404, {"error": "unknown_issuer", "message": "x"}), 1,
                 "no orphaned keys of issuer old in the token"),
                ((404, {"error": "not_found", "message": "no such path"}), 1,
                 "old: no such path (HTTP 404 not_found)"),
                ((503, {"error": "hsm_unavailable", "message": "the token does not answer"}), 1,
                 "old: the token does not answer (HTTP 503 hsm_unavailable)"),
                ((403, {"error": "forbidden", "message": "not you"}), 1,
                 "the daemon refused: not you"),
                ((200, {"issuer": "old"}), 1, "lacks issuer or destroyed"),
                ((200, b"[not json"), 1, "not JSON")):
            self.fake.routes[("POST", "/v1/issuers/old/purge")] = answer
            r = self.kr("purge", "--yes", "old")
            self.assertEqual((r.returncode, r.stdout), (code, ""), (answer, r))
            self.assertIn(words, r.stderr, answer)


if __name__ == "__main__":
    harness.main()
