#!/usr/bin/python3
"""The happy path of POST /v1/issuers/NAME/sign (SPEC §4, docs/api.md): the token's exact
header, payload and R||S signature, verified by PyJWT against the live public JWKS."""

import concurrent.futures
import json
import os
import socket
import stat
import time

import jwt

import harness

ISS = harness.DEFAULT_ISSUER["iss"]


class SignTest(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = harness.Daemon()
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def tearDown(self):
        self.assertStillSigns(self.d)

    def sign_ok(self, claims, typ=None, **kw):
        return self.assertSigned(self.d.sign("main", claims, typ=typ, **kw))

    def public_jwks(self):
        r = self.d.http("GET", "/main/.well-known/jwks.json")
        self.assertEqual(r.status, 200, r)
        return r

    def verify_pyjwt(self, token, aud="api://orders"):
        client = jwt.PyJWKClient(self.d.jwks_url("main"), cache_keys=False)
        key = client.get_signing_key_from_jwt(token)
        return jwt.decode(token, key.key, algorithms=["ES256"], audience=aud, issuer=ISS,
                          options={"require": ["exp", "iat", "iss", "aud"]})

    def test_answer_and_token_shape(self):
        before = int(time.time())
        r = self.d.sign("main", {"sub": "user-42", "aud": "api://orders", "scope": "read"})
        after = int(time.time())
        a = self.assertSigned(r)
        self.assertEqual(a["alg"], "ES256")
        self.assertIsInstance(a["iat"], int)
        self.assertIsInstance(a["exp"], int)
        self.assertTrue(before - 1 <= a["iat"] <= after + 1, (before, a["iat"], after))
        self.assertEqual(a["exp"], a["iat"] + 900, "token-ttl 15m")

        token = a["token"]
        self.assertEqual(token.count("."), 2)
        self.assertRegex(token, r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
        header, payload, sig = harness.split_jws(token)
        self.assertEqual(header, '{"alg":"ES256","kid":%s,"typ":"JWT"}' % json.dumps(a["kid"]),
                         "protected header, byte for byte")
        self.assertEqual(len(sig), 64, "ES256 signature is R||S, 64 bytes, never DER")
        p = json.loads(payload)
        self.assertEqual(p["iss"], ISS)
        self.assertEqual(p["iat"], a["iat"])
        self.assertEqual(p["exp"], a["exp"])
        self.assertEqual(p["sub"], "user-42")
        self.assertEqual(p["aud"], "api://orders")
        self.assertEqual(p["scope"], "read")
        self.assertEqual(sorted(p), ["aud", "exp", "iat", "iss", "jti", "scope", "sub"])

    def test_verifies_with_pyjwt_against_live_jwks(self):
        a = self.sign_ok({"sub": "user-42", "aud": "api://orders"})
        claims = self.verify_pyjwt(a["token"])
        self.assertEqual(claims["sub"], "user-42")
        self.assertEqual(claims["iss"], ISS)
        # the signature really is checked: a changed payload must not verify
        h, p, s = a["token"].split(".")
        forged = json.loads(harness.b64url_decode(p))
        forged["sub"] = "admin"
        bad = h + "." + harness.b64url_encode(json.dumps(forged).encode()) + "." + s
        with self.assertRaises(jwt.InvalidSignatureError):
            self.verify_pyjwt(bad)
        # wrong audience / issuer are rejected by the verifier (the claims really are there)
        with self.assertRaises(jwt.InvalidAudienceError):
            self.verify_pyjwt(a["token"], aud="api://billing")
        # and independently of PyJWT, with python3-cryptography
        jwks = self.public_jwks().json()
        key = [k for k in jwks["keys"] if k["kid"] == a["kid"]]
        self.assertEqual(len(key), 1, jwks)
        self.assertTrue(harness.verify_es256(a["token"], key[0]))
        self.assertFalse(harness.verify_es256(bad, key[0]))

    def test_expired_token_is_refused_by_verifier(self):
        # exp is really in the token: a verifier whose clock is past exp refuses it
        now = int(time.time())
        a = self.sign_ok({"aud": "api://orders", "exp": now + 5})
        self.assertEqual(a["exp"], now + 5)
        client = jwt.PyJWKClient(self.d.jwks_url("main"), cache_keys=False)
        key = client.get_signing_key_from_jwt(a["token"]).key
        with self.assertRaises(jwt.ExpiredSignatureError):
            jwt.decode(a["token"], key, algorithms=["ES256"], audience="api://orders",
                       options={"verify_exp": True, "verify_iat": False}, leeway=-10)

    def test_typ_at_jwt(self):
        a = self.sign_ok({"aud": "api://orders"}, typ="at+jwt")
        header, _, _ = harness.split_jws(a["token"])
        self.assertEqual(header,
                         '{"alg":"ES256","kid":%s,"typ":"at+jwt"}' % json.dumps(a["kid"]))
        self.verify_pyjwt(a["token"])

    def test_default_typ_is_first_token_type(self):
        a = self.sign_ok({"aud": "api://orders"})
        header, _, _ = harness.split_jws(a["token"])
        self.assertEqual(json.loads(header)["typ"], "JWT")
        a = self.sign_ok({"aud": "api://orders"}, typ="JWT")
        self.assertEqual(json.loads(harness.split_jws(a["token"])[0])["typ"], "JWT")

    def test_jti_generated(self):
        seen = set()
        for _ in range(3):
            a = self.sign_ok({"aud": "api://orders"})
            p = json.loads(harness.split_jws(a["token"])[1])
            jti = p["jti"]
            self.assertIsInstance(jti, str)
            self.assertRegex(jti, r"^[A-Za-z0-9_-]{22}$", "128 bits, base64url, no padding")
            self.assertEqual(len(harness.b64url_decode(jti)), 16)
            seen.add(jti)
        self.assertEqual(len(seen), 3, "jti must be random per token")

    def test_caller_jti_kept(self):
        for jti in ("my-jti-1", "x", "j" * 128):
            a = self.sign_ok({"aud": "api://orders", "jti": jti})
            self.assertEqual(json.loads(harness.split_jws(a["token"])[1])["jti"], jti)

    def test_claims_passed_through(self):
        claims = {
            "sub": "user-42",
            "aud": ["api://orders", "api://billing"],
            "scope": "read write",
            "n": 42, "neg": -7, "f": 1.5, "t": True, "fa": False, "nul": None,
            "arr": [1, "two", {"three": [3]}],
            "obj": {"a": {"b": {"c": "d"}}},
            "uni": "h\u00e9llo \u2603 \U0001F600",
            "esc": "quote\" backslash\\ nl\n tab\t",
        }
        a = self.sign_ok(claims)
        p = json.loads(harness.split_jws(a["token"])[1])
        for k, v in claims.items():
            self.assertEqual(p[k], v, k)
        self.assertEqual(set(p) - set(claims), {"iss", "iat", "exp", "jti"})
        self.assertEqual(self.verify_pyjwt(a["token"], aud="api://billing")["obj"],
                         claims["obj"])

    def test_given_exp_nbf_iss_kept(self):
        now = int(time.time())
        exp = now + 3000
        a = self.sign_ok({"aud": "api://billing", "exp": exp, "nbf": now - 10, "iss": ISS})
        self.assertEqual(a["exp"], exp)
        p = json.loads(harness.split_jws(a["token"])[1])
        self.assertEqual((p["exp"], p["nbf"], p["iss"]), (exp, now - 10, ISS))
        # nbf == exp is not "after" exp
        a = self.sign_ok({"aud": "api://orders", "exp": now + 600, "nbf": now + 600})
        self.assertEqual(json.loads(harness.split_jws(a["token"])[1])["nbf"], now + 600)

    def test_exp_near_max_token_ttl_accepted(self):
        now = int(time.time())
        a = self.sign_ok({"aud": "api://orders", "exp": now + 3600 - 5})
        self.assertEqual(a["exp"], now + 3595)

    def test_content_type_with_parameters(self):
        body = json.dumps({"claims": {"aud": "api://orders"}})
        for ct in ("application/json; charset=utf-8", "application/json;charset=UTF-8"):
            r = self.d.unix_request("POST", "/v1/issuers/main/sign", body,
                                    headers={"Content-Type": ct})
            self.assertSigned(r, ct)

    def test_kid_in_jwks_and_stable(self):
        a1 = self.sign_ok({"aud": "api://orders"})
        a2 = self.sign_ok({"aud": "api://billing"})
        self.assertEqual(a1["kid"], a2["kid"], "one active key signs")
        self.assertEqual(json.loads(harness.split_jws(a1["token"])[0])["kid"], a1["kid"])
        jwks = self.public_jwks().json()
        kids = [k["kid"] for k in jwks["keys"]]
        self.assertIn(a1["kid"], kids)
        key = jwks["keys"][kids.index(a1["kid"])]
        self.assertEqual(harness.jwk_thumbprint(key), a1["kid"], "kid is the RFC 7638 thumbprint")

    def test_health_and_ready(self):
        r = self.d.unix_request("GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"status": "ok"})
        r = self.d.unix_request("GET", "/readyz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"status": "ready"})

    def test_sign_socket_jwks_equals_public_jwks(self):
        r1 = self.d.unix_request("GET", "/v1/issuers/main/jwks")
        self.assertEqual(r1.status, 200, r1)
        r2 = self.public_jwks()
        self.assertEqual(r1.body, r2.body)
        self.assertTrue(r1.json()["keys"], "JWKS is empty")

    def test_sign_socket_mode(self):
        st = os.stat(self.d.sign_socket)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660, "[sign] mode = 0660")

    def test_keep_alive_connection(self):
        # two signs on one persistent HTTP/1.1 connection (what curl and most clients do)
        body = json.dumps({"claims": {"aud": "api://orders"}}).encode()

        def request(conn_hdr):
            return (b"POST /v1/issuers/main/sign HTTP/1.1\r\nHost: localhost\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                    b"Connection: %s\r\n\r\n" % (len(body), conn_hdr) + body)

        def read_one(s, buf):
            while b"\r\n\r\n" not in buf:
                b = s.recv(65536)
                self.assertTrue(b, "connection closed early: %r" % buf)
                buf += b
            head, rest = buf.split(b"\r\n\r\n", 1)
            n = int([l.split(b":", 1)[1] for l in head.split(b"\r\n")
                     if l.lower().startswith(b"content-length:")][0])
            while len(rest) < n:
                b = s.recv(65536)
                self.assertTrue(b, "connection closed early")
                rest += b
            return head, rest[:n], rest[n:]

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(self.d.sign_socket)
            s.sendall(request(b"keep-alive"))
            h1, b1, buf = read_one(s, b"")
            s.sendall(request(b"close"))
            h2, b2, _ = read_one(s, buf)
        for h, b in ((h1, b1), (h2, b2)):
            self.assertTrue(h.startswith(b"HTTP/1.1 200"), h)
            self.assertEqual(sorted(json.loads(b)), ["alg", "exp", "iat", "kid", "token"])
        self.assertNotEqual(json.loads(b1)["token"], json.loads(b2)["token"])

    def test_expect_100_continue(self):
        # curl sends "Expect: 100-continue" for larger bodies
        body = json.dumps({"claims": {"aud": "api://orders", "pad": "p" * 3000}}).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(self.d.sign_socket)
            s.sendall(b"POST /v1/issuers/main/sign HTTP/1.1\r\nHost: localhost\r\n"
                      b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                      b"Expect: 100-continue\r\nConnection: close\r\n\r\n" % len(body))
            interim = s.recv(4096)
            self.assertTrue(interim.startswith(b"HTTP/1.1 100"), interim)
            s.sendall(body)
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:200])

    def test_idle_connections_do_not_block(self):
        idle = []
        try:
            for _ in range(100):
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                idle.append(c)
                c.connect(self.d.sign_socket)
            for _ in range(30):
                idle.append(socket.create_connection(("127.0.0.1", self.d.jwks_port)))
            # and one that sent half a request
            idle[0].sendall(b"POST /v1/issuers/main/sign HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{")
            t = time.monotonic()
            self.assertSigned(self.d.sign("main", {"aud": "api://orders"}))
            self.assertEqual(self.public_jwks().status, 200)
            self.assertLess(time.monotonic() - t, 5)
        finally:
            for c in idle:
                c.close()

    def test_header_memory_limit(self):
        # The request line and headers share a connection's 8 KiB (docs/api.md).
        pad = {"X-Pad": "x" * 6000}
        self.assertSigned(self.d.sign("main", {"aud": "api://orders"}, headers=pad))
        r = harness.unix_http(self.d.sign_socket, "POST", "/v1/issuers/main/sign",
                              body={"claims": {"aud": "api://orders"}},
                              headers={"X-Pad": "x" * 16000})
        self.assertEqual(r.status, 431, r)

    def test_connections_spread_over_workers(self):
        # The acceptor gives each new connection to the worker holding the fewest, so
        # connections opened together are served by every worker (each names its thread
        # "sign-worker" when it first serves one).
        conns = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(8)]
        try:
            for c in conns:
                c.connect(self.d.sign_socket)
            for c in conns:
                c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            for c in conns:
                self.assertTrue(c.recv(4096).startswith(b"HTTP/1.1 200"))
            names = [name for _, name in self.d.threads()]
            self.assertEqual(names.count("sign-worker"), harness.SIGN_WORKERS, names)
            self.assertEqual(names.count("sign-accept"), 1, names)
            # libmicrohttpd's complaints about TCP options on a Unix socket are not logged
            self.assertNotIn("warning: http:", self.d.log())
        finally:
            for c in conns:
                c.close()

    def test_many_sequential_and_concurrent_signs(self):
        claims = {"aud": "api://orders"}
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            results = list(ex.map(lambda i: self.d.sign("main", dict(claims, i=i)), range(40)))
        jtis = set()
        for i, r in enumerate(results):
            a = self.assertSigned(r, "request %d" % i)
            p = json.loads(harness.split_jws(a["token"])[1])
            self.assertEqual(p["i"], i)
            jtis.add(p["jti"])
        self.assertEqual(len(jtis), 40)
        # all verify against one fetch of the JWKS
        jwks = self.public_jwks().json()
        by_kid = {k["kid"]: k for k in jwks["keys"]}
        for r in results:
            a = r.json()
            self.assertTrue(harness.verify_es256(a["token"], by_kid[a["kid"]]))


class OutOfDescriptorsTest(harness.TestCase):
    """The acceptor when the process has no file descriptor left: it says so once, keeps the
    connections queued, and serves again as soon as descriptors are free."""

    def test_emfile_is_logged_once_and_recovers(self):
        import resource
        d = harness.Daemon()
        self.addCleanup(d.close)
        d.start()
        self.assertSigned(d.sign("main", {"aud": "api://orders"}))
        pid = d.proc.pid
        open_fds = len(os.listdir("/proc/%d/fd" % pid))
        old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_fds + 8, old[1]))
        conns = []
        try:
            for _ in range(40):
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.connect(d.sign_socket)  # queued in the backlog when not accepted
                conns.append(c)
            deadline = time.monotonic() + 10
            while "accept: Too many open files" not in d.log():
                self.assertLess(time.monotonic(), deadline, d.log())
                time.sleep(0.05)
            time.sleep(0.5)  # several retries pass
        finally:
            for c in conns:
                c.close()
            resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
        deadline = time.monotonic() + 10
        while "accepting connections again" not in d.log():
            self.assertLess(time.monotonic(), deadline, d.log())
            time.sleep(0.05)
        self.assertSigned(d.sign("main", {"aud": "api://orders"}))
        # Once per episode, not at each retry (every 100 ms): a descriptor freed for a moment
        # (a connection libmicrohttpd refused) can end an episode and start another, so each
        # warning must be followed by its notice.
        lines = [l for l in d.log().splitlines()
                 if "accept: Too many open files" in l or "accepting connections again" in l]
        self.assertGreaterEqual(len(lines), 2, d.log())
        for i, line in enumerate(lines):
            self.assertIn("Too many" if i % 2 == 0 else "again", line, lines)
        self.assertTrue(len(lines) % 2 == 0 and len(lines) <= 6, lines)


if __name__ == "__main__":
    harness.main()
