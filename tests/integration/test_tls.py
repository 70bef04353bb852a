#!/usr/bin/python3
"""HTTPS on the JWKS and metrics listeners (docs/operations.md, "TLS"): a throwaway CA made with
the openssl CLI; curl and Python's ssl fetch the JWKS; TLS 1.1 is refused; HSTS only over HTTPS;
the metrics with client-ca refuse clients without a certificate of that CA during the handshake;
SIGHUP serves a new certificate to new connections while an open keep-alive connection stays
usable, and keeps the old one when the new key is broken; a silent or half handshake is cut off
by the request deadline; bad TLS settings refuse start with a clear message."""

import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

import harness


class Pki:
    """A CA, server certificates (SAN IP:127.0.0.1) and client certificates, in a temp dir."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tokensign-tls-")
        self.serial = 1

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def _openssl(self, *args):
        r = subprocess.run(["openssl"] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, cwd=self.dir)
        if r.returncode != 0:
            raise AssertionError("openssl %s: %s" % (" ".join(args), r.stderr))
        return r.stdout

    def key(self, name):
        self._openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-out", self.path(name))
        os.chmod(self.path(name), 0o600)
        return self.path(name)

    def ca(self, name):
        self.key(name + ".key")
        self._openssl("req", "-x509", "-new", "-key", self.path(name + ".key"), "-subj",
                      "/CN=%s" % name, "-days", "2", "-addext",
                      "basicConstraints=critical,CA:TRUE", "-addext",
                      "keyUsage=critical,keyCertSign,cRLSign", "-out", self.path(name + ".crt"))
        return self.path(name + ".crt")

    def leaf(self, name, cn, ca="ca", usage="serverAuth", key=None):
        """A certificate for cn signed by ca, with a fresh serial; key: reuse that key file."""
        keyfile = key or self.key(name + ".key")
        ext = self.path(name + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=%s\n"
                    "basicConstraints=CA:FALSE\n" % usage)
        self._openssl("req", "-new", "-key", keyfile, "-subj", "/CN=%s" % cn, "-out",
                      self.path(name + ".csr"))
        self.serial += 1
        self._openssl("x509", "-req", "-in", self.path(name + ".csr"), "-CA",
                      self.path(ca + ".crt"), "-CAkey", self.path(ca + ".key"), "-set_serial",
                      str(self.serial), "-days", "2", "-extfile", ext, "-out",
                      self.path(name + ".crt"))
        return self.path(name + ".crt"), keyfile


class TlsDaemon(harness.Daemon):
    """harness.Daemon with lines added to [jwks] (the harness writes that section itself)."""

    def __init__(self, jwks_lines=(), **kw):
        self.jwks_lines = list(jwks_lines)
        super().__init__(**kw)

    def config_text(self):
        text = super().config_text()
        anchor = "max-age = %s\n" % self.jwks_max_age
        return text.replace(anchor, anchor + "".join(l + "\n" for l in self.jwks_lines), 1)

    def reload(self, marker="reload: done"):
        before = self.log().count(marker)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while self.log().count(marker) == before:
            if time.monotonic() > deadline:
                raise AssertionError("no %r after SIGHUP:\n%s" % (marker, self.log()))
            time.sleep(0.05)


def client_context(cafile, cert=None, key=None):
    ctx = ssl.create_default_context(cafile=cafile)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def peer_cn(sock):
    subject = dict(x[0] for x in sock.getpeercert()["subject"])
    return subject["commonName"]


def https_get(port, path, ctx):
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read(), peer_cn(c.sock)
    finally:
        c.close()


class TestJwksTls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki = Pki()
        cls.ca = cls.pki.ca("ca")
        cls.cert, cls.key = cls.pki.leaf("srv", "server-one")
        cls.d = TlsDaemon(jwks_lines=["tls-cert = %s" % cls.cert, "tls-key = %s" % cls.key,
                                      "request-timeout = 2s"])
        try:
            cls.d.start()
        except BaseException:
            cls.d.close()
            cls.pki.close()
            raise
        cls.url = "https://127.0.0.1:%d/main/.well-known/jwks.json" % cls.d.jwks_port

    @classmethod
    def tearDownClass(cls):
        cls.d.close()
        cls.pki.close()

    def test_curl(self):
        r = subprocess.run(["curl", "-sS", "--cacert", self.ca, "-D", "-", self.url],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('"keys"', r.stdout)
        self.assertIn("strict-transport-security: max-age=31536000", r.stdout.lower())

    def test_curl_refuses_without_ca(self):
        # The certificate is not from a public CA: a client that does not trust ours refuses.
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", self.url],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=30)
        self.assertNotEqual(r.returncode, 0)

    def test_python_ssl_and_hsts(self):
        status, headers, body, cn = https_get(self.d.jwks_port, "/main/.well-known/jwks.json",
                                              client_context(self.ca))
        self.assertEqual(status, 200)
        self.assertTrue(body.startswith(b'{"keys":['), body)
        self.assertEqual(cn, "server-one")
        self.assertEqual(headers.get("Strict-Transport-Security"), "max-age=31536000")
        # On errors too: every HTTPS answer.
        status, headers, _, _ = https_get(self.d.jwks_port, "/nope",
                                          client_context(self.ca))
        self.assertEqual(status, 404)
        self.assertEqual(headers.get("Strict-Transport-Security"), "max-age=31536000")

    def test_plain_http_refused_on_tls_port(self):
        with self.assertRaises((ConnectionError, harness.HarnessError, OSError, ValueError,
                                IndexError)):
            r = self.d.http("GET", "/main/.well-known/jwks.json")
            if r.status == 200:
                raise AssertionError("plain HTTP answered on the HTTPS port")
            raise ValueError("refused")

    def s_client(self, *version):
        """openssl s_client with only the given protocol version; SECLEVEL=0 so that the
        client itself would offer TLS 1.1: a refusal is the server's."""
        return subprocess.run(
            ["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.d.jwks_port,
             "-CAfile", self.ca, "-cipher", "DEFAULT:@SECLEVEL=0"] + list(version),
            input="", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)

    def test_versions(self):
        self.assertNotEqual(self.s_client("-tls1_1").returncode, 0)
        self.assertNotEqual(self.s_client("-tls1").returncode, 0)
        for v in ("-tls1_2", "-tls1_3"):
            r = self.s_client(v)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("Verify return code: 0 (ok)", r.stdout)

    def assertCutOff(self, sock, within):
        sock.settimeout(within)
        start = time.monotonic()
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            data = b""
        except socket.timeout:
            self.fail("the connection was not cut off within %gs" % within)
        # A TLS alert at most, never an answer.
        self.assertLess(len(data), 64, data)
        return time.monotonic() - start

    def test_silent_client_cut_off(self):
        with socket.create_connection(("127.0.0.1", self.d.jwks_port)) as s:
            took = self.assertCutOff(s, 10)
            self.assertGreater(took, 1)

    def test_half_client_hello_cut_off(self):
        with socket.create_connection(("127.0.0.1", self.d.jwks_port)) as s:
            # A handshake record that announces 512 bytes, then only its first few.
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(16))
            self.assertCutOff(s, 10)

    def test_trickling_handshake_cut_off(self):
        # One byte a second keeps libmicrohttpd's idle timeout from firing; the deadline does.
        with socket.create_connection(("127.0.0.1", self.d.jwks_port)) as s:
            hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(32)
            start = time.monotonic()
            for b in hello:
                try:
                    s.sendall(bytes([b]))
                except OSError:
                    break
                if time.monotonic() - start > 8:
                    self.fail("still connected after 8s of a trickled handshake")
                time.sleep(0.5)
                s.settimeout(0.01)
                try:
                    if s.recv(64) == b"":
                        break
                except socket.timeout:
                    pass
                except ConnectionResetError:
                    break
            self.assertLess(time.monotonic() - start, 8)


def metric(port, name, **labels):
    """A sample of the plain metrics listener on port (None: no such series)."""
    body = harness.tcp_http("127.0.0.1", port, "GET", "/metrics").body.decode()
    want = name + ("{" + ",".join('%s="%s"' % kv for kv in sorted(labels.items())) + "}"
                   if labels else "")
    for line in body.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[1])
    return None


class TestLimitsOnTls(unittest.TestCase):
    def test_per_address_cap_and_counts(self):
        pki = Pki()
        self.addCleanup(pki.close)
        ca = pki.ca("ca")
        cert, key = pki.leaf("srv", "server-one")
        mport = harness.free_port()
        d = TlsDaemon(jwks_lines=["tls-cert = %s" % cert, "tls-key = %s" % key,
                                  "max-connections-per-address = 2"],
                      extra_conf="[metrics]\nlisten = 127.0.0.1:%d\n" % mport)
        self.addCleanup(d.close)
        d.start()
        ctx = client_context(ca)
        held = []
        for _ in range(2):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", d.jwks_port)),
                                server_hostname="127.0.0.1")
            held.append(s)
            self.addCleanup(s.close)
        self.assertEqual(metric(mport, "tokensign_connections_open", listener="jwks"), 2)
        refused = metric(mport, "tokensign_connections_refused_total", listener="jwks") or 0
        # The third from the same address is closed before any handshake, and counted.
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", d.jwks_port)),
                                 server_hostname="127.0.0.1"):
                pass
        deadline = time.monotonic() + 5
        while metric(mport, "tokensign_connections_refused_total", listener="jwks") != \
                refused + 1:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        # The held ones still work.
        held[0].sendall(b"GET /main/.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(held[0].recv(64).startswith(b"HTTP/1.1 200"))


class TestJwksPlain(unittest.TestCase):
    def test_no_hsts_on_plain_http(self):
        with harness.Daemon() as d:
            r = d.http("GET", "/main/.well-known/jwks.json")
            self.assertEqual(r.status, 200)
            self.assertNotIn("strict-transport-security",
                             {k.lower() for k in r.headers})


class TestReload(unittest.TestCase):
    def setUp(self):
        self.pki = Pki()
        self.ca = self.pki.ca("ca")
        self.cert, self.key = self.pki.leaf("srv", "server-one")
        self.d = TlsDaemon(jwks_lines=["tls-cert = %s" % self.cert, "tls-key = %s" % self.key])
        try:
            self.d.start()
        except BaseException:
            self.d.close()
            self.pki.close()
            raise

    def tearDown(self):
        self.d.close()
        self.pki.close()

    def get(self, conn):
        conn.request("GET", "/main/.well-known/jwks.json")
        r = conn.getresponse()
        r.read()
        return r.status

    def test_new_cert_for_new_connections_old_connection_lives(self):
        ctx = client_context(self.ca)
        old = http.client.HTTPSConnection("127.0.0.1", self.d.jwks_port, context=ctx,
                                          timeout=10)
        self.assertEqual(self.get(old), 200)
        self.assertEqual(peer_cn(old.sock), "server-one")
        # New certificate and key, written over the same files.
        self.pki.leaf("srv", "server-two")
        self.d.reload("TLS certificate and key read again")
        _, _, _, cn = https_get(self.d.jwks_port, "/main/.well-known/jwks.json", ctx)
        self.assertEqual(cn, "server-two")
        # The keep-alive connection opened before: same socket, still served.
        sock = old.sock
        self.assertEqual(self.get(old), 200)
        self.assertIs(old.sock, sock)
        self.assertEqual(peer_cn(old.sock), "server-one")
        old.close()
        self.assertIsNone(self.d.proc.poll())

    def test_connection_accepted_before_reload_keeps_its_credentials(self):
        # Accepted (and its credentials pinned) before the reload, handshake after it: the
        # credentials it pinned must still be alive (a sanitizer build reports a use after
        # free otherwise), and they are the old ones.
        ctx = client_context(self.ca)
        raw = socket.create_connection(("127.0.0.1", self.d.jwks_port))
        self.addCleanup(raw.close)
        time.sleep(0.3)
        self.pki.leaf("srv", "server-two")
        self.d.reload("TLS certificate and key read again")
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as t:
            self.assertEqual(peer_cn(t), "server-one")
        self.assertEqual(https_get(self.d.jwks_port, "/main/.well-known/jwks.json", ctx)[3],
                         "server-two")

    def test_broken_key_keeps_old_cert(self):
        ctx = client_context(self.ca)
        def garbage():
            with open(self.key, "w") as f:
                f.write("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")

        # A key that does not match, then one that is not a key at all.
        for bad in (lambda: self.pki.key("srv.key"), garbage):
            bad()
            self.d.reload("keeps serving its current TLS certificate")
            status, _, _, cn = https_get(self.d.jwks_port, "/main/.well-known/jwks.json", ctx)
            self.assertEqual((status, cn), (200, "server-one"))
            self.assertIsNone(self.d.proc.poll())
        log = self.d.log()
        self.assertIn("does not match the certificate", log)
        self.assertNotIn("AAAA", log)
        # A good pair again is taken.
        self.pki.leaf("srv", "server-three")
        self.d.reload("TLS certificate and key read again")
        self.assertEqual(https_get(self.d.jwks_port, "/main/.well-known/jwks.json", ctx)[3],
                         "server-three")

    def test_unreadable_cert_keeps_old(self):
        os.unlink(self.cert)
        self.d.reload("keeps serving its current TLS certificate")
        self.assertIn("No such file or directory", self.d.log())
        ctx = client_context(self.ca)
        self.assertEqual(https_get(self.d.jwks_port, "/main/.well-known/jwks.json", ctx)[3],
                         "server-one")


class CredentialTlsDaemon(TlsDaemon):
    """The PIN as the packaged unit passes it (a credential, which the front hides from itself
    with Landlock, test_privsep.py): the TLS files must stay readable at reload."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.creds = os.path.join(self.workdir, "credentials")
        os.makedirs(self.creds, mode=0o700, exist_ok=True)
        self.pin_file = os.path.join(self.creds, "hsm-pin")
        self.env["CREDENTIALS_DIRECTORY"] = self.creds

    def config_text(self):
        return "\n".join(line for line in super().config_text().split("\n")
                         if not line.startswith("pin-file"))


class TestReloadConfined(unittest.TestCase):
    def test_reload_reads_cert_under_landlock_and_seccomp(self):
        pki = Pki()
        self.addCleanup(pki.close)
        ca = pki.ca("ca")
        cert, key = pki.leaf("srv", "server-one")
        d = CredentialTlsDaemon()
        self.addCleanup(d.close)
        # The key as a credential, beside the PIN; the certificate in a directory of its own.
        cred_key = os.path.join(d.creds, "jwks.key")
        shutil.copy(key, cred_key)
        d.jwks_lines = ["tls-cert = %s" % cert, "tls-key = %s" % cred_key]
        d.write_config()
        d.start()
        self.assertIn("the PIN file is hidden from this process (Landlock)", d.log())
        ctx = client_context(ca)
        self.assertEqual(https_get(d.jwks_port, "/main/.well-known/jwks.json", ctx)[3],
                         "server-one")
        # A new certificate for the same key, written after the front confined itself.
        pki.leaf("srv", "server-two", key=key)
        d.reload("TLS certificate and key read again")
        self.assertEqual(https_get(d.jwks_port, "/main/.well-known/jwks.json", ctx)[3],
                         "server-two")
        self.assertNotIn("Permission denied", d.log())


class TestReloadTurnsTlsOn(unittest.TestCase):
    def test_plain_to_https_and_metrics_says_restart(self):
        pki = Pki()
        self.addCleanup(pki.close)
        ca = pki.ca("ca")
        cert, key = pki.leaf("srv", "server-one")
        port = harness.free_port()
        d = TlsDaemon(extra_conf="[metrics]\nlisten = 127.0.0.1:%d\n" % port)
        self.addCleanup(d.close)
        d.start()
        self.assertEqual(d.http("GET", "/main/.well-known/jwks.json").status, 200)
        d.jwks_lines = ["tls-cert = %s" % cert, "tls-key = %s" % key]
        d.extra_conf += "tls-cert = %s\ntls-key = %s\n" % (cert, key)
        d.write_config()
        d.reload()
        status, headers, _, cn = https_get(d.jwks_port, "/main/.well-known/jwks.json",
                                           client_context(ca))
        self.assertEqual((status, cn), (200, "server-one"))
        self.assertIn("Strict-Transport-Security", headers)
        self.assertIn("[metrics] tls-cert was added; the metrics keep speaking plain HTTP",
                      d.log())
        self.assertEqual(harness.tcp_http("127.0.0.1", port, "GET", "/metrics").status, 200)


class TestMetricsClientCa(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki = Pki()
        cls.ca = cls.pki.ca("ca")
        cls.other_ca = cls.pki.ca("other")
        cls.cert, cls.key = cls.pki.leaf("srv", "metrics-server")
        shutil.copy(cls.ca, cls.pki.path("ca.crt.server"))
        cls.client = cls.pki.leaf("client", "scraper", usage="clientAuth")
        cls.stranger = cls.pki.leaf("stranger", "scraper", ca="other", usage="clientAuth")
        cls.port = harness.free_port()
        cls.d = harness.Daemon(extra_conf="[metrics]\nlisten = 127.0.0.1:%d\ntls-cert = %s\n"
                               "tls-key = %s\nclient-ca = %s\n"
                               % (cls.port, cls.cert, cls.key, cls.ca))
        try:
            cls.d.start()
        except BaseException:
            cls.d.close()
            cls.pki.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.d.close()
        cls.pki.close()

    def scrape(self, ctx):
        return https_get(self.port, "/metrics", ctx)

    def assertRefused(self, ctx):
        # TLS 1.3: the client's handshake may end before the server judged its certificate;
        # the refusal then arrives as an alert on the first read. Never an answer.
        with self.assertRaises((ssl.SSLError, ConnectionError, http.client.HTTPException,
                                OSError)):
            self.scrape(ctx)

    def test_right_client_served(self):
        status, headers, body, _ = self.scrape(client_context(self.ca, *self.client))
        self.assertEqual(status, 200)
        self.assertIn(b"tokensign_build_info", body)
        self.assertNotIn("Strict-Transport-Security", headers)

    def test_no_client_cert_refused(self):
        self.assertRefused(client_context(self.ca))

    def test_other_ca_refused(self):
        self.assertRefused(client_context(self.ca, *self.stranger))

    def test_zz_client_ca_reloaded(self):
        # Runs last in this class (it changes the CA file): after a reload with the other CA,
        # the formerly good client is refused and the stranger served.
        shutil.copy(self.other_ca, self.ca + ".new")
        os.rename(self.ca + ".new", self.ca)
        before = self.d.log().count("read again, and client-ca")
        self.d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while self.d.log().count("read again, and client-ca") == before:
            self.assertLess(time.monotonic(), deadline, self.d.log())
            time.sleep(0.05)
        # The server's certificate is still from the first CA: clients trust that one.
        server_ca = self.pki.path("ca.crt.server")
        self.assertEqual(self.scrape(client_context(server_ca, *self.stranger))[0], 200)
        self.assertRefused(client_context(server_ca, *self.client))

    def test_refused_on_tls12_too(self):
        ctx = client_context(self.ca, *self.stranger)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with self.assertRaises(ssl.SSLError):
            with socket.create_connection(("127.0.0.1", self.port)) as s:
                with ctx.wrap_socket(s, server_hostname="127.0.0.1"):
                    pass
        ctx = client_context(self.ca, *self.client)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(("127.0.0.1", self.port)) as s:
            with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
                self.assertEqual(t.version(), "TLSv1.2")


class TestConfigErrors(unittest.TestCase):
    def setUp(self):
        self.pki = Pki()
        self.ca = self.pki.ca("ca")
        self.cert, self.key = self.pki.leaf("srv", "server-one")

    def tearDown(self):
        self.pki.close()

    def refused(self, lines, *words, extra=""):
        d = TlsDaemon(jwks_lines=lines, extra_conf=extra)
        try:
            d.spawn()
            rc = d.proc.wait(60)
            self.assertNotEqual(rc, 0)
            log = d.log()
            for w in words:
                self.assertIn(w, log)
            return log
        finally:
            d.close()

    def test_cert_without_key(self):
        self.refused(["tls-cert = %s" % self.cert], "tls-cert is set but tls-key is not")

    def test_key_not_matching(self):
        other = self.pki.key("other.key")
        log = self.refused(["tls-cert = %s" % self.cert, "tls-key = %s" % other],
                           "[jwks] tls-key %s: does not match the certificate" % other)
        with open(other) as f:
            self.assertNotIn(f.read().splitlines()[1], log)

    def test_unreadable_file(self):
        missing = self.pki.path("missing.crt")
        self.refused(["tls-cert = %s" % missing, "tls-key = %s" % self.key],
                     "[jwks] tls-cert %s: No such file or directory" % missing)

    def test_not_a_certificate(self):
        self.refused(["tls-cert = %s" % self.key, "tls-key = %s" % self.key],
                     "[jwks] tls-cert %s:" % self.key)

    def test_check_config_reads_the_files(self):
        other = self.pki.key("other.key")
        d = TlsDaemon(jwks_lines=["tls-cert = %s" % self.cert, "tls-key = %s" % other])
        try:
            r = subprocess.run([harness.tokensignd_path(), "--check-config", "-c", d.conf_path],
                               env=d.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, timeout=30)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn("does not match the certificate", r.stderr)
            d.jwks_lines[1] = "tls-key = %s" % self.key
            d.write_config()
            r = subprocess.run([harness.tokensignd_path(), "--check-config", "-c", d.conf_path],
                               env=d.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        finally:
            d.close()

    def test_client_ca_in_jwks(self):
        self.refused(["tls-cert = %s" % self.cert, "tls-key = %s" % self.key,
                      "client-ca = %s" % self.ca], "only [metrics] may require client")


if __name__ == "__main__":
    harness.main()
