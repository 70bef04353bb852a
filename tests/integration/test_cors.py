#!/usr/bin/python3
"""CORS and health probes on the public JWKS listener (docs/api.md, "CORS" and "Probes on the
JWKS listener"; SPEC §3 [jwks] cors-origins, health).

- cors-origins = a list: a GET or HEAD with an allowed Origin gets that origin back, exactly, in
  Access-Control-Allow-Origin, and Access-Control-Expose-Headers; every answer, 304 and 404
  included, carries Vary: Origin; any other Origin (odd ones too: long, null, CR/LF attempts,
  several Origin headers) gets no CORS header at all;
- preflights (OPTIONS + Origin + Access-Control-Request-Method) as browsers send them, with
  curl and http.client: 204 with the CORS headers, or 403 without them for a foreign origin,
  a method other than GET/HEAD or a request header other than If-None-Match/Cache-Control;
  OPTIONS without Access-Control-Request-Method is not a preflight (405); preflights are counted
  in tokensign_jwks_requests_total;
- cors-origins = *: "*" on every answer, no Vary; absent: no CORS header, OPTIONS 405;
- health = yes: /healthz and /readyz as on the sign socket, 503 with Retry-After while the token
  does not answer (staged with p11shim: this test runs in tests/shim/meson.build); health = no:
  404;
- both apply to the answers after a reload.
Never Access-Control-Allow-Credentials."""

import http.client
import re
import shutil
import signal
import socket
import subprocess
import time

import harness

JWKS = "/main/.well-known/jwks.json"
DISCOVERY = "/main/.well-known/openid-configuration"
APP = "https://app.example.test"
DEV = "http://localhost:3000"
ACAO = "access-control-allow-origin"
CORS_HEADERS = (ACAO, "access-control-expose-headers", "access-control-allow-methods",
                "access-control-allow-headers", "access-control-max-age",
                "access-control-allow-credentials")


class JwksDaemon(harness.Daemon):
    """A Daemon with extra lines in its [jwks] section."""

    def __init__(self, jwks_lines="", **kw):
        self.jwks_lines = jwks_lines
        super().__init__(**kw)

    def config_text(self):
        text = super().config_text()
        at = "max-age = %s\n" % self.jwks_max_age
        assert at in text
        return text.replace(at, at + self.jwks_lines, 1)


def raw_request(d, head):
    """Sends head (the request line and header lines, str, without the blank line) as it is to
    the JWKS port: for what harness.tcp_http cannot write (a header twice, a bare CR)."""
    data = (head + "\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").encode("latin-1")
    with socket.create_connection(("127.0.0.1", d.jwks_port), timeout=10) as s:
        return harness._exchange(s, data)


def curl_preflight(d, path, origin, method, req_headers=None):
    """A browser's preflight made by curl: (status, {lower-case name: value}, body)."""
    cmd = ["curl", "-sS", "-i", "-X", "OPTIONS", "-H", "Origin: " + origin,
           "-H", "Access-Control-Request-Method: " + method]
    if req_headers:
        cmd += ["-H", "Access-Control-Request-Headers: " + req_headers]
    cmd.append("http://127.0.0.1:%d%s" % (d.jwks_port, path))
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30,
                         check=True).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def counted(d, port, status):
    """tokensign_jwks_requests_total{status=...} from the daemon's metrics."""
    r = harness.tcp_http("127.0.0.1", port, "GET", "/metrics")
    m = re.search(r'^tokensign_jwks_requests_total\{status="%s"\} (\S+)$' % status,
                  r.body.decode(), re.M)
    return float(m.group(1)) if m else 0.0


class CorsCase(harness.TestCase):
    def get(self, path=JWKS, method="GET", **headers):
        return self.d.http(method, path, headers=headers or None)

    def assertNoCors(self, r):
        for name in CORS_HEADERS:
            self.assertNotIn(name, r.headers, r)

    def assertVaryOrigin(self, r):
        vary = [v.strip().lower() for v in r.headers.get("vary", "").split(",")]
        self.assertIn("origin", vary, r)

    def assertAllowed(self, r, origin):
        self.assertEqual(r.headers.get(ACAO), origin, r)
        self.assertEqual([v for n, v in r.raw_headers if n.lower() == ACAO], [origin], r)
        exposed = [v.strip().lower() for v in
                   r.headers.get("access-control-expose-headers", "").split(",")]
        self.assertIn("etag", exposed, r)
        self.assertNotIn("access-control-allow-credentials", r.headers, r)


class CorsListTest(CorsCase):
    @classmethod
    def setUpClass(cls):
        cls.metrics_port = harness.free_port()
        cls.d = JwksDaemon(jwks_lines="cors-origins = %s, %s\n" % (APP, DEV),
                           extra_conf="[metrics]\nlisten = 127.0.0.1:%d\n" % cls.metrics_port)
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def tearDown(self):
        self.assertStillSigns(self.d)

    def test_get_allowed_origin(self):
        for origin in (APP, DEV):
            for path in (JWKS, DISCOVERY):
                r = self.get(path, Origin=origin)
                self.assertEqual(r.status, 200, r)
                self.assertAllowed(r, origin)
                self.assertVaryOrigin(r)
                self.assertTrue(r.json())
        # the same bytes as without CORS
        self.assertEqual(self.get(Origin=APP).body, self.get().body)

    def test_head_allowed_origin(self):
        r = self.get(method="HEAD", Origin=APP)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"")
        self.assertAllowed(r, APP)
        self.assertVaryOrigin(r)

    def test_no_origin(self):
        r = self.get()
        self.assertEqual(r.status, 200, r)
        self.assertNoCors(r)
        self.assertVaryOrigin(r)

    def test_disallowed_origins(self):
        odd = ["https://evil.example", APP + "/", APP.upper(), APP + ":443", APP + ".evil.example",
               "https://evil.example/" + APP, "null", "*", "", " " + APP + "x",
               APP + ", " + DEV, APP + "a" * 6000, APP[:-1], "http://localhost:30000"]
        for origin in odd:
            for path in (JWKS, DISCOVERY):
                r = self.get(path, Origin=origin)
                self.assertIn(r.status, (200, 431), "%r: %r" % (origin[:80], r))
                self.assertNoCors(r)
                if r.status == 200:
                    self.assertVaryOrigin(r)

    def test_crlf_and_repeated_origins(self):
        """Nothing of a request's Origin is echoed unless it is one configured origin, sent
        once."""
        heads = [
            "GET %s HTTP/1.1\r\nOrigin: %s\r\nOrigin: %s" % (JWKS, APP, APP),
            "GET %s HTTP/1.1\r\nOrigin: https://evil.example\r\nOrigin: %s" % (JWKS, APP),
            "GET %s HTTP/1.1\r\nOrigin: %s\r\nOrigin: https://evil.example" % (JWKS, APP),
            "GET %s HTTP/1.1\r\nOrigin: %s\rX-Injected: 1" % (JWKS, APP),
            "GET %s HTTP/1.1\r\nOrigin: %s\r\n X-Injected: 1" % (JWKS, APP),
            "GET %s HTTP/1.1\r\nOrigin: %s\nX-Injected: 1" % (JWKS, "https://evil.example"),
            "GET %s HTTP/1.1\r\nOrigin: %s%%0d%%0aX-Injected: 1" % (JWKS, APP),
        ]
        for head in heads:
            r = raw_request(self.d, head)
            self.assertNoCors(r)
            for name, value in r.raw_headers:
                self.assertNotIn("injected", (name + value).lower(), r)
                self.assertNotIn("evil", value, r)
        # the control: one clean Origin is allowed
        r = raw_request(self.d, "GET %s HTTP/1.1\r\nOrigin: %s" % (JWKS, APP))
        self.assertAllowed(r, APP)

    def test_vary_on_304_and_404(self):
        etag = self.get().headers["etag"]
        for headers in ({}, {"Origin": APP}, {"Origin": "https://evil.example"}):
            r = self.get(**dict(headers, **{"If-None-Match": etag}))
            self.assertEqual(r.status, 304, r)
            self.assertVaryOrigin(r)
            if headers.get("Origin") == APP:
                self.assertAllowed(r, APP)
            else:
                self.assertNoCors(r)
            for path in ("/nope/.well-known/jwks.json", "/nothing", "/healthz", "/readyz"):
                r = self.get(path, **headers)
                self.assertEqual(r.status, 404, r)
                self.assertVaryOrigin(r)
                if headers.get("Origin") == APP:
                    self.assertAllowed(r, APP)
                else:
                    self.assertNoCors(r)

    def test_preflight_allowed(self):
        for path in (JWKS, DISCOVERY, "/nope/.well-known/jwks.json"):
            for method, req_headers in (("GET", None), ("GET", "if-none-match"),
                                        ("HEAD", "cache-control,if-none-match"),
                                        ("GET", "")):
                headers = {"Origin": DEV, "Access-Control-Request-Method": method}
                if req_headers is not None:
                    headers["Access-Control-Request-Headers"] = req_headers
                r = self.get(path, method="OPTIONS", **headers)
                self.assertEqual(r.status, 204, r)
                self.assertEqual(r.body, b"")
                self.assertNotIn("content-type", r.headers)
                self.assertEqual(r.headers.get(ACAO), DEV, r)
                self.assertEqual(r.headers.get("access-control-allow-methods"), "GET, HEAD")
                allowed = [h.strip().lower() for h in
                           r.headers.get("access-control-allow-headers", "").split(",")]
                self.assertEqual(sorted(allowed), ["cache-control", "if-none-match"], r)
                self.assertEqual(r.headers.get("access-control-max-age"), "86400", r)
                self.assertNotIn("access-control-allow-credentials", r.headers)
                self.assertVaryOrigin(r)

    def test_preflight_curl(self):
        self.assertTrue(shutil.which("curl"), "curl is needed (scripts/install-deps)")
        status, headers, body = curl_preflight(self.d, JWKS, APP, "GET", "if-none-match")
        self.assertEqual(status, 204, headers)
        self.assertEqual(body, b"")
        self.assertEqual(headers.get(ACAO), APP)
        self.assertEqual(headers.get("access-control-allow-methods"), "GET, HEAD")
        self.assertEqual(headers.get("access-control-max-age"), "86400")
        for origin, method, req in ((APP, "POST", None), (APP, "DELETE", None),
                                    ("https://evil.example", "GET", None),
                                    (APP, "GET", "authorization")):
            status, headers, body = curl_preflight(self.d, JWKS, origin, method, req)
            self.assertEqual(status, 403, (origin, method, req, headers))
            self.assertNotIn(ACAO, headers)

    def test_browser_sequence_http_client(self):
        """A browser's conversation on one keep-alive connection: preflight, GET, then a
        revalidation with If-None-Match."""
        conn = http.client.HTTPConnection("127.0.0.1", self.d.jwks_port, timeout=10)
        try:
            conn.request("OPTIONS", JWKS, headers={
                "Origin": APP, "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "if-none-match"})
            r = conn.getresponse()
            self.assertEqual((r.status, r.read()), (204, b""))
            self.assertEqual(r.getheader(ACAO), APP)
            conn.request("GET", JWKS, headers={"Origin": APP})
            r = conn.getresponse()
            body = r.read()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.getheader(ACAO), APP)
            self.assertIn("etag", r.getheader("access-control-expose-headers").lower())
            etag = r.getheader("etag")
            self.assertTrue(body)
            conn.request("GET", JWKS, headers={"Origin": APP, "If-None-Match": etag})
            r = conn.getresponse()
            self.assertEqual((r.status, r.read()), (304, b""))
            self.assertEqual(r.getheader(ACAO), APP)
            self.assertIn("origin", r.getheader("vary", "").lower())
        finally:
            conn.close()

    def test_preflight_refused(self):
        cases = [
            ({"Origin": "https://evil.example"}, "GET", None),
            ({"Origin": "null"}, "GET", None),
            ({"Origin": APP}, "POST", None),
            ({"Origin": APP}, "DELETE", None),
            ({"Origin": APP}, "PUT", None),
            ({"Origin": APP}, "get", None),
            ({"Origin": APP}, "GET", "authorization"),
            ({"Origin": APP}, "GET", "if-none-match, x-requested-with"),
            ({"Origin": APP}, "HEAD", "content-type"),
        ]
        for headers, method, req in cases:
            headers = dict(headers, **{"Access-Control-Request-Method": method})
            if req:
                headers["Access-Control-Request-Headers"] = req
            r = self.get(method="OPTIONS", **headers)
            self.assertError(r, 403, "cors_refused", repr(headers))
            self.assertNoCors(r)
            self.assertVaryOrigin(r)
        r = raw_request(self.d, "OPTIONS %s HTTP/1.1\r\nOrigin: %s\r\nOrigin: %s\r\n"
                        "Access-Control-Request-Method: GET" % (JWKS, APP, APP))
        self.assertError(r, 403, "cors_refused")
        self.assertNoCors(r)

    def test_options_not_a_preflight(self):
        for headers in ({}, {"Origin": APP}, {"Access-Control-Request-Method": "GET"}):
            r = self.get(method="OPTIONS", **headers)
            self.assertError(r, 405, "method_not_allowed", repr(headers))
            self.assertEqual(r.headers.get("allow"), "GET, HEAD")
        for method in ("POST", "DELETE"):
            r = self.get(method=method, Origin=APP)
            self.assertError(r, 405, "method_not_allowed")

    def test_preflights_counted(self):
        before = {s: counted(self.d, self.metrics_port, s) for s in ("204", "403")}
        ok = {"Origin": APP, "Access-Control-Request-Method": "GET"}
        self.assertEqual(self.get(method="OPTIONS", **ok).status, 204)
        self.assertEqual(self.get(method="OPTIONS", **ok).status, 204)
        refused = dict(ok, **{"Access-Control-Request-Method": "POST"})
        self.assertEqual(self.get(method="OPTIONS", **refused).status, 403)
        self.assertEqual(counted(self.d, self.metrics_port, "204") - before["204"], 2)
        self.assertEqual(counted(self.d, self.metrics_port, "403") - before["403"], 1)


class CorsAnyTest(CorsCase):
    @classmethod
    def setUpClass(cls):
        cls.d = JwksDaemon(jwks_lines="cors-origins = *\n")
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def tearDown(self):
        self.assertStillSigns(self.d)

    def test_star_everywhere(self):
        etag = self.get().headers["etag"]
        for headers in ({}, {"Origin": APP}, {"Origin": "https://anyone.example"},
                        {"Origin": "null"}, {"If-None-Match": etag, "Origin": APP}):
            for path in (JWKS, DISCOVERY, "/nope/.well-known/jwks.json"):
                r = self.get(path, **headers)
                self.assertIn(r.status, (200, 304, 404), r)
                self.assertAllowed(r, "*")
                self.assertNotIn("vary", r.headers, r)

    def test_preflight(self):
        r = self.get(method="OPTIONS", **{"Origin": "https://anyone.example",
                                          "Access-Control-Request-Method": "HEAD",
                                          "Access-Control-Request-Headers": "if-none-match"})
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.headers.get(ACAO), "*")
        self.assertNotIn("access-control-allow-credentials", r.headers)
        r = self.get(method="OPTIONS", **{"Origin": APP, "Access-Control-Request-Method": "POST"})
        self.assertError(r, 403, "cors_refused")
        self.assertNoCors(r)


class CorsOffTest(CorsCase):
    """Without cors-origins and health: as before them."""

    @classmethod
    def setUpClass(cls):
        cls.d = harness.Daemon()
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def tearDown(self):
        self.assertStillSigns(self.d)

    def test_no_cors_headers(self):
        etag = self.get().headers["etag"]
        for headers in ({}, {"Origin": APP}, {"Origin": APP, "If-None-Match": etag}):
            for path in (JWKS, DISCOVERY, "/nope/.well-known/jwks.json"):
                r = self.get(path, **headers)
                self.assertNoCors(r)
                self.assertNotIn("vary", r.headers, r)

    def test_preflight_is_405(self):
        r = self.get(method="OPTIONS", **{"Origin": APP, "Access-Control-Request-Method": "GET"})
        self.assertError(r, 405, "method_not_allowed")
        self.assertEqual(r.headers.get("allow"), "GET, HEAD")
        self.assertNoCors(r)

    def test_health_is_404(self):
        for path in ("/healthz", "/readyz"):
            self.assertError(self.get(path), 404, "not_found")


class HealthTest(CorsCase):
    """[jwks] health = yes, through p11shim to make the token stop answering."""

    @classmethod
    def setUpClass(cls):
        cls.d = harness.shim_daemon(cls=JwksDaemon,
                                    jwks_lines="health = yes\ncors-origins = %s\n" % APP)
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def tearDown(self):
        harness.write_faults(self.d)
        self.wait_status("/readyz", 200)
        self.assertStillSigns(self.d)

    def wait_status(self, path, status, timeout=15):
        deadline = time.time() + timeout
        r = self.get(path)
        while r.status != status and time.time() < deadline:
            time.sleep(0.1)
            r = self.get(path)
        self.assertEqual(r.status, status, r)
        return r

    def test_same_as_sign_socket(self):
        for path, body in (("/healthz", {"status": "ok"}), ("/readyz", {"status": "ready"})):
            r = self.get(path, Origin=APP)
            s = self.d.unix_request("GET", path)
            self.assertEqual((r.status, r.json()), (200, body), r)
            self.assertEqual((s.status, s.body), (r.status, r.body))
            self.assertEqual(r.headers.get("cache-control"), "no-store", r)
            self.assertEqual(r.headers.get("content-type"), "application/json", r)
            self.assertNotIn("retry-after", r.headers, r)
            self.assertNoCors(r)
            head = self.get(path, method="HEAD")
            self.assertEqual((head.status, head.body), (200, b""), head)
            self.assertEqual(head.headers.get("cache-control"), "no-store", head)
            r = self.get(path, method="POST")
            self.assertError(r, 405, "method_not_allowed")
            self.assertEqual(r.headers.get("allow"), "GET, HEAD")
        # the JWKS still answers beside them
        self.assertEqual(self.get().status, 200)

    def test_not_ready_when_the_token_does_not_answer(self):
        harness.write_faults(self.d, "C_GetTokenInfo CKR_GENERAL_ERROR *")
        r = self.wait_status("/readyz", 503)
        self.assertEqual(r.json(), {"status": "not_ready", "reason": "token unreachable"})
        self.assertEqual(r.headers.get("retry-after"), "1", r)
        self.assertEqual(r.headers.get("cache-control"), "no-store", r)
        s = self.d.unix_request("GET", "/readyz")
        self.assertEqual((s.status, s.json()), (503, r.json()))
        # alive all the same, and the last good JWKS is still served
        self.assertEqual(self.get("/healthz").status, 200)
        self.assertEqual(self.get().status, 200)


class ReloadTest(CorsCase):
    """cors-origins and health apply to the answers after a reload (docs/operations.md, reload
    table), both ways."""

    def setUp(self):
        self.d = JwksDaemon()
        self.addCleanup(self.d.close)
        self.d.start()

    def reload(self, jwks_lines):
        self.d.jwks_lines = jwks_lines
        self.d.write_config()
        before = self.d.log().count("reload: done")
        self.d.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while self.d.log().count("reload: done") == before:
            self.assertLess(time.time(), deadline, "no 'reload: done':\n" + self.d.log()[-3000:])
            time.sleep(0.05)

    def test_turned_on_and_off(self):
        self.assertNoCors(self.get(Origin=APP))
        self.assertEqual(self.get("/readyz").status, 404)
        self.reload("cors-origins = %s\nhealth = yes\n" % APP)
        self.assertAllowed(self.get(Origin=APP), APP)
        self.assertEqual(self.get("/readyz").status, 200)
        self.reload("cors-origins = %s\n" % DEV)
        self.assertNoCors(self.get(Origin=APP))
        self.assertAllowed(self.get(Origin=DEV), DEV)
        self.assertEqual(self.get("/readyz").status, 404)
        self.reload("")
        r = self.get(Origin=DEV)
        self.assertNoCors(r)
        self.assertNotIn("vary", r.headers)
        self.assertStillSigns(self.d)


class ConfigTest(harness.TestCase):
    def test_refusals_name_file_and_line(self):
        """The daemon refuses a bad cors-origins or health at load, naming file and line (every
        refusal is in tests/unit/test_conf.c)."""
        d = JwksDaemon(jwks_lines="cors-origins = %s/\nhealth = maybe\n" % APP)
        try:
            rc, err = harness.check_config(d.config_text())
        finally:
            d.close()
        self.assertNotEqual(rc, 0, err)
        line = d.config_text().split("\n").index("cors-origins = %s/" % APP) + 1
        self.assertRegex(err, r"tokensignd\.conf:%d: cors-origins: '%s/': an origin has no "
                              r"path" % (line, re.escape(APP)))
        self.assertRegex(err, r"tokensignd\.conf:%d: health: 'maybe' must be yes or no"
                              % (line + 1))


if __name__ == "__main__":
    harness.main()
