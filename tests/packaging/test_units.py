#!/usr/bin/python3
"""The shipped systemd files: systemd-analyze verify is clean, systemd-analyze security rates the
service at an exposure of at most EXPOSURE_MAX (1.4), the units carry the settings the daemon
relies on, the own-sockets drop-in applies and costs what it says, the socket units agree with
the packaged configuration, and the sysusers.d/tmpfiles.d files create what the units and the
configuration name.

Environment (tests/packaging/meson.build):
    TOKENSIGND      the built daemon (ExecStart= is pointed at it in a temp copy)
    SERVICE_TEMPLATE packaging/systemd/tokensignd.service.in
    SERVICE_UNIT    the configured tokensignd.service (build dir), made with
    SBINDIR, SYSCONFDIR the build's own directories
The checks run on the template rendered as the Debian package renders it (/usr/sbin, /etc),
after checking that meson's configured unit is the same rendering with the build's directories.
    SOCKET_UNITS    the three socket units, ':'-separated (source dir)
    DROP_IN_EXAMPLE packaging/systemd/hsm-drop-in.conf.example
    OWN_SOCKETS_DROP_IN packaging/systemd/own-sockets-drop-in.conf.example
    SYSUSERS        packaging/systemd/tokensign.sysusers
    TMPFILES        packaging/systemd/tokensign.tmpfiles
    SOFTHSM_CONF    packaging/softhsm2.conf (the packaged /etc/tokensign/softhsm2.conf)
    CONFIG          config/tokensignd.conf (the packaged /etc/tokensign/tokensignd.conf)
    MAN_PAGES       the generated man pages, ':'-separated (build dir)
    EXPOSURE_MAX    optional, default 2.0 (meson sets 1.4)
"""

import configparser
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
EXPOSURE_MAX = float(os.environ.get("EXPOSURE_MAX", "2.0"))
INSTALLED_DAEMON = "/usr/sbin/tokensignd"
# tokensignd(8), EXIT STATUS: the token refused the PIN.
EXIT_PIN_REFUSED = 77


def env_path(name):
    v = os.environ.get(name)
    if not v:
        raise AssertionError("%s is not set: run this through meson test" % name)
    return v


def duration_seconds(text):
    """A systemd time span of the forms the unit uses ("20s", "30min", "2min 30s", "90")."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "hr": 3600}
    total = 0
    for num, unit in re.findall(r"(\d+)\s*([a-z]*)", text):
        total += int(num) * units[unit]
    return total


def render(template, sbindir, sysconfdir):
    text = template.replace("@sbindir@", sbindir).replace("@sysconfdir@", sysconfdir)
    left = re.findall(r"@[a-z_]+@", text)
    if left:
        raise AssertionError("unreplaced %s in the unit template" % left)
    return text


def read_unit(path):
    """A unit file as {section: [(key, value), ...]} in file order (keys may repeat)."""
    out, section = {}, None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                out.setdefault(section, [])
                continue
            key, _, value = line.partition("=")
            out[section].append((key.strip(), value.strip()))
    return out


def values(unit, section, key):
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit, section, key):
    vs = values(unit, section, key)
    return vs[-1] if vs else None


def read_config(path):
    """tokensignd.conf with repeated 'listen' kept (configparser would keep the last one)."""
    conf, section = {}, None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in ";#":
                continue
            if line.startswith("["):
                section = line[1:line.index("]")]
                conf.setdefault(section, {})
                continue
            key, _, v = line.partition("=")
            v = re.split(r"\s;", v, maxsplit=1)[0].strip()
            conf[section].setdefault(key.strip(), []).append(v)
    return conf


class Units(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(SYSTEMD_ANALYZE):
            raise AssertionError("systemd-analyze not found: apt-get install systemd")
        cls.daemon = env_path("TOKENSIGND")
        with open(env_path("SERVICE_TEMPLATE")) as f:
            template = f.read()
        with open(env_path("SERVICE_UNIT")) as f:
            configured = f.read()
        if render(template, env_path("SBINDIR"), env_path("SYSCONFDIR")) != configured:
            raise AssertionError("%s is not %s with @sbindir@ and @sysconfdir@ replaced"
                                 % (env_path("SERVICE_UNIT"), env_path("SERVICE_TEMPLATE")))
        cls.socket_srcs = env_path("SOCKET_UNITS").split(":")
        cls.tmp = tempfile.mkdtemp(prefix="tokensign-units-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        cls.unitdir = os.path.join(cls.tmp, "units")
        os.mkdir(cls.unitdir)
        # The installed unit names /usr/sbin/tokensignd; verify wants an executable there, so a
        # copy points at the built binary, and nothing else changes.
        text = render(template, "/usr/sbin", "/etc")
        if ("ExecStart=%s " % INSTALLED_DAEMON) not in text:
            raise AssertionError("ExecStart= does not start %s -c ...; the package would "
                                 "not start the installed daemon" % INSTALLED_DAEMON)
        cls.service_src = os.path.join(cls.tmp, "tokensignd.service")  # as packaged
        with open(cls.service_src, "w") as f:
            f.write(text)
        cls.service = os.path.join(cls.unitdir, "tokensignd.service")
        with open(cls.service, "w") as f:
            f.write(text.replace("ExecStart=%s " % INSTALLED_DAEMON,
                                 "ExecStart=%s " % cls.daemon))
        cls.sockets = []
        for s in cls.socket_srcs:
            dst = os.path.join(cls.unitdir, os.path.basename(s))
            shutil.copy(s, dst)
            cls.sockets.append(dst)
        # verify --man=yes runs man(1) for every Documentation=man:...: point it at our pages.
        cls.mandir = os.path.join(cls.tmp, "man")
        for page in env_path("MAN_PAGES").split(":"):
            sect = page.rsplit(".", 1)[1]
            os.makedirs(os.path.join(cls.mandir, "man" + sect), exist_ok=True)
            shutil.copy(page, os.path.join(cls.mandir, "man" + sect))
        cls.env = dict(os.environ, MANPATH=cls.mandir, SYSTEMD_PAGER="", SYSTEMD_COLORS="0",
                       SYSTEMD_LOG_COLOR="0")
        cls.unit = read_unit(cls.service_src)

    def analyze(self, *args):
        return subprocess.run([SYSTEMD_ANALYZE, *args], env=self.env, cwd=self.unitdir,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    # -- systemd-analyze --

    def test_verify_is_clean(self):
        """No error and no warning at all (an unknown key is only a warning, with exit 0)."""
        r = self.analyze("verify", "--man=yes", self.service, *self.sockets)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertEqual(r.stdout.strip(), "", "systemd-analyze verify said:\n" + r.stdout)

    def test_verify_with_hsm_drop_in(self):
        """The documented HSM drop-in applies cleanly on top of the unit."""
        d = self.service + ".d"
        os.makedirs(d, exist_ok=True)
        try:
            # as shipped, and with every commented-out setting taken in (each in its section)
            with open(env_path("DROP_IN_EXAMPLE")) as f:
                shipped = f.read()
            everything = re.sub(r"(?m)^#(\[?[A-Z])", r"\1", shipped)
            self.assertNotEqual(everything, shipped)
            for text in (everything, shipped):
                with open(os.path.join(d, "hsm.conf"), "w") as f:
                    f.write(text)
                r = self.analyze("verify", "--man=no", self.service)
                self.assertEqual(r.returncode, 0, r.stdout)
                self.assertEqual(r.stdout.strip(), "", "with the drop-in:\n" + text + r.stdout)
            # and it does relax the sandbox (else it would not help a USB HSM)
            r = self.analyze("security", "--offline=true", "--no-pager", self.service)
            self.assertIn("PrivateDevices=", r.stdout)
            self.assertRegex(r.stdout, r"✗ PrivateDevices=")
        finally:
            shutil.rmtree(d)

    def test_own_sockets_drop_in(self):
        """own-sockets-drop-in.conf.example applies cleanly, gives the daemon the groups the
        packaged configuration names for its sockets and chown, and costs what it says."""
        with open(env_path("OWN_SOCKETS_DROP_IN")) as f:
            text = f.read()
        drop = read_unit(env_path("OWN_SOCKETS_DROP_IN"))
        conf = read_config(env_path("CONFIG"))
        self.assertEqual(set(value(drop, "Service", "SupplementaryGroups").split()),
                         {conf["sign"]["group"][0], conf["admin"]["group"][0]})
        self.assertEqual(values(drop, "Service", "SystemCallFilter"), ["@chown"])
        base, _ = self.exposure()
        d = self.service + ".d"
        os.makedirs(d, exist_ok=True)
        try:
            with open(os.path.join(d, "own-sockets.conf"), "w") as f:
                f.write(text)
            r = self.analyze("verify", "--man=no", self.service)
            self.assertEqual(r.returncode, 0, r.stdout)
            self.assertEqual(r.stdout.strip(), "", "with the drop-in:\n" + r.stdout)
            level, _ = self.exposure()
        finally:
            shutil.rmtree(d)
        said = re.search(r"exposure ([0-9.]+) -> ([0-9.]+)", text)
        self.assertIsNotNone(said, "the drop-in does not say what it costs")
        self.assertEqual((float(said.group(1)), float(said.group(2))), (base, level))

    def exposure(self):
        r = self.analyze("security", "--offline=true", "--no-pager",
                         "--threshold=%d" % round(EXPOSURE_MAX * 10), self.service)
        m = re.search(r"Overall exposure level for tokensignd\.service: ([0-9.]+)", r.stdout)
        self.assertIsNotNone(m, "no exposure level in:\n" + r.stdout)
        return float(m.group(1)), r

    def test_security_exposure(self):
        level, r = self.exposure()
        print("exposure of tokensignd.service: %.1f (at most %.1f)" % (level, EXPOSURE_MAX))
        self.assertLessEqual(level, EXPOSURE_MAX,
                             "exposure %.1f > %.1f:\n%s" % (level, EXPOSURE_MAX, r.stdout))
        # --threshold makes systemd-analyze itself fail above the limit (scale 0..100)
        self.assertEqual(r.returncode, 0, r.stdout)

    # -- settings the daemon relies on --

    def test_service_settings(self):
        u = self.unit
        S = "Service"
        expect = {
            "Type": "notify",
            "ExecReload": "/bin/kill -HUP $MAINPID",
            "User": "tokensign",
            "Group": "tokensign",
            "LoadCredential": "hsm-pin:/etc/tokensign/hsm-pin",
            "LimitCORE": "0",
            # room for the connection caps and their reserve (docs/operations.md, "Limits")
            "LimitNOFILE": "65536",
            "RuntimeDirectory": "tokensignd",
            "RuntimeDirectoryPreserve": "yes",
            "StateDirectory": "tokensign",
            "Environment": "SOFTHSM2_CONF=/etc/tokensign/softhsm2.conf",
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "PrivateDevices": "yes",
            "MemoryDenyWriteExecute": "yes",
            "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
            "CapabilityBoundingSet": "",
            "UMask": "0077",
            # journald must not drop audit records (the daemon limits client-caused lines)
            "LogRateLimitIntervalSec": "0",
        }
        for k, v in expect.items():
            self.assertEqual(value(u, S, k), v, "[Service] %s=" % k)
        self.assertRegex(value(u, S, "ExecStart"),
                         r"^/usr/sbin/tokensignd -c /etc/tokensign/tokensignd\.conf$")
        self.assertTrue(value(u, S, "WatchdogSec"), "WatchdogSec= is not set")
        self.assertIn("@system-service", values(u, S, "SystemCallFilter"))
        # The socket units give the socket files their groups: no supplementary groups and no
        # chown, which only a daemon binding its own sockets needs (own-sockets drop-in). Their
        # weight pays for sched_setaffinity, [hsm] pin-cpus = yes (the default).
        self.assertIsNone(value(u, S, "SupplementaryGroups"))
        filters = " ".join(values(u, S, "SystemCallFilter")).split()
        self.assertNotIn("@chown", filters)
        self.assertIn("sched_setaffinity", filters)
        # the runtime directory holds the sockets: clients must be able to traverse it
        self.assertEqual(value(u, S, "RuntimeDirectoryMode"), "0755")
        # A wrong PIN (exit status 77, tokensignd(8) EXIT STATUS) is never restarted into
        # another login; other failures are, at most StartLimitBurst= times.
        prevent = " ".join(values(u, S, "RestartPreventExitStatus")).split()
        self.assertIn(str(EXIT_PIN_REFUSED), prevent)
        self.assertEqual(value(u, S, "Restart"), "on-failure")
        burst = int(value(u, "Unit", "StartLimitBurst") or 0)
        interval = duration_seconds(value(u, "Unit", "StartLimitIntervalSec") or "0")
        delay = duration_seconds(value(u, S, "RestartSec") or "0")
        self.assertGreater(burst, 1, "StartLimitBurst=")
        self.assertGreaterEqual(delay, 10, "RestartSec=: a fixed delay, no backoff in 252")
        # reachable: burst starts RestartSec apart fit in the interval, or it never applies
        self.assertLess(burst * delay, interval, "StartLimitIntervalSec= is never reached")
        # PrivateUsers= would map every caller to nobody in SO_PEERCRED
        self.assertNotIn(value(u, S, "PrivateUsers"), ("yes", "true", "1"))
        for sock in ("tokensignd-sign.socket", "tokensignd-admin.socket",
                     "tokensignd-jwks.socket"):
            self.assertIn(sock, " ".join(values(u, "Unit", "Wants")))
            self.assertIn(sock, " ".join(values(u, "Unit", "After")))

    def test_exit_status_documented(self):
        """The status the unit does not restart is the one tokensignd(8) documents for a
        refused PIN."""
        page = [p for p in env_path("MAN_PAGES").split(":")
                if os.path.basename(p) == "tokensignd.8"]
        self.assertEqual(len(page), 1, env_path("MAN_PAGES"))
        with open(page[0]) as f:
            text = f.read()
        m = re.search(r'^\.SH "?EXIT STATUS"?$(.*?)^\.SH ', text, re.M | re.S)
        self.assertIsNotNone(m, "no EXIT STATUS section in " + page[0])
        self.assertIn(str(EXIT_PIN_REFUSED), m.group(1))
        self.assertIn("PIN", m.group(1))
        self.assertIn("RestartPreventExitStatus", m.group(1))

    def test_sockets_match_packaged_config(self):
        conf = read_config(env_path("CONFIG"))
        units = {os.path.basename(p): read_unit(p) for p in self.socket_srcs}
        self.assertEqual(set(units), {"tokensignd-sign.socket", "tokensignd-admin.socket",
                                      "tokensignd-jwks.socket"})
        for name, section in (("sign", "sign"), ("admin", "admin")):
            u = units["tokensignd-%s.socket" % name]
            self.assertEqual(value(u, "Socket", "FileDescriptorName"), name)
            self.assertEqual(value(u, "Socket", "Service"), "tokensignd.service")
            self.assertEqual(values(u, "Socket", "ListenStream"), conf[section]["socket"])
            self.assertEqual(value(u, "Socket", "SocketMode"), conf[section]["mode"][0])
            self.assertEqual(value(u, "Socket", "SocketGroup"), conf[section]["group"][0])
            self.assertEqual(os.path.dirname(conf[section]["socket"][0]),
                             "/run/" + value(self.unit, "Service", "RuntimeDirectory"))
        u = units["tokensignd-jwks.socket"]
        self.assertEqual(value(u, "Socket", "FileDescriptorName"), "jwks")
        self.assertEqual(value(u, "Socket", "Service"), "tokensignd.service")
        self.assertEqual(values(u, "Socket", "ListenStream"), conf["jwks"]["listen"])
        for p, un in units.items():
            self.assertEqual(values(un, "Install", "WantedBy"), ["sockets.target"], p)

    # -- sysusers.d and tmpfiles.d --

    def test_sysusers_and_tmpfiles(self):
        """systemd-sysusers and systemd-tmpfiles, run against a scratch root, create the user,
        the groups the units and the configuration name, and the token directory."""
        root = os.path.join(self.tmp, "root")
        os.makedirs(os.path.join(root, "etc"))
        for f in ("passwd", "group", "shadow", "gshadow"):
            open(os.path.join(root, "etc", f), "w").close()
        r = subprocess.run(["systemd-sysusers", "--root=" + root, env_path("SYSUSERS")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.assertEqual(r.returncode, 0, r.stdout)
        with open(os.path.join(root, "etc/passwd")) as f:
            users = {l.split(":")[0]: l.strip().split(":") for l in f if l.strip()}
        with open(os.path.join(root, "etc/group")) as f:
            groups = {l.split(":")[0] for l in f if l.strip()}
        self.assertIn("tokensign", users)
        self.assertEqual(users["tokensign"][5], "/var/lib/tokensign")
        self.assertIn(users["tokensign"][6], ("/usr/sbin/nologin", "/sbin/nologin"))
        self.assertLess(int(users["tokensign"][2]), 1000, "not a system user")
        conf = read_config(env_path("CONFIG"))
        named = {conf["sign"]["group"][0], conf["admin"]["group"][0], "tokensign"}
        named |= set(value(read_unit(env_path("OWN_SOCKETS_DROP_IN")), "Service",
                           "SupplementaryGroups").split())
        named |= {value(read_unit(p), "Socket", "SocketGroup") for p in self.socket_srcs
                  if value(read_unit(p), "Socket", "SocketGroup")}
        for issuer in (s for s in conf if s.startswith("issuer:")):
            for item in conf[issuer]["allow"][0].split(","):
                if item.strip().startswith("group:"):
                    named.add(item.strip()[6:])
        self.assertLessEqual(named, groups, "groups named but not created")

        r = subprocess.run(["systemd-tmpfiles", "--root=" + root, "--create",
                            env_path("TMPFILES")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.assertEqual(r.returncode, 0, r.stdout)
        uid = int(users["tokensign"][2])
        with open(env_path("SOFTHSM_CONF")) as f:
            tokendir = re.search(r"^directories\.tokendir\s*=\s*(\S+)", f.read(), re.M).group(1)
        self.assertTrue(tokendir.startswith("/var/lib/%s/" % value(self.unit, "Service",
                                                                   "StateDirectory")))
        for d in ("/var/lib/tokensign", tokendir):
            st = os.stat(root + d)
            self.assertEqual(st.st_uid, uid, d)
            self.assertEqual(st.st_mode & 0o777, 0o700, d)


if __name__ == "__main__":
    unittest.main(verbosity=2)
