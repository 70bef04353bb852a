#!/usr/bin/python3
"""The daemon's real behaviour against the sandbox of tokensignd.service, without systemd.

This machine cannot run the unit (no systemd as PID 1), so the test runs the built daemon under
strace through a session that touches every part of it (start-up with key generation, signing,
refusals, JWKS, the admin API with a forced rotation and a revocation, SIGHUP, SIGTERM) and
checks what it did, and what its `--touch-token` children did, against what the unit allows:

- every system call is in the unit's SystemCallFilter= (as systemd-analyze syscall-filter
  expands it), with own-sockets-drop-in.conf.example for the socket files' group (this daemon
  binds its own sockets); outside it the daemon would get EPERM. The drop-in adds only chown;
  sched_setaffinity ([hsm] pin-cpus = yes, the default) is in the bare unit's filter;
- sockets only of the RestrictAddressFamilies= families;
- no writable+executable mapping and no mprotect(PROT_EXEC) (MemoryDenyWriteExecute=);
- files written, created or removed only in the daemon's runtime and token directories
  (ProtectSystem=strict; the daemon writes nothing else), no device but the pseudo devices
  (PrivateDevices=), no /proc file outside the process directories (ProcSubset=pid);
- no personality() change (LockPersonality=).

Environment: TOKENSIGND (the built daemon), SOFTHSM_MODULE, SERVICE_UNIT (the configured
tokensignd.service), OWN_SOCKETS_DROP_IN (packaging/systemd/own-sockets-drop-in.conf.example),
PYTHONPATH with tests/integration (the harness).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import harness

SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
STRACE = shutil.which("strace")
PSEUDO_DEVICES = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                  "/dev/tty"}


def unit_settings(path, key):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith(key + "="):
                out.append(line[len(key) + 1:])
    return out


def syscall_groups():
    """{'@group': [members, '@subgroups'...]} from systemd-analyze syscall-filter."""
    r = subprocess.run([SYSTEMD_ANALYZE, "syscall-filter", "--no-pager"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True)
    groups, cur = {}, None
    for line in r.stdout.splitlines():
        if line.startswith("@"):
            cur = line.split()[0]
            groups[cur] = []
        elif cur and line.strip() and not line.strip().startswith("#"):
            groups[cur].append(line.split()[0])
    return groups


def expand(items, groups, seen=None):
    out = set()
    for item in items:
        if item.startswith("@"):
            if item not in groups:
                raise AssertionError("unknown syscall group %s" % item)
            out |= expand(groups[item], groups)
        else:
            out.add(item)
    return out


def allowed_syscalls(unit_path, drop_in=None):
    """The effective allow list of the unit's SystemCallFilter= lines, in order: the first
    (an allow list) sets it, '~' lines remove, later plain lines add back; then those of the
    drop-in."""
    groups = syscall_groups()
    allow = None
    lines = unit_settings(unit_path, "SystemCallFilter")
    if drop_in:
        lines += unit_settings(drop_in, "SystemCallFilter")
    for v in lines:
        deny = v.startswith("~")
        names = expand(v.lstrip("~").split(), groups)
        if allow is None:
            if deny:
                raise AssertionError("the unit's first SystemCallFilter= is not an allow list")
            allow = set(names)
        elif deny:
            allow -= names
        else:
            allow |= names
    if allow is None:
        raise AssertionError("the unit has no SystemCallFilter=")
    return allow


LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. ([a-z0-9_]+) resumed>|([a-z0-9_]+)\()(.*)$")


def parse_trace(path):
    """[(pid, syscall, rest of line)] of an strace -f -y log."""
    calls = []
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line.rstrip("\n"))
            if m:
                calls.append((int(m.group(1)), m.group(2) or m.group(3), m.group(4),
                              m.group(2) is not None))
    return calls


def first_path(args):
    """The first quoted string argument (a path), undecoded."""
    m = re.search(r'"((?:[^"\\]|\\.)*)"', args)
    return m.group(1) if m else None


class TracedDaemon(harness.Daemon):
    """A harness.Daemon whose binary runs under strace; SIGTERM goes to the daemon itself
    (strace, started with -o, ignores it)."""

    def config_text(self):
        # Socket files with a group, as in the packaged configuration: the daemon chown()s
        # them when it binds them itself. nogroup: a group every Debian system has.
        return super().config_text().replace("mode = %s\n" % self.sign_mode,
                                             "mode = %s\ngroup = nogroup\n" % self.sign_mode, 1)

    def tracee_pid(self):
        with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
            kids = f.read().split()
        return int(kids[0]) if kids else None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            pid = self.tracee_pid()
            if pid:
                os.kill(pid, signal.SIGTERM)
        return super().stop()


class Sandbox(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not STRACE:
            raise AssertionError("strace not found: apt-get install strace")
        cls.unit = os.environ.get("SERVICE_UNIT")
        cls.own_sockets = os.environ.get("OWN_SOCKETS_DROP_IN")
        real = os.environ.get("TOKENSIGND")
        if not cls.unit or not real or not cls.own_sockets:
            raise AssertionError("SERVICE_UNIT, OWN_SOCKETS_DROP_IN and TOKENSIGND must be set: "
                                 "run through meson test")
        # Not under /tmp: a write there would hide among the daemon's own files.
        base = os.path.dirname(os.path.abspath(real))
        cls.tmp = tempfile.mkdtemp(prefix="sandbox-", dir=base)
        if not os.environ.get("KEEP_TRACE"):  # KEEP_TRACE=1: keep the strace log to look at
            cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        os.chmod(cls.tmp, 0o755)
        cls.trace = os.path.join(cls.tmp, "strace.log")
        wrapper = os.path.join(cls.tmp, "traced-tokensignd")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec %s -f -qq -y -s 512 -o %s -- %s \"$@\"\n"
                    % (STRACE, cls.trace, real))
        os.chmod(wrapper, 0o755)
        os.environ["TOKENSIGND"] = wrapper
        os.environ["HARNESS_TMPDIR"] = cls.tmp
        cls.results = cls.run_session()
        os.environ["TOKENSIGND"] = real
        cls.calls = parse_trace(cls.trace)
        cls.workdir = cls.results["workdir"]

    @classmethod
    def run_session(cls):
        res = {}
        d = TracedDaemon()
        # As under systemd: log lines and audit records go to the journal (its socket is
        # absent here, so they are lost, but the calls are made: sd_journal_send, and
        # /proc/PID/cgroup of each caller for its unit).
        d.env["JOURNAL_STREAM"] = "0:0"
        # The admin socket sits beside the sign socket in the daemon's runtime directory.
        d.extra_conf = "[admin]\nsocket = %s\ngroup = nogroup\n" % os.path.join(d.workdir,
                                                                             "admin.sock")
        d.write_config()
        res["workdir"] = d.workdir
        res["tokendir"] = d.tokendir
        try:
            d.start()
            admin = os.path.join(d.workdir, "admin.sock")
            res["sign"] = d.sign("main", {"sub": "u1", "aud": "api://orders"}).status
            res["refused"] = d.sign("main", {"sub": "u1"}).status  # aud missing: 400
            res["jwks"] = d.jwks("main")
            res["health"] = d.unix_request("GET", "/readyz").status
            res["keys"] = harness.unix_http(admin, "GET", "/v1/keys").status
            res["status"] = harness.unix_http(admin, "GET", "/v1/status").status
            r = harness.unix_http(admin, "POST", "/v1/issuers/main/rotate", body={"now": True},
                                  headers={"Content-Type": "application/json"})
            res["rotate"] = r.status
            time.sleep(1.5)  # the scheduler switches keys and makes the next one
            res["sign_after_rotate"] = d.sign("main", {"aud": "api://orders"}).status
            keys = harness.unix_http(admin, "GET", "/v1/keys").json()["keys"]
            retired = [k["kid"] for k in keys if k["state"] == "retired"]
            if retired:
                r = harness.unix_http(admin, "POST", "/v1/issuers/main/keys/%s/revoke"
                                      % retired[0], body={},
                                      headers={"Content-Type": "application/json"})
                res["revoke"] = r.status
            os.kill(d.tracee_pid(), signal.SIGHUP)
            time.sleep(1.0)
            res["sign_after_hup"] = d.sign("main", {"aud": "api://orders"}).status
            res["exit"] = d.stop()
            res["log"] = d.log()
        finally:
            d.close()
        return res

    def violations(self, pred):
        return ["%d %s(%s" % (pid, name, rest[:300]) for pid, name, rest, resumed in self.calls
                if not resumed and pred(name, rest)]

    def test_session_worked(self):
        r = self.results
        self.assertEqual(r["sign"], 200, r["log"])
        self.assertEqual(r["refused"], 400)
        self.assertTrue(r["jwks"]["keys"])
        self.assertEqual(r["health"], 200)
        self.assertEqual((r["keys"], r["status"], r["rotate"]), (200, 200, 200), r["log"])
        self.assertEqual(r["sign_after_rotate"], 200, r["log"])
        self.assertEqual(r.get("revoke", 200), 200, r["log"])
        self.assertEqual(r["sign_after_hup"], 200, r["log"])
        self.assertEqual(r["exit"], 0, r["log"])
        self.assertGreater(len(self.calls), 1000, "the trace is nearly empty")
        # The session's writes make the daemon run its SoftHSM touch child (hsm_resync()):
        # the trace, and so every check here, covers that child too.
        self.assertTrue(any(name == "execve" and '"--touch-token"' in rest
                            for _, name, rest, _ in self.calls), "no touch child was traced")

    def test_syscalls_in_filter(self):
        # This daemon binds its sockets and gives them a group, which the unit allows only with
        # own-sockets-drop-in.conf.example (the packaged setup has socket units instead).
        allow = allowed_syscalls(self.unit, self.own_sockets)
        used = {name for _, name, _, _ in self.calls}
        outside = sorted(used - allow)
        print("%d distinct system calls, all in the unit's filter" % len(used)
              if not outside else "outside the filter: %s" % outside)
        self.assertEqual(outside, [], "system calls the unit's SystemCallFilter= refuses "
                         "(EPERM under systemd): %s" % outside)
        # What the drop-in adds is the group of the socket files, nothing else.
        extra = sorted(used - allowed_syscalls(self.unit))
        self.assertTrue(set(extra) <= {"fchownat", "fchown", "chown", "lchown"}, extra)
        # [hsm] pin-cpus = yes, the default: the bare unit allows it, and it ran.
        self.assertIn("sched_setaffinity", used)
        self.assertIn("sched_setaffinity", allowed_syscalls(self.unit))
        self.assertNotIn("pin-cpus: cannot pin", self.results["log"])

    def test_address_families(self):
        ok = {"AF_UNIX", "AF_INET", "AF_INET6"}
        bad = self.violations(lambda n, a: n in ("socket", "socketpair")
                              and a.split(",")[0].strip() not in ok)
        self.assertEqual(bad, [], "sockets outside RestrictAddressFamilies=")

    def test_no_writable_executable_memory(self):
        def wx(n, a):
            if n in ("mmap", "mmap2"):
                return "PROT_EXEC" in a and "PROT_WRITE" in a
            if n in ("mprotect", "pkey_mprotect"):
                return "PROT_EXEC" in a
            return n == "shmat" and "SHM_EXEC" in a
        self.assertEqual(self.violations(wx), [], "refused under MemoryDenyWriteExecute=")

    def writes(self):
        """(syscall, path) of every file system change or open for writing, paths as given."""
        out = []
        for pid, n, a, resumed in self.calls:
            if resumed:
                continue
            p = first_path(a)
            if n in ("open", "openat", "openat2", "creat"):
                if p and re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", a):
                    out.append((n, p))
            elif n in ("mkdir", "mkdirat", "unlink", "unlinkat", "rmdir", "rename", "renameat",
                       "renameat2", "link", "linkat", "symlink", "symlinkat", "chmod",
                       "fchmodat", "chown", "lchown", "fchownat", "truncate", "mknod",
                       "mknodat", "utimensat", "bind"):
                if n == "bind":
                    m = re.search(r'sun_path="([^"]*)"', a)
                    p = m.group(1) if m else None
                if p:
                    out.append((n, p))
        return out

    def test_writes_only_runtime_and_token_dirs(self):
        wd = self.workdir
        allowed = (wd + "/", self.results["tokendir"] + "/")
        bad = []
        for n, p in self.writes():
            if p in PSEUDO_DEVICES or p.startswith("/proc/self/") or \
                    p.startswith("/proc/thread-self/"):
                continue
            if not p.startswith("/"):
                p = os.path.join(wd, p)  # the harness runs the daemon in its workdir
            if not p.startswith(allowed):
                bad.append("%s %s" % (n, p))
        self.assertEqual(bad, [], "writes outside the runtime/token directories "
                         "(read-only under ProtectSystem=strict)")

    def test_devices_and_proc(self):
        bad = []
        for pid, n, a, resumed in self.calls:
            if resumed or n not in ("open", "openat", "openat2", "stat", "newfstatat",
                                    "access", "faccessat", "faccessat2", "readlink",
                                    "readlinkat", "statx"):
                continue
            p = first_path(a)
            if not p:
                continue
            if p.startswith("/dev/") and p not in PSEUDO_DEVICES and \
                    not p.startswith(("/dev/shm/", "/dev/pts/", "/dev/fd/")):
                bad.append("%s %s (PrivateDevices=)" % (n, p))
            if p.startswith("/proc/") and \
                    not re.match(r"^/proc/(self|thread-self|\d+)(/|$)", p):
                bad.append("%s %s (ProcSubset=pid)" % (n, p))
        self.assertEqual(bad, [], "files the sandbox hides")

    def test_no_personality_change(self):
        bad = self.violations(lambda n, a: n == "personality"
                              and not a.startswith(("0xffffffff", "PER_LINUX)")))
        self.assertEqual(bad, [], "refused under LockPersonality=")


if __name__ == "__main__":
    unittest.main(verbosity=2)
