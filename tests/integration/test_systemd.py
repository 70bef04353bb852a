#!/usr/bin/python3
"""tokensignd as a systemd service, tested without systemd as PID 1 (issue 5, "Tests"):

- sd_notify: READY=1 only once every socket listens, STATUS= naming each issuer's signing kid,
  WATCHDOG=1 every WATCHDOG_USEC/2 only while the token answers (p11shim makes it stop
  answering), RELOADING=1 then READY=1 around a SIGHUP reload.
- Socket activation through systemd-socket-activate with FileDescriptorName sign, admin, jwks;
  a passed socket is never unlinked, a wrongly named one stops the daemon at start, a passed
  admin socket is closed when the configuration has no [admin] section.
- SIGHUP reload with clients signing throughout: add and remove an issuer, change a policy,
  a broken file, a changed [hsm] section, a changed [jwks] listen address.
- PR_SET_DUMPABLE 0: a SIGSEGV leaves no core file even with an unlimited core limit.
- Audit records on stderr (no JOURNAL_STREAM): one "signed" JSON line per token with only
  issuer, kid, jti, aud, exp, uid, pid, result; one "refused" line per refusal; lifecycle
  lines; never a claim value or the token.

Environment (tests/shim/meson.build): TOKENSIGND, P11PROBE, SOFTHSM_MODULE, P11SHIM; and
systemd-socket-activate on PATH (or SYSTEMD_SOCKET_ACTIVATE)."""

import ctypes
import json
import os
import re
import resource
import secrets
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import harness

ISS = harness.DEFAULT_ISSUER["iss"]
CLAIMS = {"sub": "user-42", "aud": "api://orders"}
NOTIFY_TIMEOUT = 20.0
EXIT_TIMEOUT = 20.0
STATUS_SIGNING = re.compile(r"^STATUS=signing:((?: [A-Za-z0-9_.-]+=\S+)+)$")


def socket_activate_path():
    p = os.environ.get("SYSTEMD_SOCKET_ACTIVATE") or shutil.which("systemd-socket-activate")
    if not p:
        raise harness.HarnessError("systemd-socket-activate not found (package systemd)")
    return p


def _die_with_parent():
    """preexec_fn (copied from harness): SIGKILL to the child when the test process dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


def _unlimited_core():
    _die_with_parent()
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def lines_of(msg):
    return msg.split("\n")


def is_ready(msg):
    return "READY=1" in lines_of(msg)


def signing_status(msg):
    """{issuer: kid prefix} of a "STATUS=signing: a=KID b=KID" line of msg, or None."""
    for line in lines_of(msg):
        m = STATUS_SIGNING.match(line)
        if m:
            return dict(item.split("=", 1) for item in m.group(1).split())
    return None


class NotifyListener:
    """A datagram socket at path that records every sd_notify message (monotonic time, text)
    from a thread."""

    def __init__(self, path):
        if os.path.exists(path):
            os.unlink(path)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.msgs = []
        self.cond = threading.Condition()
        self.closing = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.closing:
            rl, _, _ = select.select([self.sock], [], [], 0.05)
            if not rl:
                continue
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            t = time.monotonic()
            text = data.decode("utf-8", "replace")
            with self.cond:
                self.msgs.append((t, text))
                self.cond.notify_all()

    def mark(self):
        with self.cond:
            return len(self.msgs)

    def since(self, start=0):
        with self.cond:
            return list(self.msgs[start:])

    def wait_for(self, pred, start=0, timeout=NOTIFY_TIMEOUT, alive=None):
        """Index of the first message at or after start for which pred(text) holds; None after
        timeout, or as soon as alive() turns false (the process died)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            i = start
            while True:
                while i < len(self.msgs):
                    if pred(self.msgs[i][1]):
                        return i
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or (alive is not None and not alive()):
                    return None
                self.cond.wait(min(left, 0.1))

    def close(self):
        self.closing = True
        self.thread.join(2)
        self.sock.close()


# sendmsg(2) by machine, for /proc/PID/syscall
SENDMSG_NR = {"x86_64": 46, "aarch64": 211, "riscv64": 211, "loongarch64": 211,
              "ppc64le": 341, "ppc64": 341, "s390x": 370, "i686": 370, "i386": 370,
              "armv7l": 296}


def _proc_field(pid, name):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return None


class NotifyGate:
    """A NOTIFY_SOCKET whose receive queue is kept full, so that each sd_notify() of the daemon
    blocks in sendmsg() until the test takes one datagram: the daemon advances one message at a
    time, and the test looks at the world while the daemon is stuck sending each message.

    The queue is first filled with filler datagrams (from fresh sockets until even a fresh one
    gets EAGAIN: net.unix.max_dgram_qlen is reached). Then, step j: wait until the daemon's main
    thread sleeps in sendmsg (/proc/PID/syscall) with more voluntary context switches than at
    step j-1 (so it is the next message, not the one just released), call probe(), take one
    datagram. The j-th datagram that is not a filler is the daemon's j-th message, and it was
    the one pending during probe j. (sd_notify runs on the daemon's main thread.)

    Reading /proc/PID/syscall of the daemon (which is not dumpable) needs CAP_SYS_PTRACE; without
    it "asleep in a syscall" is approximated by "asleep, no context switch for 150 ms", which can
    only make a probe early (a false failure, never a false pass).

    The daemon must keep sending after the message stop() selects (e.g. WATCHDOG_USEC set):
    that message is read only once the fillers before it are."""

    FILLER = b"X-TEST-FILLER=1"

    def __init__(self, path):
        if os.path.exists(path):
            os.unlink(path)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(NOTIFY_TIMEOUT)
        self.fillers = 0
        for _ in range(4096):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as f:
                f.setblocking(False)
                sent = 0
                try:
                    while sent < 64:
                        f.sendto(self.FILLER, path)
                        sent += 1
                except BlockingIOError:
                    pass
                self.fillers += sent
                if sent == 0:
                    break
        else:
            raise harness.HarnessError("cannot fill the notify queue")

    def run(self, d, probe, stop, timeout=harness.READY_TIMEOUT):
        """Starts d with NOTIFY_SOCKET = the gate; steps until stop(message) holds for a daemon
        message. Returns (messages, probes), probes[j] = probe() while message j was pending."""
        nr = SENDMSG_NR.get(os.uname().machine)
        if nr is None:
            raise harness.HarnessError("sendmsg number unknown on " + os.uname().machine)
        d.extra_env["NOTIFY_SOCKET"] = self.path
        d.spawn()
        pid = d.proc.pid
        exact = True
        deadline = time.monotonic() + timeout
        switches = -1
        msgs, probes = [], []
        while True:
            while True:
                if d.proc.poll() is not None:
                    raise harness.HarnessError("tokensignd exited with %d; messages %r; "
                                               "log:\n%s" % (d.proc.returncode, msgs,
                                                              d.brief()))
                if time.monotonic() > deadline:
                    raise harness.HarnessError("no %d-th notify message within %gs; log:\n%s"
                                               % (len(probes), timeout, d.brief()))
                try:
                    call = []
                    if exact:
                        with open("/proc/%d/syscall" % pid) as f:
                            call = f.read().split()
                    state = _proc_field(pid, "State")
                    sw = int(_proc_field(pid, "voluntary_ctxt_switches"))
                except PermissionError:
                    exact = False
                    continue
                except (OSError, TypeError, ValueError):
                    call, state, sw = [], "", -1
                if exact and call and call[0] == str(nr) and state.startswith("S") and \
                        sw > switches:
                    break
                if not exact and state.startswith("S") and sw > switches:
                    time.sleep(0.15)
                    try:
                        if int(_proc_field(pid, "voluntary_ctxt_switches")) == sw and \
                                _proc_field(pid, "State").startswith("S"):
                            break
                    except (OSError, TypeError, ValueError):
                        pass
                time.sleep(0.002)
            switches = sw
            probes.append(probe())
            data = self.sock.recv(65536)
            if data == self.FILLER:
                self.fillers -= 1
            else:
                msgs.append(data.decode("utf-8", "replace"))
                if stop(msgs[-1]):
                    break
        # The rest of the test does not need the gate: later messages go nowhere.
        self.close()
        return msgs, probes[:len(msgs)]

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


class SdDaemon(harness.Daemon):
    """harness.Daemon with its own notify listener (every message kept, with its time), extra
    environment (WATCHDOG_USEC), an optional working directory and core limit, and an optional
    systemd-socket-activate wrapper. JOURNAL_STREAM is removed so audit records go to stderr."""

    def __init__(self, *args, extra_env=None, cwd=None, core_unlimited=False, shim=False,
                 **kw):
        super().__init__(*args, **kw)
        self.extra_env = dict(extra_env or {})
        self.cwd = cwd
        self.core_unlimited = core_unlimited
        self.activate_args = None  # list: run under systemd-socket-activate with these
        self.argv_prefix = []  # e.g. a shell that execs the daemon
        self.notify = NotifyListener(self.notify_socket)
        self.spawn_mark = 0
        self.env.pop("JOURNAL_STREAM", None)
        for k in ("WATCHDOG_USEC", "WATCHDOG_PID"):
            self.env.pop(k, None)
        if shim:
            self.module = os.environ["P11SHIM"]
            self.write_config()
            self.faults = os.path.join(self.workdir, "p11shim.faults")
            self.env["P11SHIM_MODULE"] = harness.softhsm_module()
            self.env["P11SHIM_FAULTS"] = self.faults
            self.env["P11SHIM_LOG"] = os.path.join(self.workdir, "p11shim.log")

    def set_faults(self, *lines):
        tmp = self.faults + ".test-tmp"
        with open(tmp, "w") as f:
            f.write("".join(line + "\n" for line in lines))
        os.rename(tmp, self.faults)

    def spawn(self):
        if self.proc is not None and self.proc.poll() is None:
            raise harness.HarnessError("daemon already running")
        if not self.provisioned:
            self.provision()
        if self.notify is None:
            self.notify = NotifyListener(self.notify_socket)
        env = dict(self.env)
        env["NOTIFY_SOCKET"] = self.notify_socket
        env.update(self.extra_env)
        argv = self.argv_prefix + [harness.tokensignd_path(), "-c", self.conf_path]
        if self.activate_args is not None:
            passthrough = []
            for k in sorted(env):
                if k in ("SOFTHSM2_CONF", "NOTIFY_SOCKET", "WATCHDOG_USEC") or \
                        k.startswith("P11SHIM_") or k.startswith("ASAN_") or \
                        k.startswith("LSAN_") or k.startswith("UBSAN_"):
                    passthrough += ["-E", k]
            argv = [socket_activate_path()] + passthrough + self.activate_args + argv
        self._logf = open(self.log_path, "ab")
        self.returncode = None
        self.spawn_mark = self.notify.mark()
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=self._logf, stderr=self._logf,
            preexec_fn=_unlimited_core if self.core_unlimited else _die_with_parent,
            cwd=self.cwd or self.workdir)
        return self.proc

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=harness.READY_TIMEOUT, start=None):
        """Index of the first READY=1 after start (default: since the spawn)."""
        i = self.notify.wait_for(is_ready, self.spawn_mark if start is None else start,
                                 timeout, alive=self.alive)
        if i is None:
            if self.alive():
                self.kill()
                raise harness.HarnessError("no READY=1 within %gs; stderr:\n%s"
                                           % (timeout, self.brief()))
            raise harness.HarnessError("tokensignd exited with %r before READY=1; stderr:\n%s"
                                       % (self.proc.returncode if self.proc else None,
                                          self.brief()))
        return i

    def close(self):
        try:
            super().close()
        finally:
            if self.notify is not None:
                self.notify.close()
                self.notify = None

    def log_since(self, offset, signed=True):
        """The log written since offset; without the "signed" audit lines if not signed."""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        if not signed:
            text = "".join(line for line in text.splitlines(True)
                           if not line.startswith('{"event":"signed"'))
        return text

    def brief(self):
        """The log for failure messages: without the (many) "signed" records."""
        return self.log_since(0, signed=False)

    def log_size(self):
        return os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0


def connect_ok(family, addr, timeout=1.0):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(addr)
        return True
    except OSError:
        return False
    finally:
        s.close()


def admin_get(path, url):
    return harness.unix_http(path, "GET", url)


class KeepAlive:
    """One HTTP/1.1 keep-alive connection on a Unix socket, reused for every request."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(harness.IO_TIMEOUT)
        self.sock.connect(path)
        self.buf = b""
        self.requests = 0

    def _fill(self):
        b = self.sock.recv(65536)
        if not b:
            raise ConnectionError("the server closed the keep-alive connection")
        self.buf += b

    def sign(self, issuer, claims):
        data = json.dumps({"claims": claims}).encode()
        head = ("POST /v1/issuers/%s/sign HTTP/1.1\r\nHost: localhost\r\n"
                "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                % (issuer, len(data))).encode()
        self.sock.sendall(head + data)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n\r\n")
        lines = self.buf[:end].decode("latin-1").split("\r\n")
        self.buf = self.buf[end + 4:]
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" not in headers:
            raise ConnectionError("answer without Content-Length: %r" % lines)
        n = int(headers["content-length"])
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        self.requests += 1
        if headers.get("connection", "").lower() == "close":
            raise ConnectionError("the server answered with Connection: close")
        return status, body

    def close(self):
        self.sock.close()


class Signer(threading.Thread):
    """Signs for main every ~20 ms until stopped, one connection per request (keep_alive False)
    or one connection for all (True), or fetches main's JWKS (jwks True); records every result
    as (monotonic time, ok, detail)."""

    def __init__(self, d, keep_alive, jwks=False):
        super().__init__(daemon=True)
        self.d = d
        self.keep_alive = keep_alive
        self.jwks = jwks  # GET main's JWKS on the [jwks] port instead
        self.results = []
        self.connections = 0
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def one(self, ka):
        claims = dict(CLAIMS)
        if self.jwks:
            r = self.d.http("GET", "/main/.well-known/jwks.json")
            return r.status == 200 and len(r.json()["keys"]) >= 1, "%d %r" % (r.status, r.body)
        if ka is not None:
            status, body = ka.sign("main", claims)
        else:
            r = self.d.sign("main", claims)
            status, body = r.status, r.body
        ok = status == 200 and json.loads(body).get("token", "").count(".") == 2
        return ok, "%d %s" % (status, body[:200].decode("utf-8", "replace"))

    def run(self):
        ka = None
        while not self.stopping.is_set():
            try:
                if self.keep_alive and ka is None:
                    ka = KeepAlive(self.d.sign_socket)
                    self.connections += 1
                ok, detail = self.one(ka)
            except Exception as e:  # noqa: BLE001 - every failure is a result
                ok, detail = False, "%s: %s" % (type(e).__name__, e)
                if ka is not None:
                    ka.close()
                    ka = None
            with self.lock:
                self.results.append((time.monotonic(), ok, detail))
            self.stopping.wait(0.02)
        if ka is not None:
            ka.close()

    def count(self):
        with self.lock:
            return len(self.results)

    def failures(self):
        with self.lock:
            return [r for r in self.results if not r[1]]

    def ok_after(self, t):
        with self.lock:
            return len([r for r in self.results if r[0] > t and r[1]])

    def stop(self):
        self.stopping.set()
        self.join(harness.IO_TIMEOUT + 5)


# ---------------------------------------------------------------------------------------------

class NotifyTest(harness.TestCase):
    """READY=1, STATUS= and WATCHDOG=1 on a test NOTIFY_SOCKET."""

    ISSUERS = {"main": dict(harness.DEFAULT_ISSUER),
               "billing": {"iss": "https://login.example.test/billing",
                           "audiences": "api://billing"}}

    def test_ready_after_sockets_and_status_names_kids(self):
        # WATCHDOG_USEC: the daemon keeps sending after READY=1, which the gate needs
        d = SdDaemon(issuers=self.ISSUERS, extra_env={"WATCHDOG_USEC": "200000"})
        self.addCleanup(d.close)
        admin_sock = os.path.join(d.workdir, "admin.sock")
        d.extra_conf = "[admin]\nsocket = %s\n" % admin_sock
        d.write_config()

        def listening():
            return {"jwks": connect_ok(socket.AF_INET, ("127.0.0.1", d.jwks_port)),
                    "sign": connect_ok(socket.AF_UNIX, d.sign_socket),
                    "admin": connect_ok(socket.AF_UNIX, admin_sock)}

        gate = NotifyGate(os.path.join(d.workdir, "gate.sock"))
        self.addCleanup(gate.close)
        msgs, probes = gate.run(d, listening, stop=is_ready)
        ready_i = len(msgs) - 1
        self.assertTrue(is_ready(msgs[ready_i]), msgs)
        self.assertEqual(probes[ready_i], {"jwks": True, "sign": True, "admin": True},
                         "sockets not all listening while READY=1 was being sent; messages "
                         "%r" % msgs)
        opening = [k for k, m in enumerate(msgs) if "STATUS=Opening sockets" in lines_of(m)]
        self.assertTrue(opening, "no STATUS=Opening sockets: %r" % msgs)
        self.assertLess(opening[-1], ready_i, msgs)
        self.assertTrue(any(m.startswith("STATUS=") for m in msgs[:opening[0]]),
                        "a STATUS= before the sockets (token login): %r" % msgs)
        # the gate itself is sound: before the sockets nothing listened
        self.assertFalse(any(probes[0].values()), (msgs, probes))

        # the READY message carries the per-issuer signing kid, matching what signs and the JWKS
        status = signing_status(msgs[ready_i])
        self.assertIsNotNone(status, "READY=1 without STATUS=signing: %r" % msgs[ready_i])
        self.assertEqual(sorted(status), sorted(self.ISSUERS), msgs[ready_i])
        for name, prefix in status.items():
            self.assertRegex(prefix, r"^[A-Za-z0-9_-]{8}$", msgs[ready_i])
            kid = self.assertSigned(d.sign(name, {"aud": "api://orders" if name == "main"
                                                  else "api://billing"}))["kid"]
            self.assertEqual(kid[:8], prefix, "STATUS names another kid than signs")
            kids = [k["kid"] for k in d.jwks(name)["keys"]]
            self.assertEqual([k for k in kids if k.startswith(prefix)], [kid], kids)
        r = admin_get(admin_sock, "/v1/status")
        self.assertEqual(r.status, 200, r)
        self.assertEqual({i["issuer"]: i["active_kid"][:8] for i in r.json()["issuers"]},
                         status)

    def watchdog_times(self, d, start):
        return [t for t, m in d.notify.since(start) if "WATCHDOG=1" in lines_of(m)]

    def assertHeartbeat(self, d, seconds, what):
        start = d.notify.mark()
        t0 = time.monotonic()
        time.sleep(seconds)
        times = self.watchdog_times(d, start)
        gaps = [b - a for a, b in zip([t0] + times, times + [time.monotonic()])]
        ctx = "%s: WATCHDOG=1 at %r (gaps %r); log:\n%s" % (
            what, [round(t - t0, 2) for t in times], [round(g, 2) for g in gaps], d.brief())
        expect = seconds / 0.5
        self.assertGreaterEqual(len(times), expect - 2, ctx)
        self.assertLessEqual(len(times), expect + 2, ctx)
        self.assertLess(max(gaps), 0.95, ctx)
        inner = gaps[1:-1]
        if inner:
            self.assertGreater(min(inner), 0.3, ctx)

    def test_watchdog_only_while_token_answers(self):
        d = SdDaemon(shim=True, extra_env={"WATCHDOG_USEC": "1000000"})
        self.addCleanup(d.close)
        d.start()
        self.assertHeartbeat(d, 3.0, "token fine")

        d.set_faults("C_GetSessionInfo CKR_DEVICE_REMOVED *")
        time.sleep(0.6)  # one heartbeat may have been on its way
        start = d.notify.mark()
        time.sleep(2.5)
        late = self.watchdog_times(d, start)
        self.assertEqual(late, [], "WATCHDOG=1 while the token does not answer; log:\n"
                         + d.brief())
        self.assertTrue(d.alive(), d.brief())
        self.assertIn("withholding the watchdog", d.brief())
        # and the daemon tells the truth elsewhere too
        r = d.unix_request("GET", "/readyz")
        self.assertEqual(r.status, 503, r)

        d.set_faults()
        start = d.notify.mark()
        self.assertIsNotNone(d.notify.wait_for(lambda m: "WATCHDOG=1" in lines_of(m), start,
                                               timeout=2.0),
                             "no WATCHDOG=1 within 2s of the token answering again")
        self.assertHeartbeat(d, 2.0, "token back")
        self.assertStillSigns(d)

    def test_watchdog_pid(self):
        """WATCHDOG_PID = the daemon's own pid: heartbeats; another pid: none (the heartbeat
        is for the service's main process only)."""
        for own in (True, False):
            d = SdDaemon(extra_env={"WATCHDOG_USEC": "1000000"})
            self.addCleanup(d.close)
            if own:  # sh sets WATCHDOG_PID to its pid and execs the daemon, which keeps it
                d.argv_prefix = ["/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$0" "$@"']
            else:
                d.extra_env["WATCHDOG_PID"] = "1"
            d.start()
            i = d.notify.mark()
            time.sleep(1.6)
            n = len(self.watchdog_times(d, i))
            if own:
                self.assertGreaterEqual(n, 2, "WATCHDOG_PID=own pid: no heartbeat")
            else:
                self.assertEqual(n, 0, "WATCHDOG_PID=1: heartbeats sent anyway")
            d.close()


# ---------------------------------------------------------------------------------------------

class SocketActivationTest(harness.TestCase):
    """systemd-socket-activate passes the three sockets, named sign, admin and jwks."""

    def activated(self, fdnames, admin_section=True):
        d = SdDaemon()
        self.addCleanup(d.close)
        d.conf_sign = os.path.join(d.workdir, "conf-sign.sock")
        d.conf_admin = os.path.join(d.workdir, "conf-admin.sock")
        d.conf_port = d.jwks_port
        d.act_sign = os.path.join(d.workdir, "act-sign.sock")
        d.act_admin = os.path.join(d.workdir, "act-admin.sock")
        d.act_port = harness.free_port()
        d.sign_socket = d.conf_sign
        d.extra_conf = "[admin]\nsocket = %s\n" % d.conf_admin if admin_section else ""
        d.write_config()
        # requests go to the passed sockets
        d.sign_socket = d.act_sign
        d.jwks_port = d.act_port
        d.activate_args = ["-l", d.act_sign, "-l", d.act_admin,
                           "-l", "127.0.0.1:%d" % d.act_port, "--fdname=" + fdnames]
        d.spawn()
        # systemd-socket-activate binds, says "Listening on ... as N." and waits for the first
        # connection before it execs the daemon (same pid, the sockets at fd 3, 4, 5)
        deadline = time.monotonic() + NOTIFY_TIMEOUT
        while "127.0.0.1:%d as 5." % d.act_port not in d.brief():
            self.assertTrue(d.alive() and time.monotonic() < deadline,
                            "systemd-socket-activate did not come up: " + d.brief())
            time.sleep(0.02)
        for p in (d.act_sign, d.act_admin):
            self.assertTrue(os.path.exists(p), p)
        first = d.notify.mark()
        self.assertFalse([m for _, m in d.notify.since(d.spawn_mark) if is_ready(m)])
        return d, first

    def test_three_named_sockets(self):
        d, first = self.activated("sign:admin:jwks")
        # this connection, made before the daemon runs, is queued on the passed socket and
        # starts it; it must be answered once the daemon is up
        r = d.http("GET", "/main/.well-known/jwks.json")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.json()["keys"]), harness.KEYS_AT_START, r)
        d.wait_ready(start=first)
        body = self.assertSigned(d.sign("main", dict(CLAIMS)), "sign over the passed socket")
        kids = [k["kid"] for k in d.jwks("main")["keys"]]
        self.assertIn(body["kid"], kids)
        r = admin_get(d.act_admin, "/v1/status")
        self.assertEqual(r.status, 200, r)
        self.assertEqual([i["issuer"] for i in r.json()["issuers"]], ["main"], r)
        self.assertEqual(r.json()["issuers"][0]["active_kid"], body["kid"], r)
        # the configured sockets are not made, the configured port is not bound
        self.assertFalse(os.path.exists(d.conf_sign), "[sign] socket created anyway")
        self.assertFalse(os.path.exists(d.conf_admin), "[admin] socket created anyway")
        self.assertFalse(connect_ok(socket.AF_INET, ("127.0.0.1", d.conf_port)),
                         "[jwks] listen bound anyway")
        self.assertRegex(d.log(), r"socket activation: sign passed, admin passed, 1 jwks")
        # a reload keeps serving on the passed sockets and does not touch their files
        mark = d.notify.mark()
        d.proc.send_signal(signal.SIGHUP)
        d.wait_ready(start=mark)
        self.assertSigned(d.sign("main", dict(CLAIMS)), "after a reload")
        self.assertEqual(d.http("GET", "/main/.well-known/jwks.json").status, 200)
        self.assertFalse(os.path.exists(d.conf_sign), "[sign] socket created on reload")
        # the units own the socket files: they outlive the daemon
        self.assertEqual(d.stop(), 0, d.brief())
        for p in (d.act_sign, d.act_admin):
            self.assertTrue(os.path.exists(p), "passed socket %s unlinked at exit" % p)
        self.assertNoSanitizerReport(d)

    def test_passed_admin_socket_needs_an_admin_section(self):
        """The admin API rotates and revokes: a unit passing an admin socket does not turn
        it on when the configuration has no [admin] section."""
        d, first = self.activated("sign:admin:jwks", admin_section=False)
        self.assertEqual(d.http("GET", "/main/.well-known/jwks.json").status, 200)
        d.wait_ready(start=first)
        self.assertSigned(d.sign("main", dict(CLAIMS)), "sign over the passed socket")
        self.assertRegex(d.log(), r"passed an admin socket, but the configuration has no "
                                  r"\[admin\] section: closed")
        self.assertFalse(connect_ok(socket.AF_UNIX, d.act_admin),
                         "the passed admin socket is served without an [admin] section")
        # a reload does not bring it back
        mark = d.notify.mark()
        d.proc.send_signal(signal.SIGHUP)
        d.wait_ready(start=mark)
        self.assertFalse(connect_ok(socket.AF_UNIX, d.act_admin), "served after a reload")
        self.assertEqual(d.stop(), 0, d.brief())
        self.assertNoSanitizerReport(d)

    def test_wrongly_named_socket_refused(self):
        d, _ = self.activated("sign:bogus:jwks")
        try:
            socket.create_connection(("127.0.0.1", d.act_port), timeout=5).close()
        except OSError:
            pass
        try:
            rc = d.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail("the daemon runs with a socket named 'bogus'; log:\n" + d.brief())
        self.assertNotEqual(rc, 0, d.brief())
        self.assertRegex(d.log(), r"socket activation: unexpected socket 'bogus'")
        ready = [m for _, m in d.notify.since(d.spawn_mark)
                 if is_ready(m) and signing_status(m) is not None]
        self.assertEqual(ready, [], "the daemon said READY=1")
        self.assertNotIn('"signed"', d.log())


# ---------------------------------------------------------------------------------------------

class ReloadTest(harness.TestCase):
    """SIGHUP with two clients signing for main every ~20 ms throughout (one connection per
    request, and one keep-alive connection): no request may fail. The steps run in order."""

    BILLING = {"iss": "https://login.example.test/billing", "audiences": "api://billing",
               "allow": "*"}

    @classmethod
    def setUpClass(cls):
        cls.d = SdDaemon()
        try:
            cls.d.start()
            cls.main_kid = cls.d.sign("main", dict(CLAIMS)).json()["kid"]
            cls.main_jwks = cls.d.jwks("main")
            cls.signers = [Signer(cls.d, keep_alive=False), Signer(cls.d, keep_alive=True)]
            cls.jwks_poller = Signer(cls.d, keep_alive=False, jwks=True)
            for s in cls.signers + [cls.jwks_poller]:
                s.start()
            time.sleep(0.3)
        except BaseException:
            cls.d.close()
            raise

    @classmethod
    def tearDownClass(cls):
        for s in getattr(cls, "signers", []) + [getattr(cls, "jwks_poller", None)]:
            if s is not None:
                s.stop()
        cls.d.close()

    def assertNoFailedRequest(self):
        for s in self.signers:
            self.assertTrue(s.is_alive(), "signer thread died")
            self.assertEqual(s.failures(), [], "failed requests (keep_alive=%s); log:\n%s"
                             % (s.keep_alive, self.d.brief()))
        self.assertEqual(self.signers[1].connections, 1,
                         "the keep-alive connection was dropped and reopened")

    def reload(self, expect_problem=None):
        """Writes nothing: sends SIGHUP, waits for RELOADING=1 then READY=1, returns the log
        written during the reload. The signers must keep succeeding during it."""
        d = self.d
        counts = [s.count() for s in self.signers]
        log0 = d.log_size()
        mark = d.notify.mark()
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGHUP)
        i = d.notify.wait_for(lambda m: "RELOADING=1" in lines_of(m), mark, alive=d.alive)
        self.assertIsNotNone(i, "no RELOADING=1 after SIGHUP; log:\n" + d.brief())
        j = d.notify.wait_for(is_ready, i + 1, alive=d.alive)
        self.assertIsNotNone(j, "no READY=1 after RELOADING=1; log:\n" + d.brief())
        self.assertFalse([m for _, m in d.notify.since(mark)[:i - mark] if is_ready(m)],
                         "READY=1 before RELOADING=1")
        self.ready_msg = d.notify.since(j)[0][1]
        time.sleep(0.3)  # keep signing a little after the swap
        for s, c in zip(self.signers, counts):
            self.assertGreater(s.ok_after(t0), 3, "the signers did not sign across the reload")
            self.assertGreater(s.count(), c)
        self.assertNoFailedRequest()
        self.assertTrue(d.alive(), d.brief())
        return d.log_since(log0, signed=False)

    def test_a_add_issuer(self):
        d = self.d
        d.issuers["billing"] = dict(self.BILLING)
        d.write_config()
        log = self.reload()
        self.assertIn("reload: done, 2 issuer(s)", log)
        self.assertEqual(sorted(signing_status(self.ready_msg) or {}), ["billing", "main"],
                         self.ready_msg)
        body = self.assertSigned(d.sign("billing", {"aud": "api://billing"}))
        jwks = d.jwks("billing")
        self.assertEqual(len(jwks["keys"]), harness.KEYS_AT_START, jwks)
        self.assertIn(body["kid"], [k["kid"] for k in jwks["keys"]])
        self.assertEqual(signing_status(self.ready_msg)["billing"], body["kid"][:8])
        # the new issuer's keys were generated, with their lifecycle records
        generated = [json.loads(line)["kid"] for line in log.splitlines()
                     if line.startswith('{"event":"generated","issuer":"billing"')]
        self.assertEqual(sorted(generated), sorted(k["kid"] for k in jwks["keys"]), log)
        # main keeps its keys and its signing kid
        self.assertEqual(d.jwks("main"), self.main_jwks)
        self.assertEqual(d.sign("main", dict(CLAIMS)).json()["kid"], self.main_kid)
        self.assertEqual(signing_status(self.ready_msg)["main"], self.main_kid[:8])
        # the token now has the new issuer's keys and nothing more for main
        labels = [o["label"] for o in d.probe() if o["class"] == "private_key"]
        self.assertEqual(sorted(labels), ["tokensign:billing"] * 2 + ["tokensign:main"] * 2)

    def test_b_change_policy(self):
        d = self.d
        self.assertSigned(d.sign("main", {"aud": "api://billing"}), "allowed before")
        d.issuers["main"]["audiences"] = "api://orders, api://new"
        d.write_config()
        self.reload()
        self.assertError(d.sign("main", {"aud": "api://billing"}), 400, "aud_not_allowed",
                         "the narrower audiences apply after the reload")
        self.assertSigned(d.sign("main", {"aud": "api://new"}), "the new audience")
        self.assertEqual(d.sign("main", dict(CLAIMS)).json()["kid"], self.main_kid)

    def test_c_broken_file(self):
        d = self.d
        text = d.config_text().split("\n")
        # a syntax error, and an issuer that would appear if the file were taken anyway
        text[1:1] = ["this line has no equals sign"]
        bad_line = 2
        text += ["[issuer:ghost]", "iss = https://ghost.example.test", "allow = *", ""]
        with open(d.conf_path, "w") as f:
            f.write("\n".join(text))
        log = self.reload()
        self.assertIn("%s:%d:" % (d.conf_path, bad_line), log,
                      "the error does not name file:line")
        self.assertRegex(log, r"running configuration stays")
        self.assertNotIn("reload: done", log)
        self.assertError(d.sign("ghost", {"aud": "x"}), 404, "unknown_issuer")
        self.assertSigned(d.sign("billing", {"aud": "api://billing"}))
        self.assertError(d.sign("main", {"aud": "api://billing"}), 400, "aud_not_allowed",
                         "the policy of (b) still applies")
        self.assertEqual(sorted(signing_status(self.ready_msg) or {}), ["billing", "main"],
                         self.ready_msg)

    def test_d_hsm_change_refused(self):
        d = self.d
        label = d.token_label
        try:
            d.token_label = "another-token"
            d.issuers["ghost"] = {"iss": "https://ghost.example.test", "allow": "*"}
            d.write_config()
            log = self.reload()
        finally:
            d.token_label = label
            del d.issuers["ghost"]
            d.write_config()
        self.assertRegex(log, r"\[hsm\] changed")
        self.assertNotIn("reload: done", log)
        self.assertError(d.sign("ghost", {"aud": "x"}), 404, "unknown_issuer")
        self.assertSigned(d.sign("billing", {"aud": "api://billing"}))
        self.assertEqual(d.sign("main", dict(CLAIMS)).json()["kid"], self.main_kid)

    def test_e_remove_issuer(self):
        d = self.d
        billing_kids = sorted(k["kid"] for k in d.jwks("billing")["keys"])
        del d.issuers["billing"]
        d.write_config()
        log = self.reload()
        self.assertIn("reload: done, 1 issuer(s)", log)
        self.assertError(d.sign("billing", {"aud": "api://billing"}), 404, "unknown_issuer")
        self.assertEqual(d.http("GET", "/billing/.well-known/jwks.json").status, 404)
        self.assertEqual(sorted(signing_status(self.ready_msg) or {}), ["main"])
        # its keys stay in the token: removing an issuer from the file destroys nothing
        objs = d.probe()
        recs = [json.loads(o["value"]) for o in objs if o["class"] == "data"]
        self.assertEqual(sorted(r["kid"] for r in recs if r["issuer"] == "billing"),
                         billing_kids)
        self.assertEqual(len([o for o in objs if o["class"] == "private_key"
                              and o["label"] == "tokensign:billing"]), len(billing_kids))
        self.assertEqual(d.sign("main", dict(CLAIMS)).json()["kid"], self.main_kid)

    def test_f_jwks_listen_moves(self):
        d = self.d
        # until now the [jwks] listen address did not change: the JWKS never failed either
        self.jwks_poller.stop()
        self.assertGreater(self.jwks_poller.count(), 50)
        self.assertEqual(self.jwks_poller.failures(), [], "JWKS requests failed")
        ka = KeepAlive(d.sign_socket)
        self.addCleanup(ka.close)
        self.assertEqual(ka.sign("main", dict(CLAIMS))[0], 200)
        old = d.jwks_port
        self.assertEqual(d.http("GET", "/main/.well-known/jwks.json").status, 200)
        d.jwks_port = harness.free_port()
        d.write_config()
        self.reload()
        self.assertEqual(d.jwks("main"), self.main_jwks, "the new port serves the JWKS")
        self.assertFalse(connect_ok(socket.AF_INET, ("127.0.0.1", old)),
                         "the old JWKS port still accepts")
        # connections on the sign socket opened before the reload still work
        status, body = ka.sign("main", dict(CLAIMS))
        self.assertEqual(status, 200, body)
        self.assertEqual(ka.requests, 2)
        self.assertTrue(os.path.exists(d.sign_socket))

    def test_g_jwks_listen_to_a_busy_port(self):
        """A [jwks] listen address that cannot be bound: the reload logs it, and the JWKS is
        still served where it was (public keys must not vanish because of a typo'd port)."""
        d = self.d
        busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        serving = d.jwks_port
        d.jwks_port = busy.getsockname()[1]
        try:
            d.write_config()
            log = self.reload()
        finally:
            d.jwks_port = serving
        self.assertIn("127.0.0.1:%d" % busy.getsockname()[1], log)
        r = None
        try:
            r = d.http("GET", "/main/.well-known/jwks.json")
        except OSError as e:
            self.fail("after a reload to a busy port the JWKS is served nowhere (%s); log:\n%s"
                      % (e, log))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), self.main_jwks)

    def test_z_no_failed_request_throughout(self):
        for s in self.signers:
            self.assertGreater(s.count(), 50)
        self.assertNoFailedRequest()
        # no WATCHDOG_USEC here: no heartbeat either
        self.assertEqual([m for _, m in self.d.notify.since(0) if "WATCHDOG=1" in lines_of(m)],
                         [])
        self.assertNoSanitizerReport(self.d)


# ---------------------------------------------------------------------------------------------

def core_pattern():
    with open("/proc/sys/kernel/core_pattern") as f:
        return f.read().strip()


class NoCoreTest(harness.TestCase):
    def test_sigsegv_leaves_no_core(self):
        pattern = core_pattern()
        self.assertFalse(pattern.startswith("|"),
                         "core_pattern %r pipes cores to a handler: this check needs a plain "
                         "file pattern (the core of the control process would not show)"
                         % pattern)
        self.assertNotIn("/", pattern, "core_pattern %r is a path outside the test's working "
                         "directory: cannot look for the core file" % pattern)
        base = tempfile.mkdtemp(prefix="tokensign-core-")
        self.addCleanup(shutil.rmtree, base, True)
        control_dir, daemon_dir = os.path.join(base, "control"), os.path.join(base, "daemon")
        os.mkdir(control_dir)
        os.mkdir(daemon_dir)

        # control: an ordinary process in the same conditions leaves a core here
        p = subprocess.Popen(["sleep", "30"], cwd=control_dir, preexec_fn=_unlimited_core)
        time.sleep(0.2)
        p.send_signal(signal.SIGSEGV)
        self.assertEqual(p.wait(10), -signal.SIGSEGV)
        self.assertTrue(os.listdir(control_dir),
                        "control: no core file from 'sleep' with core_pattern %r and "
                        "RLIMIT_CORE unlimited: this machine cannot show the difference"
                        % pattern)

        d = SdDaemon(cwd=daemon_dir, core_unlimited=True)
        self.addCleanup(d.close)
        # In a sanitizer build, AddressSanitizer would itself lower RLIMIT_CORE to 0 and catch
        # the SIGSEGV: let the daemon's own prctl() be what is tested.
        d.env["ASAN_OPTIONS"] = (os.environ.get("ASAN_OPTIONS", "")
                                 + ":disable_coredump=0:handle_segv=0").lstrip(":")
        d.start()
        self.assertSigned(d.sign("main", dict(CLAIMS)))  # the key is in use, in memory
        with open("/proc/%d/limits" % d.proc.pid) as f:
            self.assertRegex(f.read(), r"Max core file size\s+unlimited")
        d.proc.send_signal(signal.SIGSEGV)
        rc = d.proc.wait(EXIT_TIMEOUT)
        self.assertEqual(rc, -signal.SIGSEGV, "not killed by SIGSEGV")
        time.sleep(0.5)
        self.assertEqual(os.listdir(daemon_dir), [],
                         "a core file (core_pattern %r)" % pattern)
        self.assertEqual([f for f in os.listdir(d.workdir) if f.startswith("core")], [])


# ---------------------------------------------------------------------------------------------

class AuditTest(harness.TestCase):
    """Outside the journal (no JOURNAL_STREAM) the audit records are JSON lines on stderr."""

    @classmethod
    def setUpClass(cls):
        cls.d = SdDaemon()
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def records(self):
        out = []
        for line in self.d.log().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    self.fail("a line that looks like JSON is not: %r" % line)
        return out

    def lifecycle(self):
        recs = [r for r in self.records() if r.get("event") not in ("signed", "refused")]
        for r in recs:
            self.assertEqual(sorted(r), ["event", "issuer", "kid", "operator_uid"], r)
            self.assertIsInstance(r["operator_uid"], int, r)
        return recs

    def test_a_one_signed_record_per_token_without_claim_values(self):
        d = self.d
        before = len([r for r in self.records() if r.get("event") == "signed"])
        jti = "audit-" + secrets.token_hex(6)
        aud = ["api://orders", "api://billing"]
        claims = {"sub": "user-secret-42", "secret": "do-not-log-me", "aud": aud, "jti": jti,
                  "scope": "read write"}
        body = self.assertSigned(d.sign("main", claims))
        jti2 = "audit-" + secrets.token_hex(6)
        body2 = self.assertSigned(d.sign("main", {"aud": "api://orders", "jti": jti2,
                                                  "sub": "user-secret-42"}))
        # a token without a jti gets one from the daemon: it is the one in the record
        body3 = self.assertSigned(d.sign("main", {"aud": "api://orders"}))
        jti3 = json.loads(harness.split_jws(body3["token"])[1])["jti"]
        # a refusal is no "signed" record, but a "refused" one
        self.assertError(d.sign("main", {"aud": "api://nope", "jti": "refused-jti",
                                         "sub": "user-secret-42"}), 400, "aud_not_allowed")
        time.sleep(0.3)
        log = d.log()
        signed = [r for r in self.records() if r.get("event") == "signed"]
        self.assertEqual(len(signed) - before, 3, "one record per issued token:\n" + log)
        mine = [r for r in signed if r.get("jti") == jti]
        self.assertEqual(len(mine), 1, log)
        rec = mine[0]
        self.assertEqual(sorted(rec), sorted(["event", "issuer", "kid", "jti", "aud", "exp",
                                              "uid", "pid", "result"]), rec)
        self.assertEqual(rec["result"], "granted")
        self.assertEqual(rec["issuer"], "main")
        self.assertEqual(rec["kid"], body["kid"])
        self.assertEqual(rec["aud"], aud)
        self.assertEqual(rec["exp"], body["exp"])
        self.assertEqual(rec["uid"], os.getuid())
        self.assertEqual(rec["pid"], os.getpid(), "pid is the client's")
        rec2 = [r for r in signed if r.get("jti") == jti2]
        self.assertEqual(len(rec2), 1, log)
        self.assertEqual(rec2[0]["aud"], "api://orders", "a string aud stays a string")
        self.assertEqual(rec2[0]["exp"], body2["exp"])
        self.assertEqual(len([r for r in signed if r.get("jti") == jti3]), 1, log)
        refused = [r for r in self.records() if r.get("jti") == "refused-jti"]
        self.assertEqual(refused, [{"event": "refused", "issuer": "main", "jti": "refused-jti",
                                    "aud": "api://nope", "uid": os.getuid(),
                                    "pid": os.getpid(), "result": "refused",
                                    "reason": "aud_not_allowed"}], log)

        for secret in ("do-not-log-me", "user-secret-42", "read write"):
            self.assertFalse(secret in log, "a claim value is in the log: %r" % secret)
        # no piece of any token: every 20-character window of each of its three parts
        for b in (body, body2, body3):
            for part in b["token"].split("."):
                for k in range(0, max(1, len(part) - 19), 4):
                    self.assertFalse(part[k:k + 20] in log,
                                     "part of a token is in the log: %r" % part[k:k + 20])

    def test_b_lifecycle_of_first_start(self):
        """Both keys generated, the first one activated, by the schedule (no operator)."""
        life = self.lifecycle()
        kids = [k["kid"] for k in self.d.jwks("main")["keys"]]
        signing = self.d.sign("main", dict(CLAIMS)).json()["kid"]
        self.assertEqual(sorted(r["kid"] for r in life if r["event"] == "generated"),
                         sorted(kids), life)
        self.assertEqual([r["kid"] for r in life if r["event"] == "activated"], [signing],
                         life)
        for r in life:
            self.assertEqual(r["issuer"], "main", r)
            self.assertEqual(r["operator_uid"], -1, r)

    def test_z_no_lifecycle_records_without_an_event(self):
        """A reload or a restart changes no key: it writes no lifecycle record (an
        "activated" record for a key active since the first start would be false)."""
        d = self.d
        n = len(self.lifecycle())
        mark = d.notify.mark()
        d.proc.send_signal(signal.SIGHUP)
        d.wait_ready(start=mark)
        self.assertSigned(d.sign("main", dict(CLAIMS)))
        after_reload = self.lifecycle()[n:]
        d.restart()
        self.assertSigned(d.sign("main", dict(CLAIMS)))
        after_restart = self.lifecycle()[n + len(after_reload):]
        self.assertEqual((after_reload, after_restart), ([], []),
                         "lifecycle records without a key event (after SIGHUP, after a "
                         "restart)")


if __name__ == "__main__":
    harness.main()
