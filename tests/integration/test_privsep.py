#!/usr/bin/python3
"""Privilege separation (docs/design.md, "Privilege separation"): the request-facing process
never loads the PKCS#11 module nor keeps the PIN file; the helpers are confined; a killed
signing helper is replaced and signing goes on; and a helper driven directly over its protocol,
as a compromised front process would drive it, signs only what its guard allows and exits on
anything outside the protocol."""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

import harness

# daemon/proto/proto.h
VERSION = 2
OP_READY, OP_PROBE, OP_GENERATE, OP_SIGN, OP_PROVE = 1, 2, 4, 13, 14
ES256 = 0
EX_PROTOCOL = 76  # sysexits.h: what a helper exits with on a request outside the protocol


def b(data):
    return struct.pack("<I", len(data)) + data


def frame(body):
    return struct.pack("<I", len(body)) + body


def sign_request(key_id, alg, signing_input):
    return frame(struct.pack("<BB", VERSION, OP_SIGN) + b(key_id) + struct.pack("<B", alg)
                 + b(signing_input))


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("the helper closed the socket")
        data += chunk
    return data


def read_answer(sock, op):
    """(result, error text, rest of the body) of one answer to op."""
    (n,) = struct.unpack("<I", recv_exact(sock, 4))
    body = recv_exact(sock, n)
    ver, got, result, _repairs, elen = struct.unpack("<BBiBI", body[:11])
    assert (ver, got) == (VERSION, op), (ver, got)
    return result, body[11:11 + elen].decode(), body[11 + elen:]


def signing_input(header, claims):
    enc = harness.b64url_encode
    return (enc(json.dumps(header, separators=(",", ":")).encode()) + "." +
            enc(json.dumps(claims, separators=(",", ":")).encode())).encode()


class PrivsepTest(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = harness.Daemon()
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def maps(self, pid):
        with open("/proc/%d/maps" % pid) as f:
            return f.read()

    def status(self, pid):
        with open("/proc/%d/status" % pid) as f:
            return dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)

    def open_files(self, pid):
        out = []
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                out.append(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
            except OSError:
                pass
        return out

    def test_front_never_loads_the_module_nor_keeps_the_pin_file(self):
        h = self.d.helpers()
        self.assertIsNotNone(h["keeper"], h)
        self.assertIsNotNone(h["manage"], h)
        self.assertEqual(len(h["sign"]), max(2, min(16, os.cpu_count())), h)
        module = os.path.realpath(self.d.module)
        self.assertNotIn(module, self.maps(self.d.proc.pid))
        self.assertNotIn("libsofthsm2", self.maps(self.d.proc.pid))
        for pid in [h["manage"]] + h["sign"]:
            self.assertIn(module, self.maps(pid), "helper %d has the module" % pid)
        # The keeper never loads it either: it only keeps the PIN file for new helpers.
        self.assertNotIn(module, self.maps(h["keeper"]))
        pin = os.path.realpath(self.d.pin_file)
        self.assertNotIn(pin, self.open_files(self.d.proc.pid))
        self.assertIn(pin, self.open_files(h["keeper"]))

    def test_every_process_is_confined(self):
        h = self.d.helpers()
        for pid in [self.d.proc.pid, h["keeper"], h["manage"]] + h["sign"]:
            st = self.status(pid)
            self.assertEqual(st["Seccomp"].strip(), "2", "pid %d: %s" % (pid, st["Seccomp"]))
            self.assertEqual(st["NoNewPrivs"].strip(), "1", pid)

    def test_killed_signing_helper_is_replaced_and_signing_goes_on(self):
        results, stop = [], threading.Event()

        def signer():
            while not stop.is_set():
                r = self.d.sign("main", {"aud": "api://orders"})
                results.append((time.monotonic(), r.status, r.json().get("error")))

        threads = [threading.Thread(target=signer) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            before = self.d.helpers()["sign"]
            killed_at = time.monotonic()
            os.kill(before[0], signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                now = self.d.helpers()["sign"]
                if len(now) == len(before) and before[0] not in now:
                    break
                time.sleep(0.05)
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join()
        after = self.d.helpers()["sign"]
        self.assertNotIn(before[0], after)
        self.assertEqual(len(after), len(before), (before, after))
        # Every answer is a signature or a clean 503; signing resumes within a second.
        odd = [r for r in results if r[1] != 200 and (r[1], r[2]) != (503, "hsm_unavailable")]
        self.assertEqual(odd, [])
        ok_after = [t for t, status, _ in results if status == 200 and t > killed_at]
        self.assertTrue(ok_after and ok_after[0] - killed_at < 1.0,
                        (ok_after[:3], killed_at, results[-5:]))
        self.assertRegex(self.d.log(), r"token helper %d \(signing\) (died|hung up); "
                                       r"starting another" % before[0])
        self.assertSigned(self.d.sign("main", {"aud": "api://orders"}))

    # -- the helper's protocol, driven as a compromised front process would --

    def helper(self, manage=False):
        """A signing (or management) helper on this token, on a socketpair of ours."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pin = os.open(self.d.pin_file, os.O_RDONLY)

        def fds():
            os.dup2(theirs.fileno(), 3)
            os.dup2(pin, 4)

        argv = [harness.tokensign_hsm_path(), "--serve", self.d.module, self.d.token_label,
                self.d.pin_file] + (["--manage"] if manage else [])
        p = subprocess.Popen(argv, env=self.d.env, preexec_fn=fds, pass_fds=(3, 4),
                             stderr=subprocess.PIPE)
        theirs.close()
        os.close(pin)
        # Cleanups run last-in first-out: kill, then reap, then close.
        self.addCleanup(ours.close)
        self.addCleanup(p.stderr.close)
        self.addCleanup(p.wait)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        ours.settimeout(20)
        self.assertEqual(read_answer(ours, OP_READY)[0], 0)
        return p, ours

    def key(self):
        """The active key of issuer main: its CKA_ID, kid, iss and max_token_ttl, from the
        token's own record."""
        kid = harness.split_jws(self.d.sign("main", {"aud": "api://orders"}).json()["token"])
        kid = json.loads(kid[0])["kid"]
        for o in harness.p11probe(self.d.module, self.d.token_label, self.d.pin_file,
                                  self.d.env):
            if o.get("class") == "data" and o.get("label", "").endswith(":" + kid):
                return json.loads(o["value"])
        self.fail("no record of %s" % kid)

    def jwk(self, kid):
        return next(k for k in self.d.jwks("main")["keys"] if k["kid"] == kid)

    def test_helper_signs_what_names_the_key_and_nothing_else(self):
        rec = self.key()
        key_id = bytes.fromhex(rec["id"])
        p, s = self.helper()
        now = int(time.time())
        header = {"alg": "ES256", "kid": rec["kid"], "typ": "JWT"}
        good = {"iss": rec["iss"], "aud": "x", "iat": now, "exp": now + 60}
        s.sendall(sign_request(key_id, ES256, signing_input(header, good)))
        result, err, rest = read_answer(s, OP_SIGN)
        self.assertEqual((result, err), (0, ""))
        sig = rest[4:4 + struct.unpack("<I", rest[:4])[0]]
        token = signing_input(header, good).decode() + "." + harness.b64url_encode(sig)
        self.assertTrue(harness.verify_es256(token, self.jwk(rec["kid"])))

        refusals = {
            "another issuer's iss": (header, dict(good, iss="https://other.example/")),
            "no iss": (header, {k: v for k, v in good.items() if k != "iss"}),
            "a longer life": (header, dict(good, exp=now + rec["max_token_ttl"] + 1)),
            "backdated": (header, dict(good, iat=now - 3600, exp=now - 3500)),
            "another kid": (dict(header, kid="A" * 43), good),
            "another alg": (dict(header, alg="RS256"), good),
            "an extra header member": (dict(header, jku="https://evil.example/"), good),
        }
        for what, (hdr, claims) in refusals.items():
            s.sendall(sign_request(key_id, ES256, signing_input(hdr, claims)))
            result, err, rest = read_answer(s, OP_SIGN)
            self.assertEqual(result, -1, "%s: %d %s" % (what, result, err))  # -EPERM
            self.assertIn("signature refused", err, what)
            self.assertEqual(rest, b"", what)
        # Not a JWS at all: a proof's prefix on the signing path, raw bytes.
        for raw in (b"tokensign: anything", b"\x00" * 32, b"a.b.c"):
            s.sendall(sign_request(key_id, ES256, raw))
            self.assertEqual(read_answer(s, OP_SIGN)[0], -1, raw)
        # A key it does not have.
        s.sendall(sign_request(os.urandom(16), ES256, signing_input(header, good)))
        self.assertLess(read_answer(s, OP_SIGN)[0], 0)
        self.assertIsNone(p.poll(), "refusals are answers, not exits")

    def test_signing_helper_serves_no_management_op(self):
        p, s = self.helper()
        s.sendall(frame(struct.pack("<BB", VERSION, OP_GENERATE) + struct.pack("<BI", ES256, 0)
                        + b(b"tokensign:main")))
        self.assertEqual(p.wait(10), EX_PROTOCOL)

    def test_management_helper_proves_only_with_the_prefix(self):
        rec = self.key()
        p, s = self.helper(manage=True)
        # PROVE names the key by handles; 0/0 with a JWS-looking challenge must be refused
        # before any handle is used.
        key = b(bytes.fromhex(rec["id"])) + struct.pack("<BQQ", ES256, 0, 0)
        body = struct.pack("<BB", VERSION, OP_PROVE) + key + b(signing_input(
            {"alg": "ES256", "kid": rec["kid"]}, {"iss": rec["iss"]}))
        s.sendall(frame(body))
        result, err, _ = read_answer(s, OP_PROVE)
        self.assertEqual(result, -1, err)
        self.assertIn("must begin with", err)
        # And the management helper never signs a JWS.
        s.sendall(sign_request(bytes.fromhex(rec["id"]), ES256, b"x.y"))
        self.assertEqual(p.wait(10), EX_PROTOCOL)

    def test_helper_exits_on_anything_outside_the_protocol(self):
        cases = {
            "unknown version": frame(struct.pack("<BB", 9, OP_PROBE)),
            "unknown op": frame(struct.pack("<BB", VERSION, 200)),
            "READY is not a request": frame(struct.pack("<BB", VERSION, OP_READY)),
            "trailing bytes": frame(struct.pack("<BBB", VERSION, OP_PROBE, 0)),
            "a field longer than its frame": frame(struct.pack("<BB", VERSION, OP_SIGN)
                                                   + struct.pack("<I", 1000) + b"x"),
            "an id of 15 bytes": sign_request(b"\x01" * 15, ES256, b"a.b"),
            "an unknown alg": sign_request(b"\x01" * 16, 77, b"a.b"),
            "a frame over the cap": struct.pack("<I", 64 * 1024 * 1024),
            "a frame too short": frame(b"\x01"),
        }
        for what, data in cases.items():
            p, s = self.helper()
            s.sendall(data)
            try:
                status = p.wait(10)
            except subprocess.TimeoutExpired:
                status = "still running"
            self.assertEqual(status, EX_PROTOCOL, what)
        # A probe, for contrast, is answered.
        p, s = self.helper()
        s.sendall(frame(struct.pack("<BB", VERSION, OP_PROBE)))
        self.assertEqual(read_answer(s, OP_PROBE)[0], 0)



class CredentialDaemon(harness.Daemon):
    """The PIN as the packaged unit passes it: a systemd credential, $CREDENTIALS_DIRECTORY/hsm-pin,
    and no pin-file in the configuration."""

    def __init__(self, **kw):
        super().__init__(**kw)
        creds = os.path.join(self.workdir, "credentials")
        os.makedirs(creds, mode=0o700, exist_ok=True)
        self.pin_file = os.path.join(creds, "hsm-pin")
        self.env["CREDENTIALS_DIRECTORY"] = creds

    def config_text(self):
        return "\n".join(line for line in super().config_text().split("\n")
                         if not line.startswith("pin-file"))


class PinCredentialTest(harness.TestCase):
    def test_the_credential_is_hidden_from_the_front(self):
        d = CredentialDaemon()
        self.addCleanup(d.close)
        harness.start_or_close(d)
        self.assertIn("the PIN file is hidden from this process (Landlock)", d.log())
        self.assertSigned(d.sign("main", {"aud": "api://orders"}))
        # The front reads what it needs after that: a reload re-reads the configuration.
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while "reload" not in d.log().lower() and time.time() < deadline:
            time.sleep(0.1)
        self.assertNotIn("cannot read", d.log())
        self.assertSigned(d.sign("main", {"aud": "api://orders"}))
        # A helper started after the front hid the file still logs in: the keeper holds it.
        os.kill(d.helpers()["sign"][0], signal.SIGKILL)
        for _ in range(4):
            self.assertSigned(d.sign("main", {"aud": "api://orders"}))
        self.assertNoSanitizerReport(d)

    def test_a_pin_file_elsewhere_is_left_readable_and_said_so(self):
        d = harness.Daemon()
        self.addCleanup(d.close)
        harness.start_or_close(d)
        self.assertIn("the PIN file is not a systemd credential", d.log())


class UnpinnedDaemon(harness.Daemon):
    def config_text(self):
        return self.__class__.__bases__[0].config_text(self).replace(
            "[hsm]\n", "[hsm]\npin-cpus = no\n", 1)


class PinRefusedDaemon(harness.Daemon):
    """Runs under strace, which makes every sched_setaffinity(2) fail with EPERM: what a unit
    whose system call filter refuses the call does to the daemon."""

    def spawn(self):
        wrapper = os.path.join(self.workdir, "refuse-affinity")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec %s -f -qq -o /dev/null "
                    "-e trace=sched_setaffinity -e inject=sched_setaffinity:error=EPERM "
                    "-- %s \"$@\"\n" % (shutil.which("strace"), harness.tokensignd_path()))
        os.chmod(wrapper, 0o755)
        self.binary = wrapper
        return super().spawn()

    def daemon_pid(self):
        with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
            return int(f.read().split()[0])

    def stop(self):
        # strace (-o) ignores SIGTERM: the daemon itself is told to stop.
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.daemon_pid(), signal.SIGTERM)
        return super().stop()


class PinCpusTest(harness.TestCase):
    def cpus_allowed(self, pid, tid=None):
        path = "/proc/%d/status" % pid if tid is None else "/proc/%d/task/%d/status" % (pid, tid)
        with open(path) as f:
            for line in f:
                if line.startswith("Cpus_allowed_list:"):
                    return line.split(":", 1)[1].strip()
        return None

    def test_each_signing_helper_on_a_cpu_of_its_own_with_its_worker(self):
        if len(os.sched_getaffinity(0)) < 2:
            self.skipTest("one CPU: nothing to pin apart")
        d = harness.Daemon()  # pin-cpus = yes is the default
        self.addCleanup(d.close)
        harness.start_or_close(d)
        for _ in range(20):
            self.assertSigned(d.sign("main", {"aud": "api://orders"}))
        helpers = d.helpers()
        cpus = [self.cpus_allowed(p) for p in helpers["sign"]]
        self.assertTrue(all(c and c.isdigit() for c in cpus), cpus)
        self.assertEqual(len(set(cpus)), min(len(cpus), len(os.sched_getaffinity(0))), cpus)
        # The workers that signed run on their helpers' CPUs; nothing else of the front is pinned.
        workers = []
        for tid, name in d.threads():
            if name == "sign-worker":
                workers.append(self.cpus_allowed(d.proc.pid, tid))
        self.assertTrue(set(w for w in workers if w.isdigit()) <= set(cpus), (workers, cpus))
        self.assertFalse(self.cpus_allowed(d.proc.pid).isdigit())
        self.assertNotIn("pin-cpus", d.log())

    def test_not_pinned_with_no(self):
        d = UnpinnedDaemon()
        self.addCleanup(d.close)
        harness.start_or_close(d)
        self.assertSigned(d.sign("main", {"aud": "api://orders"}))
        for pid in d.helpers()["sign"]:
            self.assertEqual(self.cpus_allowed(pid), self.cpus_allowed(d.proc.pid))

    def test_pinning_refused_signs_unpinned_and_says_so_once(self):
        if not shutil.which("strace"):
            self.skipTest("strace not installed")
        d = PinRefusedDaemon()
        self.addCleanup(d.close)
        harness.start_or_close(d)
        for _ in range(20):
            self.assertSigned(d.sign("main", {"aud": "api://orders"}))
        # Every helper and worker was refused (all went through strace); one line says so.
        said = [l for l in d.log().splitlines() if "pin-cpus: cannot pin" in l]
        self.assertEqual(len(said), 1, d.log()[-3000:])
        self.assertIn("Operation not permitted", said[0])
        self.assertIn("pin-cpus = no", said[0])
        front = d.daemon_pid()
        with open("/proc/%d/task/%d/children" % (front, front)) as f:
            helpers = [int(p) for p in f.read().split()]
        self.assertTrue(helpers)
        for pid in helpers:
            self.assertEqual(self.cpus_allowed(pid), self.cpus_allowed(front))


if __name__ == "__main__":
    harness.main()
