#!/usr/bin/python3
"""The Debian package, end to end on this machine (root; systemd need not run):

1. packaging/build-deb builds it from a scratch copy of the tree (never inside the checkout);
2. lintian reports no error (its warnings are printed);
3. dpkg -i installs it: binaries and --version, man pages (man -w), conffiles, units
   (systemd-analyze verify of the installed units, security exposure <= 2.0), sysusers.d
   user and groups, tmpfiles.d token directory, tokensignd --check-config of the packaged
   configuration;
4. the steps of docs/install.md that need no systemd: the PIN file, the SoftHSM token made by
   the service user in the state directory; then the installed daemon runs as the unit would
   run it (user tokensign and its groups, umask 0077, the PIN as a credential in
   /run/credentials/tokensignd.service, the sockets made from the installed socket units and
   passed by name, NOTIFY_SOCKET), and answers: READY=1, keyrotate status and list, a signature
   for a member of tokensign-clients (and refusals for others), the JWKS, SIGHUP, SIGTERM;
5. dpkg -r, then dpkg -P, remove it again.

What this cannot show without systemd as PID 1: the sandbox (namespaces, seccomp, ...),
LoadCredential= itself, socket activation by systemd itself, the watchdog and the journal.

Environment: SOURCE_ROOT, PROJECT_VERSION (tests/packaging/meson.build).
"""

import fcntl
import glob
import grp
import json
import os
import pwd
import re
import secrets
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

PKG = "tokensign"
EXPOSURE_MAX = 1.4  # issue 13
UNITDIR = "/lib/systemd/system"
UNITS = ["tokensignd.service", "tokensignd-sign.socket", "tokensignd-admin.socket",
         "tokensignd-jwks.socket"]
CONF = "/etc/tokensign/tokensignd.conf"
PIN = "/etc/tokensign/hsm-pin"
SOFTHSM_CONF = "/etc/tokensign/softhsm2.conf"
STATE = "/var/lib/tokensign"
CRED_DIR = "/run/credentials/tokensignd.service"

failures = []


def say(msg):
    print(msg, flush=True)


def check(cond, what, detail=""):
    if cond:
        say("ok    " + what)
    else:
        say("FAIL  " + what + (("\n" + detail.rstrip()) if detail else ""))
        failures.append(what)
    return cond


def run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, **kw)


def fatal(msg):
    say("FAIL  " + msg)
    print("0 passed, 1 failed")
    sys.exit(1)


def installed():
    r = run(["dpkg-query", "-W", "-f=${Status}", PKG])
    return r.returncode == 0 and "ok installed" in r.stdout


def read_unit(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and line[0] not in "#;[" and "=" in line:
                k, _, v = line.partition("=")
                out.setdefault(k.strip(), []).append(v.strip())
    return out


# ---- 1. build, 2. lintian ----

def build(src, out):
    say("building the package (packaging/build-deb) ...")
    r = run([os.path.join(src, "packaging", "build-deb"), out], timeout=1500)
    if r.returncode != 0:
        fatal("packaging/build-deb failed:\n" + r.stdout[-6000:])
    debs = [d for d in glob.glob(os.path.join(out, PKG + "_*.deb"))]
    if len(debs) != 1:
        fatal("expected one %s_*.deb in %s, found %s" % (PKG, out, debs))
    check(True, "package built: " + os.path.basename(debs[0]))
    changes = glob.glob(os.path.join(out, "*.changes"))
    return debs[0], changes[0]


def lintian(changes):
    r = run(["lintian", "--display-info", "--fail-on", "error", changes], timeout=600)
    tags = [l for l in r.stdout.splitlines() if re.match(r"^[EWIPNX]: ", l)]
    say("lintian:\n" + ("\n".join("  " + t for t in tags) if tags else "  (nothing)"))
    errors = [t for t in tags if t.startswith("E: ")]
    check(not errors and r.returncode == 0, "lintian: no errors", r.stdout)


# ---- 3. the installed files ----

def installed_files(version, src):
    r = run(["/usr/sbin/tokensignd", "--version"])
    check(r.stdout.strip() == "tokensignd %s" % version, "/usr/sbin/tokensignd --version",
          r.stdout)
    r = run(["/usr/sbin/keyrotate", "--version"])
    check(r.stdout.strip() == "keyrotate %s" % version, "/usr/sbin/keyrotate --version",
          r.stdout)
    for args, want in ((["keyrotate"], "/usr/share/man/man8/keyrotate.8"),
                       (["tokensignd"], "/usr/share/man/man8/tokensignd.8"),
                       (["tokensignd.conf"], "/usr/share/man/man5/tokensignd.conf.5"),
                       (["5", "tokensignd.conf"], "/usr/share/man/man5/tokensignd.conf.5")):
        r = run(["man", "-w", *args])
        check(r.returncode == 0 and r.stdout.strip().startswith(want),
              "man -w %s -> %s" % (" ".join(args), want), r.stdout)
    r = run(["dpkg-query", "-W", "-f=${Conffiles}", PKG])
    conffiles = [l.split()[0] for l in r.stdout.splitlines() if l.strip()]
    check(sorted(conffiles) == [SOFTHSM_CONF, CONF], "conffiles: %s" % conffiles)
    with open(CONF) as a, open(os.path.join(src, "config", "tokensignd.conf")) as b:
        check(a.read() == b.read(), "%s is config/tokensignd.conf" % CONF)
    for u in UNITS:
        check(os.path.isfile(os.path.join(UNITDIR, u)), "unit %s/%s" % (UNITDIR, u))
    r = run(["systemd-analyze", "verify", *[os.path.join(UNITDIR, u) for u in UNITS]],
            env=dict(os.environ, SYSTEMD_COLORS="0"))
    check(r.returncode == 0 and not r.stdout.strip(),
          "systemd-analyze verify of the installed units: clean", r.stdout)
    r = run(["systemd-analyze", "security", "--offline=true", "--no-pager",
             os.path.join(UNITDIR, "tokensignd.service")])
    m = re.search(r"Overall exposure level for tokensignd\.service: ([0-9.]+)", r.stdout)
    check(m and float(m.group(1)) <= EXPOSURE_MAX,
          "systemd-analyze security: exposure %s <= %.1f" % (m.group(1) if m else "?",
                                                             EXPOSURE_MAX), r.stdout)
    for f in ("/usr/lib/sysusers.d/tokensign.conf", "/usr/lib/tmpfiles.d/tokensign.conf",
              "/usr/share/doc/tokensign/examples/hsm-drop-in.conf.example",
              "/usr/share/doc/tokensign/examples/own-sockets-drop-in.conf.example"):
        check(os.path.isfile(f), f)
    try:
        pw = pwd.getpwnam("tokensign")
        check(pw.pw_uid < 1000 and pw.pw_dir == STATE, "system user tokensign (sysusers.d)")
    except KeyError:
        check(False, "system user tokensign (sysusers.d)")
        return
    for g in ("tokensign-clients", "tokensign-admin"):
        try:
            grp.getgrnam(g)
            check(True, "group %s" % g)
        except KeyError:
            check(False, "group %s" % g)
    for d in (STATE, STATE + "/tokens"):
        st = os.stat(d) if os.path.isdir(d) else None
        check(st and st.st_uid == pw.pw_uid and stat.S_IMODE(st.st_mode) == 0o700,
              "%s: tokensign, 0700 (tmpfiles.d)" % d)
    r = run(["/usr/sbin/tokensignd", "--check-config", "-c", CONF])
    check(r.returncode == 0, "tokensignd --check-config of the packaged configuration",
          r.stdout)


# ---- 4. the README's steps, and the daemon as the unit runs it ----

class Service:
    """The installed daemon, started the way tokensignd.service and its sockets start it."""

    def __init__(self):
        self.proc = None
        self.socks = []
        self.made = []  # paths to remove afterwards
        self.tmp = tempfile.mkdtemp(prefix="tokensign-deb-")
        os.chmod(self.tmp, 0o755)
        self.jwks = []

    def prepare_token(self):
        if not shutil.which("softhsm2-util"):
            fatal("softhsm2-util not found: apt-get install softhsm2 (Recommends)")
        # docs/install.md, step 3
        fd = os.open(PIN, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.made.append(PIN)
        os.write(fd, secrets.token_hex(16).encode())
        os.close(fd)
        with open(PIN) as f:
            self.pin = f.read()
        so_pin = secrets.token_hex(16)
        r = run(["runuser", "-u", "tokensign", "--", "env", "SOFTHSM2_CONF=" + SOFTHSM_CONF,
                 "softhsm2-util", "--init-token", "--free", "--label", "tokensign",
                 "--so-pin", so_pin, "--pin", self.pin])
        check(r.returncode == 0, "softhsm2-util --init-token as tokensign (install.md)",
              r.stdout)
        uid = pwd.getpwnam("tokensign").pw_uid
        owned = all(os.stat(os.path.join(dp, n)).st_uid == uid
                    for dp, dns, fns in os.walk(STATE + "/tokens") for n in dns + fns)
        check(owned and os.listdir(STATE + "/tokens"), "the token belongs to tokensign")

    def credential(self):
        # What LoadCredential=hsm-pin:/etc/tokensign/hsm-pin makes of the PIN file.
        pw = pwd.getpwnam("tokensign")
        if not os.path.isdir("/run/credentials"):
            os.mkdir("/run/credentials", 0o755)
            self.made.append("/run/credentials")
        os.mkdir(CRED_DIR, 0o500)
        self.made.append(CRED_DIR)
        shutil.copy(PIN, CRED_DIR + "/hsm-pin")
        os.chmod(CRED_DIR + "/hsm-pin", 0o400)
        os.chown(CRED_DIR + "/hsm-pin", pw.pw_uid, pw.pw_gid)
        os.chown(CRED_DIR, pw.pw_uid, pw.pw_gid)

    def sockets(self):
        """The installed socket units' sockets, made as systemd makes them."""
        made_run = not os.path.exists("/run/tokensignd")
        for u in ("tokensignd-sign.socket", "tokensignd-admin.socket",
                  "tokensignd-jwks.socket"):
            s = read_unit(os.path.join(UNITDIR, u))
            name = s["FileDescriptorName"][0]
            for listen in s["ListenStream"]:
                if listen.startswith("/"):
                    os.makedirs(os.path.dirname(listen), mode=int(s["DirectoryMode"][0], 8),
                                exist_ok=True)
                    if os.path.exists(listen):
                        os.unlink(listen)
                    sk = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sk.bind(listen)
                    os.chmod(listen, int(s["SocketMode"][0], 8))
                    os.chown(listen, 0, grp.getgrnam(s["SocketGroup"][0]).gr_gid)
                    self.made.append(listen)
                else:
                    m = re.match(r"^\[(.*)\]:(\d+)$|^(.*):(\d+)$", listen)
                    v6 = m.group(1) is not None
                    host, port = (m.group(1), int(m.group(2))) if v6 else \
                        (m.group(3), int(m.group(4)))
                    sk = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET,
                                       socket.SOCK_STREAM)
                    sk.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if v6:
                        sk.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    try:
                        sk.bind((host, port))
                    except OSError as e:
                        # Another process has the port, or no IPv6 here: the test stands in
                        # for a drop-in that moves the address.
                        sk.close()
                        if v6:
                            say("note  %s: %s; not served in this test" % (listen, e))
                            continue
                        sk = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                        sk.bind((host, 0))
                        say("note  %s: %s; serving the JWKS on port %d instead"
                            % (listen, e, sk.getsockname()[1]))
                    self.jwks.append(sk.getsockname()[:2])
                sk.listen(128)
                self.socks.append((name, sk))
        if made_run:
            self.made.insert(0, "/run/tokensignd")

    def start(self):
        pw = pwd.getpwnam("tokensign")
        unit = read_unit(os.path.join(UNITDIR, "tokensignd.service"))
        # RuntimeDirectory=tokensignd, RuntimeDirectoryMode=0755
        os.chown("/run/tokensignd", pw.pw_uid, pw.pw_gid)
        os.chmod("/run/tokensignd", int(unit["RuntimeDirectoryMode"][0], 8))
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        npath = os.path.join(self.tmp, "notify")
        self.notify.bind(npath)
        os.chmod(npath, 0o777)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "NOTIFY_SOCKET": npath, "CREDENTIALS_DIRECTORY": CRED_DIR,
               "LISTEN_FDS": str(len(self.socks)),
               "LISTEN_FDNAMES": ":".join(n for n, _ in self.socks)}
        for e in unit.get("Environment", []):
            k, _, v = e.partition("=")
            env[k] = v
        exec_start = unit["ExecStart"][0].split()
        # fds 3.. in unit order, as systemd passes them; LISTEN_PID is the exec'ing process
        # (copies far above 3..3+n, so that placing them cannot overwrite one another)
        high = [fcntl.fcntl(sk.fileno(), fcntl.F_DUPFD_CLOEXEC, 100) for _, sk in self.socks]
        n = len(high)

        def place_fds():
            for i, h in enumerate(high):
                os.dup2(h, 3 + i)
            for h in high:
                os.close(h)

        groups = [grp.getgrnam(g).gr_gid
                  for g in unit.get("SupplementaryGroups", [""])[-1].split()]
        self.log = open(os.path.join(self.tmp, "daemon.log"), "w+")
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", 'export LISTEN_PID=$$; exec "$0" "$@"', *exec_start],
            env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            user=pw.pw_uid, group=pw.pw_gid, extra_groups=groups,
            umask=int(unit["UMask"][0], 8), cwd="/", preexec_fn=place_fds,
            pass_fds=list(range(3, 3 + n)) + high)
        for h in high:
            os.close(h)
        self.sign_inode = os.stat("/run/tokensignd/sign.sock").st_ino
        deadline = time.monotonic() + 30
        ready = False
        while time.monotonic() < deadline and not ready and self.proc.poll() is None:
            rl, _, _ = select.select([self.notify], [], [], 0.2)
            if rl:
                msg = self.notify.recv(4096).decode(errors="replace")
                ready = "READY=1" in msg.split("\n")
        check(ready, "the installed daemon, as the unit runs it, sends READY=1", self.logtext())
        return ready

    def logtext(self):
        if not hasattr(self, "log"):
            return ""
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode if self.proc else None

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for _, sk in self.socks:
            sk.close()
        for p in reversed(self.made):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.lexists(p):
                os.unlink(p)
        shutil.rmtree(self.tmp, ignore_errors=True)


def exercise(svc, src):
    sys.path.insert(0, os.path.join(src, "tests", "integration"))
    import harness  # noqa: E402  (unix_http, tcp_http, run_as)

    st = os.stat("/run/tokensignd/sign.sock")
    check(st.st_ino == svc.sign_inode and st.st_uid == 0,
          "it serves the passed sign socket (the file is still the socket unit's)")
    st = open("/proc/%d/status" % svc.proc.pid).read()
    uid = pwd.getpwnam("tokensign").pw_uid
    check(re.search(r"^Uid:\s+%d\s+%d" % (uid, uid), st, re.M), "it runs as user tokensign")
    r = run(["keyrotate", "status"])
    check(r.returncode == 0 and "token: ok" in r.stdout, "keyrotate status (as root)",
          r.stdout)
    r = run(["keyrotate", "--json", "list"])
    keys = json.loads(r.stdout) if r.returncode == 0 else []
    check(len(keys) == 2 and {k["state"] for k in keys} == {"active", "pending"},
          "keyrotate --json list: one active and one pending key", r.stdout)
    issuer = keys[0]["issuer"] if keys else "login"

    sign_sock = read_unit(os.path.join(UNITDIR, "tokensignd-sign.socket"))["ListenStream"][0]
    clients = grp.getgrnam("tokensign-clients").gr_gid
    body = {"claims": {"sub": "user-42", "aud": "api://orders"}}
    hdr = {"Content-Type": "application/json"}
    path = "/v1/issuers/%s/sign" % issuer

    def sign():
        return harness.unix_http(sign_sock, "POST", path, body=body, headers=hdr)

    r = harness.run_as(65534, 65534, [clients], sign)
    check(r.status == 200, "a member of tokensign-clients gets a token", repr(r))
    kid = r.json().get("kid") if r.status == 200 else None
    r = harness.run_as(0, 0, [], sign)
    check(r.status == 403, "root, not in tokensign-clients, is refused (403)", repr(r))
    try:
        harness.run_as(65534, 65534, [], sign)
        check(False, "nobody without the group cannot connect (socket mode 0660)")
    except PermissionError:
        check(True, "nobody without the group cannot connect (socket mode 0660)")
    if svc.jwks:
        host, port = svc.jwks[0]
        r = harness.tcp_http(host, port, "GET", "/%s/.well-known/jwks.json" % issuer)
        kids = [k["kid"] for k in r.json()["keys"]] if r.status == 200 else []
        check(r.status == 200 and kid in kids, "the JWKS on %s:%d holds the signing key"
              % (host, port), repr(r))
    svc.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    r = harness.run_as(65534, 65534, [clients], sign)
    check(svc.proc.poll() is None and r.status == 200, "still signing after SIGHUP (reload)",
          repr(r) + svc.logtext())
    code = svc.stop()
    check(code == 0, "SIGTERM: exit status 0 (got %s)" % code, svc.logtext())


# ---- main ----

def main():
    src = os.environ.get("SOURCE_ROOT")
    version = os.environ.get("PROJECT_VERSION")
    if not src or not version:
        fatal("SOURCE_ROOT and PROJECT_VERSION must be set: run through meson test")
    if os.geteuid() != 0:
        fatal("this test installs a package: it must run as root")
    for tool in ("dpkg-buildpackage", "dh", "lintian", "scdoc", "systemd-analyze", "man"):
        if not shutil.which(tool):
            fatal("%s not found: scripts/install-deps installs what this test needs" % tool)
    if installed():
        fatal("%s is already installed on this machine; this test installs and purges it. "
              "Remove it first (dpkg -P %s)" % (PKG, PKG))
    state_existed = os.path.exists(STATE)
    out = tempfile.mkdtemp(prefix="tokensign-deb-out-")
    svc = None
    try:
        deb, changes = build(src, out)
        lintian(changes)
        r = run(["dpkg", "-i", deb], timeout=300)
        if not check(r.returncode == 0, "dpkg -i " + os.path.basename(deb), r.stdout):
            return
        installed_files(version, src)
        svc = Service()
        svc.prepare_token()
        svc.credential()
        svc.sockets()
        if svc.start():
            exercise(svc, src)
    finally:
        if svc:
            svc.cleanup()
        if installed():
            r = run(["dpkg", "-r", PKG], timeout=300)
            check(r.returncode == 0 and not os.path.exists("/usr/sbin/tokensignd")
                  and os.path.exists(CONF), "dpkg -r: binaries gone, conffiles kept",
                  r.stdout)
            r = run(["dpkg", "-P", PKG], timeout=300)
            check(r.returncode == 0 and not installed() and not os.path.exists(CONF)
                  and not any(os.path.exists(os.path.join(UNITDIR, u)) for u in UNITS),
                  "dpkg -P: conffiles and units gone", r.stdout)
        if not state_existed:
            shutil.rmtree(STATE, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    print("%s" % ("all checks passed" if not failures else
                  "%d check(s) failed: %s" % (len(failures), "; ".join(failures))))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
