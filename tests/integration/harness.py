"""Integration-test harness: the real tokensignd against a throwaway SoftHSMv2 token.

Importing this module has no side effects. Everything is driven by environment variables that
tests/integration/meson.build sets:

    TOKENSIGND       path of the daemon binary (build/daemon/tokensignd)
    SOFTHSM_MODULE   path of the SoftHSMv2 PKCS#11 module
    P11PROBE         path of the p11probe test tool (optional for users of this module)

Typical use:

    import harness
    with harness.Daemon() as d:                  # provisions a token, starts, waits for READY=1
        r = d.sign("main", {"aud": "api://orders"})
        assert r.status == 200, r
        token = r.json()["token"]

The API other test folders rely on (keep it stable):

    Daemon(issuers=None, jwks_max_age="5m", sign_mode="0660", extra_conf="",
           jwks_public_url=None, share_token_of=None)
        .start() .stop() .restart() .close() .kill() .spawn() .wait_ready() .provision()
        .write_config() .write_pin(text) .probe() .log() .config_text()
        .unix_request(method, path, body=None, headers=None, as_uid=None, as_gid=None,
                      as_groups=None)
        .sign(issuer, claims, typ=None, extra=None, as_uid=None, **unix_request_kw)
        .http(method, path, headers=None, body=None)   .jwks_url(issuer)   .jwks(issuer)
        .workdir .conf_path .sign_socket .jwks_port .env .token_label .pin .so_pin
        .pin_file .module .proc .returncode
    Response: .status .reason .headers (lower-case) .raw_headers .body .json()
    check_config(conf_text) -> (returncode, stderr)
    p11probe(module, label, pin_file, env) -> [dict per token object]
    shim_daemon(issuers=None, admin=False, cls=None, **kw) -> Daemon through p11shim
        (.faults .shim_log .admin_sock)   write_faults(d, *lines)
    start_or_close(d) -> d (for setUpClass)   add_admin_socket(d, mode="0600") -> d (.admin_sock)
    split_jws, b64url_decode, b64url_encode, jwk_thumbprint, verify_es256, run_as
    TestCase (assertError, assertSigned, assertStillSigns), main(), KEYS_AT_START

Environment knobs: HARNESS_VERBOSE=1 copies the daemon's stderr to ours when a daemon is
closed; HARNESS_TMPDIR puts the per-daemon temp dirs somewhere other than $TMPDIR.
"""

import atexit
import base64
import ctypes
import fcntl
import hashlib
import json
import os
import pickle
import pwd
import resource
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

__all__ = ["Daemon", "Response", "HarnessError", "check_config", "p11probe", "free_port",
           "DEFAULT_ISSUER", "b64url_decode", "b64url_encode", "split_jws", "jwk_thumbprint",
           "run_as", "unix_http", "tcp_http", "verify_es256", "KEYS_AT_START", "TestCase",
           "main", "shim_daemon", "write_faults", "start_or_close", "add_admin_socket"]

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
IO_TIMEOUT = 15.0

# How many keys each issuer has in its JWKS (and in the token) right after the first start:
# SPEC §6, one active key and one pending key.
KEYS_AT_START = 2

# The single default issuer of Daemon(issuers=None), as in the brief and SPEC §3.
DEFAULT_ISSUER = {
    "iss": "https://login.example.test/main",
    "algorithm": "ES256",
    "audiences": "api://orders, api://billing",
    "token-types": "JWT, at+jwt",
    "token-ttl": "15m",
    "max-token-ttl": "1h",
    "allow": "*",
}


class HarnessError(Exception):
    """The harness could not set up or drive the daemon (not an assertion about the daemon)."""


def _env_path(name):
    v = os.environ.get(name)
    if not v:
        raise HarnessError("%s is not set (run the tests through meson test)" % name)
    return v


def tokensignd_path():
    return os.path.abspath(_env_path("TOKENSIGND"))


def tokensign_hsm_path():
    """The helper built beside tokensignd (the daemon looks there first)."""
    return os.path.join(os.path.dirname(tokensignd_path()), "tokensign-hsm")


def softhsm_module():
    return _env_path("SOFTHSM_MODULE")


def p11probe_path():
    return os.path.abspath(_env_path("P11PROBE"))


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- cleanup of everything this process started, even when a test dies half-way ----

_live = set()  # every Daemon not closed yet (strong refs: closed at exit at the latest)
_cleanup_installed = False


def _cleanup_all():
    for d in list(_live):
        try:
            d.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _install_cleanup():
    global _cleanup_installed
    if _cleanup_installed:
        return
    _cleanup_installed = True
    atexit.register(_cleanup_all)
    # meson test stops a test that times out with SIGTERM: turn it into SystemExit so that the
    # atexit hook kills the daemons and removes the temp dirs.
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        def on_term(signum, frame):
            raise SystemExit(128 + signum)
        try:
            signal.signal(signal.SIGTERM, on_term)
        except ValueError:  # not the main thread
            pass


def _die_with_parent():
    """preexec_fn: the daemon gets SIGKILL if the test process dies without cleaning up."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


# ---- HTTP/1.1 over a raw socket (Unix or TCP) ----

class Response:
    """An HTTP answer: status (int), headers (dict, lower-case names; repeated headers joined
    with ", "), raw_headers (list of (name, value) as received), body (bytes: exactly the bytes
    that followed the header block, de-chunked if chunked)."""

    def __init__(self, status, reason, headers, raw_headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.raw_headers = raw_headers
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        body = self.body[:500]
        return "<Response %d %s headers=%r body=%r%s>" % (
            self.status, self.reason, self.headers, body,
            "..." if len(self.body) > 500 else "")


def _encode_body(body, headers):
    """Returns (bytes or None, headers dict). A dict body becomes JSON with Content-Type
    application/json unless the caller's headers name a Content-Type (a None value omits it)."""
    headers = dict(headers or {})
    if body is None:
        data = None
    elif isinstance(body, (dict, list)):
        data = json.dumps(body).encode("utf-8")
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
    elif isinstance(body, str):
        data = body.encode("utf-8")
    elif isinstance(body, (bytes, bytearray)):
        data = bytes(body)
    else:
        raise TypeError("body must be bytes, str, dict or None")
    return data, headers


def _build_request(method, path, host, data, headers):
    lines = ["%s %s HTTP/1.1" % (method, path)]
    names = {k.lower() for k in headers}
    if "host" not in names:
        lines.append("Host: %s" % host)
    if "connection" not in names:
        lines.append("Connection: close")
    if data is not None and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(data))
    for k, v in headers.items():
        if v is None:
            continue
        lines.append("%s: %s" % (k, v))
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (data or b"")


def _dechunk(data):
    out = bytearray()
    while True:
        nl = data.find(b"\r\n")
        if nl < 0:
            raise HarnessError("truncated chunked body")
        size = int(data[:nl].split(b";")[0].strip(), 16)
        data = data[nl + 2:]
        if size == 0:
            return bytes(out)
        out += data[:size]
        data = data[size + 2:]


def _parse_response(raw):
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        raise HarnessError("no complete HTTP header in %r" % raw[:300])
    head = raw[:end].decode("latin-1").split("\r\n")
    rest = raw[end + 4:]
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HarnessError("bad status line %r" % head[0])
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers, raw_headers = {}, []
    for line in head[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
        raw_headers.append((name, value))
        key = name.lower()
        headers[key] = headers[key] + ", " + value if key in headers else value
    if headers.get("transfer-encoding", "").lower() == "chunked":
        rest = _dechunk(rest)
    return Response(status, reason, headers, raw_headers, rest)


def _exchange(sock, request):
    """Sends request and reads until the server closes (we always ask Connection: close). A
    server that answers early (413) and stops reading is fine: we read what it sent."""
    sock.settimeout(IO_TIMEOUT)
    try:
        sock.sendall(request)
    except (BrokenPipeError, ConnectionResetError):
        pass
    chunks = []
    while True:
        try:
            b = sock.recv(65536)
        except ConnectionResetError:
            break
        except socket.timeout:
            raise HarnessError("no complete answer within %gs (got %r)"
                               % (IO_TIMEOUT, b"".join(chunks)[:300]))
        if not b:
            break
        chunks.append(b)
    return _parse_response(b"".join(chunks))


def unix_http(path, method, url, body=None, headers=None):
    data, headers = _encode_body(body, headers)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(IO_TIMEOUT)
        s.connect(path)
        return _exchange(s, _build_request(method, url, "localhost", data, headers))


def tcp_http(host, port, method, url, body=None, headers=None):
    data, headers = _encode_body(body, headers)
    with socket.create_connection((host, port), timeout=IO_TIMEOUT) as s:
        return _exchange(s, _build_request(method, url, "%s:%d" % (host, port), data, headers))


def run_as(uid, gid, groups, fn, *args, **kwargs):
    """Runs fn(*args, **kwargs) in a forked child with the given credentials and returns its
    result (or re-raises its exception) in the parent."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(rfd)
            try:
                os.setgroups(list(groups))
                os.setgid(gid)
                os.setuid(uid)
                result = ("ok", fn(*args, **kwargs))
            except BaseException as e:  # noqa: BLE001 - shipped to the parent
                result = ("err", e)
            try:
                data = pickle.dumps(result)
            except Exception as e:  # noqa: BLE001
                data = pickle.dumps(("err", HarnessError("unpicklable: %r" % e)))
            with os.fdopen(wfd, "wb") as w:
                w.write(data)
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        data = r.read()
    os.waitpid(pid, 0)
    if not data:
        raise HarnessError("child running as uid %d died without an answer" % uid)
    kind, value = pickle.loads(data)
    if kind == "err":
        raise value
    return value


def _creds_of(uid, gid=None, groups=None):
    if gid is None:
        try:
            gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            gid = uid
    return uid, gid, ([] if groups is None else list(groups))


# ---- the daemon ----

# The daemon's sign workers: one per CPU, 2 to 16 (daemon/sign_api.c).
SIGN_WORKERS = min(16, max(2, os.cpu_count() or 2))


class Daemon:
    """One tokensignd with its own SoftHSM token, config, sockets and temp dir."""

    def __init__(self, issuers=None, jwks_max_age="5m", sign_mode="0660", extra_conf="",
                 jwks_public_url=None, share_token_of=None):
        """share_token_of: another Daemon whose token (and PIN) this one uses, to run two
        instances against one token (SPEC §5: byte-identical JWKS)."""
        _install_cleanup()
        self.issuers = {"main": dict(DEFAULT_ISSUER)} if issuers is None else \
            {name: dict(v) for name, v in issuers.items()}
        for name, ic in self.issuers.items():
            ic.setdefault("iss", "https://login.example.test/%s" % name)
            ic.setdefault("allow", "*")
        self.jwks_max_age = jwks_max_age
        self.jwks_public_url = jwks_public_url
        self.sign_mode = sign_mode
        self.extra_conf = extra_conf
        self.binary = None  # another tokensignd than $TOKENSIGND (bench/run --baseline)
        self.proc = None
        self.nofile = None  # RLIMIT_NOFILE (soft and hard) to start the daemon with
        self.returncode = None
        self.provisioned = False
        self._started_once = False
        self._notify = None
        self._logf = None
        self.workdir = tempfile.mkdtemp(prefix="tokensign-it-",
                                        dir=os.environ.get("HARNESS_TMPDIR") or None)
        _live.add(self)
        # Traversable so that a request made as another uid (as_uid=) can reach the socket;
        # the PIN file and the token directory stay private.
        os.chmod(self.workdir, 0o755)
        self.module = softhsm_module()
        self.token_label = "ts-" + secrets.token_hex(4)
        self.so_pin = secrets.token_hex(8)
        self.pin = secrets.token_hex(8)
        self.pin_file = os.path.join(self.workdir, "hsm-pin")
        self.softhsm_conf = os.path.join(self.workdir, "softhsm2.conf")
        self.tokendir = os.path.join(self.workdir, "tokens")
        self.conf_path = os.path.join(self.workdir, "tokensignd.conf")
        self.sign_socket = os.path.join(self.workdir, "sign.sock")
        self.notify_socket = os.path.join(self.workdir, "notify.sock")
        self.log_path = os.path.join(self.workdir, "daemon.log")
        self.jwks_port = free_port()
        if share_token_of is not None:
            o = share_token_of
            if not o.provisioned:
                o.provision()
            self.token_label, self.so_pin, self.pin = o.token_label, o.so_pin, o.pin
            self.pin_file, self.softhsm_conf, self.tokendir = o.pin_file, o.softhsm_conf, \
                o.tokendir
            self.provisioned = True
        self.env = dict(os.environ)
        self.env["SOFTHSM2_CONF"] = self.softhsm_conf
        for k in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
                  "CREDENTIALS_DIRECTORY"):
            self.env.pop(k, None)
        self.write_config()

    # -- configuration --

    def config_text(self):
        out = [
            "[hsm]",
            "module = %s" % self.module,
            "token = %s" % self.token_label,
            "pin-file = %s" % self.pin_file,
            "",
            "[sign]",
            "socket = %s" % self.sign_socket,
            "mode = %s" % self.sign_mode,
            "",
            "[jwks]",
            "listen = 127.0.0.1:%d" % self.jwks_port,
            "max-age = %s" % self.jwks_max_age,
        ]
        if self.jwks_public_url:
            out.append("public-url = %s" % self.jwks_public_url)
        out.append("")
        for name, ic in self.issuers.items():
            out.append("[issuer:%s]" % name)
            for k, v in ic.items():
                out.append("%s = %s" % (k, v))
            out.append("")
        text = "\n".join(out)
        if self.extra_conf:
            text += "\n" + self.extra_conf.strip("\n") + "\n"
        return text

    def write_config(self):
        with open(self.conf_path, "w") as f:
            f.write(self.config_text())

    # -- token --

    def provision(self):
        """Creates the SoftHSM token (once) and the PIN file."""
        os.makedirs(self.tokendir, mode=0o700, exist_ok=True)
        with open(self.softhsm_conf, "w") as f:
            f.write("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n"
                    % self.tokendir)
        r = subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", self.token_label,
             "--so-pin", self.so_pin, "--pin", self.pin],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise HarnessError("softhsm2-util --init-token failed: %s%s" % (r.stdout, r.stderr))
        self.write_pin(self.pin + "\n")
        self.provisioned = True

    def write_pin(self, text):
        fd = os.open(self.pin_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(self.pin_file, 0o600)

    def probe(self):
        """The token's objects as p11probe prints them (list of dicts)."""
        return p11probe(self.module, self.token_label, self.pin_file, self.env)

    # -- process --

    def spawn(self):
        """Starts the daemon without waiting for READY=1 (for tests of start-up failures)."""
        if self.proc is not None and self.proc.poll() is None:
            raise HarnessError("daemon already running")
        if not self.provisioned:
            self.provision()
        if self._notify is None:
            if os.path.exists(self.notify_socket):
                os.unlink(self.notify_socket)
            self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._notify.bind(self.notify_socket)
        else:  # drop datagrams of a previous run
            self._notify.setblocking(False)
            try:
                while self._notify.recv(4096):
                    pass
            except BlockingIOError:
                pass
            self._notify.setblocking(True)
        env = dict(self.env)
        env["NOTIFY_SOCKET"] = self.notify_socket
        self._logf = open(self.log_path, "ab")
        self.returncode = None
        nofile = self.nofile

        def preexec():
            _die_with_parent()
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        self.proc = subprocess.Popen(
            [self.binary or tokensignd_path(), "-c", self.conf_path],
            env=env, stdin=subprocess.DEVNULL, stdout=self._logf, stderr=self._logf,
            preexec_fn=preexec, cwd=self.workdir)
        return self.proc

    def wait_ready(self, timeout=None):
        # Read at call time, so that a test making slow keys (RSA-4096) can raise it.
        timeout = READY_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise HarnessError("tokensignd sent no READY=1 within %gs; stderr:\n%s"
                                   % (timeout, self.log()))
            rl, _, _ = select.select([self._notify], [], [], min(left, 0.1))
            if rl:
                msg = self._notify.recv(4096).decode("utf-8", "replace")
                if "READY=1" in msg.split("\n"):
                    return
                continue
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise HarnessError("tokensignd exited with %d before READY=1; stderr:\n%s"
                                   % (self.proc.returncode, self.log()))

    def start(self):
        """Starts the daemon and waits for READY=1. On the very first start only, a JWKS port
        that another process took between free_port() and the daemon's bind is replaced by a
        new one (at most twice); later starts keep the port, as a restart must."""
        for attempt in range(3):
            before = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
            self.spawn()
            try:
                self.wait_ready()
                self._started_once = True
                return self
            except HarnessError:
                with open(self.log_path, "rb") as f:
                    f.seek(before)
                    new_log = f.read().decode("utf-8", "replace")
                if self._started_once or attempt == 2 or "in use" not in new_log:
                    raise
                self.jwks_port = free_port()
                self.write_config()
        raise AssertionError("unreachable")

    def stop(self):
        """SIGTERM and wait; returns the exit status (SIGKILL after STOP_TIMEOUT, then raises)."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                raise HarnessError("tokensignd did not exit within %gs of SIGTERM; stderr:\n%s"
                                   % (STOP_TIMEOUT, self.log()))
        self.returncode = self.proc.returncode
        self.proc = None
        if self._logf:
            self._logf.close()
            self._logf = None
        return self.returncode

    def threads(self):
        """[(tid, name)] of the daemon's threads. A thread may end between the listing and the
        read of its name (open() then succeeds and read() fails with ESRCH): it is left out."""
        if self.proc is None:
            return []
        task = "/proc/%d/task" % self.proc.pid
        found = []
        for tid in os.listdir(task):
            try:
                with open(os.path.join(task, tid, "comm")) as f:
                    found.append((int(tid), f.read().strip()))
            except (FileNotFoundError, ProcessLookupError):
                pass
        return found

    def helpers(self):
        """The daemon's helper processes: {"keeper": pid, "manage": pid, "sign": [pids]}
        (docs/design.md, "Privilege separation"); empty when the daemon is not running."""
        found = {"keeper": None, "manage": None, "sign": []}
        if self.proc is None:
            return found
        kids = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    argv = f.read().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append((int(entry), argv))
        for pid, argv in kids.get(self.proc.pid, []):
            if b"--keeper" in argv:
                found["keeper"] = pid
        for pid, argv in kids.get(found["keeper"], []):
            if b"--manage" in argv:
                found["manage"] = pid
            elif b"--serve" in argv:
                found["sign"].append(pid)
        found["sign"].sort()
        return found

    def helper_stat(self, field, pids=None):
        """{pid: value of field} for pids, by default the signing helpers. field is one of
        /proc/PID/io (syscr: read system calls; a frame from tokensignd arrives by recv(),
        which syscr does not count, so these are the module's reads of the token's files) or
        of /proc/PID/status (voluntary_ctxt_switches: a helper waits in recv() between
        requests, so a count that grew shows that it served one)."""
        out = {}
        for pid in (self.helpers()["sign"] if pids is None else pids):
            for name in ("io", "status"):
                with open("/proc/%d/%s" % (pid, name)) as f:
                    found = [ln for ln in f if ln.startswith(field + ":")]
                if found:
                    out[pid] = int(found[0].split()[1])
                    break
            else:
                raise HarnessError("no %s in /proc/%d/io or status" % (field, pid))
        return out

    def kill(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.returncode = self.proc.returncode
            self.proc = None
        if self._logf:
            self._logf.close()
            self._logf = None

    def restart(self):
        self.stop()
        return self.start()

    def close(self):
        try:
            if self.proc is not None:
                try:
                    self.stop()
                except HarnessError:
                    pass
        finally:
            self.kill()
            if os.environ.get("HARNESS_VERBOSE") and os.path.exists(self.log_path):
                sys.stderr.write("---- tokensignd stderr (%s) ----\n%s\n"
                                 % (self.workdir, self.log()))
            if self._notify is not None:
                self._notify.close()
                self._notify = None
            if self.workdir and os.path.isdir(self.workdir):
                shutil.rmtree(self.workdir, ignore_errors=True)
            _live.discard(self)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()
        return False

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    # -- requests --

    def unix_request(self, method, path, body=None, headers=None, as_uid=None, as_gid=None,
                     as_groups=None):
        """One HTTP/1.1 request on the sign socket. body: bytes|str|dict (a dict becomes JSON
        with Content-Type application/json unless headers name one; a header whose value is
        None is not sent). as_uid: make the request from a child running as that uid (gid: its
        passwd gid unless as_gid; no supplementary groups unless as_groups)."""
        if as_uid is None:
            return unix_http(self.sign_socket, method, path, body, headers)
        uid, gid, groups = _creds_of(as_uid, as_gid, as_groups)
        return run_as(uid, gid, groups, unix_http, self.sign_socket, method, path, body, headers)

    def sign(self, issuer, claims, typ=None, extra=None, as_uid=None, **kw):
        body = {"claims": claims}
        if typ is not None:
            body["typ"] = typ
        if extra:
            body.update(extra)
        return self.unix_request("POST", "/v1/issuers/%s/sign" % issuer, body, as_uid=as_uid,
                                 **kw)

    def http(self, method, path, headers=None, body=None):
        return tcp_http("127.0.0.1", self.jwks_port, method, path, body, headers)

    def jwks_url(self, issuer):
        return "http://127.0.0.1:%d/%s/.well-known/jwks.json" % (self.jwks_port, issuer)

    def jwks_uri(self, issuer):
        """The jwks_uri of issuer's discovery document (SPEC §3): [jwks] public-url, else the
        scheme and host of the issuer's iss; never anything from the request."""
        if self.jwks_public_url:
            base = self.jwks_public_url.rstrip("/")
        else:
            u = urllib.parse.urlsplit(self.issuers[issuer]["iss"])
            base = "%s://%s" % (u.scheme, u.netloc)
        return "%s/%s/.well-known/jwks.json" % (base, issuer)

    def jwks(self, issuer):
        """The parsed public JWKS of issuer (asserts nothing; raises on a non-200)."""
        r = self.http("GET", "/%s/.well-known/jwks.json" % issuer)
        if r.status != 200:
            raise HarnessError("JWKS of %s: %r" % (issuer, r))
        return r.json()


# ---- helpers for the tests ----

def b64url_decode(s):
    """Strict base64url without padding (RFC 7515 §2): raises ValueError on anything else."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    if "=" in s or not all(c.isalnum() or c in "-_" for c in s) or len(s) % 4 == 1:
        raise ValueError("not unpadded base64url: %r" % s[:80])
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url_encode(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def split_jws(token):
    """(header_json_text, payload_json_text, signature_bytes) of a compact JWS; raises
    ValueError unless it is three base64url parts."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("a compact JWS has 3 parts, got %d" % len(parts))
    return (b64url_decode(parts[0]).decode("utf-8"), b64url_decode(parts[1]).decode("utf-8"),
            b64url_decode(parts[2]))


def jwk_thumbprint(jwk):
    """RFC 7638 SHA-256 thumbprint of an EC or RSA JWK, base64url, computed independently of
    the daemon."""
    if jwk["kty"] == "EC":
        members = {"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}
    elif jwk["kty"] == "RSA":
        members = {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}
    elif jwk["kty"] == "OKP":
        members = {"crv": jwk["crv"], "kty": "OKP", "x": jwk["x"]}
    else:
        raise ValueError("unknown kty %r" % jwk["kty"])
    canon = json.dumps(members, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return b64url_encode(hashlib.sha256(canon.encode("utf-8")).digest())


def verify_es256(token, jwk):
    """True when the compact JWS token carries a valid ES256 (R||S) signature by the EC P-256
    public JWK. Independent of PyJWT: python3-cryptography directly."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    h, p, sig = token.split(".")
    raw = b64url_decode(sig)
    if len(raw) != 64:
        return False
    pub = ec.EllipticCurvePublicNumbers(
        int.from_bytes(b64url_decode(jwk["x"]), "big"),
        int.from_bytes(b64url_decode(jwk["y"]), "big"), ec.SECP256R1()).public_key()
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        pub.verify(der, (h + "." + p).encode("ascii"), ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


def start_or_close(d):
    """d.start(), closing d when the start fails: for setUpClass, after which no cleanup of the
    test runs. Returns d."""
    try:
        d.start()
    except BaseException:
        d.close()
        raise
    return d


def add_admin_socket(d, mode="0600"):
    """Gives d (not started) an [admin] socket in its workdir, d.admin_sock, and rewrites its
    configuration."""
    d.admin_sock = os.path.join(d.workdir, "admin.sock")
    d.extra_conf += "[admin]\nsocket = %s\nmode = %s\n" % (d.admin_sock, mode)
    d.write_config()
    return d


def shim_daemon(issuers=None, admin=False, cls=None, **kw):
    """A Daemon (not started; cls, default Daemon) that reaches its token through the p11shim
    fault-injecting module (tests/shim/README.md; P11SHIM must be set). Its fault file is
    d.faults (see write_faults), its call log d.shim_log; with admin, its admin socket is
    d.admin_sock. kw goes to the Daemon."""
    d = (cls or Daemon)(issuers=issuers, **kw)
    # p11-kit resolves a relative module name under its own module directory
    d.module = os.path.abspath(_env_path("P11SHIM"))
    if admin:
        add_admin_socket(d)
    d.write_config()  # the config was written in __init__ with the real module
    d.faults = os.path.join(d.workdir, "p11shim.faults")
    d.shim_log = os.path.join(d.workdir, "p11shim.log")
    d.env.update(P11SHIM_MODULE=softhsm_module(), P11SHIM_FAULTS=d.faults,
                 P11SHIM_LOG=d.shim_log)
    return d


def write_faults(d, *lines):
    """Replaces d's p11shim fault file atomically (temp + rename, as the shim itself does): the
    shim re-reads it on every call. No lines: no faults. Under the shim's lock (d.faults +
    ".lock"), so that no helper process that is using up a count at that moment rewrites the
    old text over the new one."""
    tmp = d.faults + ".test-tmp"
    with open(tmp, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    with open(d.faults + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.rename(tmp, d.faults)


class CopiesDaemon(Daemon):
    """A Daemon with [hsm] session-copies = yes."""

    def config_text(self):
        lines = super().config_text().split("\n")
        lines.insert(lines.index("[hsm]") + 1, "session-copies = yes")
        return "\n".join(lines)


def p11probe(module, label, pin_file, env=None):
    r = subprocess.run([p11probe_path(), module, label, pin_file], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise HarnessError("p11probe failed (%d): %s" % (r.returncode, r.stderr))
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def check_config(conf_text, env=None):
    """Writes conf_text to <tmp>/tokensignd.conf and runs tokensignd --check-config on it.
    Returns (returncode, stderr). Messages name the file as '.../tokensignd.conf:LINE: ...'."""
    d = tempfile.mkdtemp(prefix="tokensign-conf-")
    try:
        path = os.path.join(d, "tokensignd.conf")
        with open(path, "w") as f:
            f.write(conf_text)
        e = dict(os.environ if env is None else env)
        e.pop("CREDENTIALS_DIRECTORY", None)
        r = subprocess.run([tokensignd_path(), "--check-config", "-c", path], env=e,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        return r.returncode, r.stderr.decode("utf-8", "replace")
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---- unittest glue shared by tests/integration/test_*.py ----

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer", "ERROR: MemorySanitizer")

VALID_CLAIMS = {"sub": "user-42", "aud": "api://orders"}


class TestCase(unittest.TestCase):
    """Assertions about tokensignd answers."""

    maxDiff = None

    def assertError(self, r, status, code, msg=None):
        """r is the error answer SPEC §4 / docs/api.md describe: that status, Content-Type
        application/json, body exactly {"error": code, "message": non-empty text}."""
        ctx = "%s%r" % ((msg + ": ") if msg else "", r)
        self.assertEqual(r.status, status, ctx)
        ct = r.headers.get("content-type", "")
        self.assertEqual(ct.split(";")[0].strip().lower(), "application/json", ctx)
        try:
            body = json.loads(r.body.decode("utf-8"))
        except ValueError:
            self.fail("error body is not JSON: " + ctx)
        self.assertIsInstance(body, dict, ctx)
        self.assertEqual(sorted(body), ["error", "message"], ctx)
        self.assertEqual(body["error"], code, ctx)
        self.assertIsInstance(body["message"], str, ctx)
        self.assertTrue(body["message"].strip(), "empty message: " + ctx)
        return body

    def assertSigned(self, r, msg=None):
        """r is a 200 sign answer; returns its parsed body."""
        ctx = "%s%r" % ((msg + ": ") if msg else "", r)
        self.assertEqual(r.status, 200, ctx)
        self.assertEqual(r.headers.get("content-type", "").split(";")[0].strip().lower(),
                         "application/json", ctx)
        body = r.json()
        self.assertEqual(sorted(body), ["alg", "exp", "iat", "kid", "token"], ctx)
        split_jws(body["token"])
        return body

    def assertNoSanitizerReport(self, d):
        """When the daemon is built with -Db_sanitize=..., any report in its log fails."""
        log = d.log()
        for marker in SANITIZER_MARKERS:
            if marker in log:
                self.fail("sanitizer report in the daemon's log:\n" + log)

    def assertStillSigns(self, d, issuer="main", claims=None, **kw):
        """The daemon is alive and signs a valid request for issuer."""
        self.assertIsNotNone(d.proc, "daemon not running")
        if d.proc.poll() is not None:
            self.fail("daemon died with status %r (workdir %s %s); stderr:\n%s"
                      % (d.proc.returncode, d.workdir,
                         "exists" if os.path.isdir(d.workdir) else "IS GONE", d.log()))
        self.assertNoSanitizerReport(d)
        return self.assertSigned(d.sign(issuer, dict(claims or VALID_CLAIMS), **kw),
                                 "valid sign after the previous requests")


def main():
    """unittest.main() that also fails when no test ran or any test was skipped."""
    prog = unittest.main(verbosity=2, exit=False)
    res = prog.result
    if res.testsRun == 0:
        print("no test ran", file=sys.stderr)
        sys.exit(1)
    if res.skipped:
        print("tests were skipped: %r" % [str(t) for t, _ in res.skipped], file=sys.stderr)
        sys.exit(1)
    sys.exit(0 if res.wasSuccessful() else 1)
