"""Interop: tokens signed by the real tokensignd verify in libraries this project did not write.

Three independent verifiers, each a standalone CLI in this folder and run as a subprocess:

    verify_pyjwt.py     PyJWT (Debian python3-jwt), JWKS via PyJWKClient       /usr/bin/python3
    verify_jwcrypto.py  jwcrypto (Debian python3-jwcrypto), JWKS via urllib    /usr/bin/python3
    verify_jose.mjs     jose (npm, pinned in package-lock.json), createRemoteJWKSet    node

Each fetches the LIVE JWKS of the daemon under test. A verifier that cannot run (library not
installed, node_modules missing) FAILS these tests; it never skips them.

Run through meson (`meson test -C build --suite interop --print-errorlogs`), which sets
TOKENSIGND, SOFTHSM_MODULE, P11PROBE and NODE. Standalone unittest program.

To cover another algorithm, add it to ALGORITHMS (and to the daemon): every test runs per
algorithm, with its own pair of issuers.
"""

import base64
import concurrent.futures
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import harness  # noqa: E402

# The algorithms the daemon signs with, each tested end to end with every verifier.
ALGORITHMS = ["ES256"]

PYTHON = "/usr/bin/python3"  # the Debian python3-jwt / python3-jwcrypto live here
VERIFIER_TIMEOUT = 60
NPM_HINT = "run npm ci in tests/interop"

AUD = "api://orders"
AUD2 = "api://billing"
AUDIENCES = "%s, %s" % (AUD, AUD2)
TOKEN_TYPES = ["JWT", "at+jwt"]

# Why a verifier said no (the prefix of its "error"); see verify_pyjwt.py.
STAGES = {"format", "header", "jwks", "key", "signature", "claims"}


def node_path():
    node = os.environ.get("NODE") or shutil.which("node")
    return node or None


class Verifier:
    def __init__(self, name, argv):
        self.name = name
        self.argv = argv

    def __repr__(self):
        return self.name

    def run(self, token, jwks_url, iss, aud, alg, kid, typ):
        """Returns (returncode, parsed JSON line or None, stdout, stderr)."""
        # --name=value, never "--name value": a kid (base64url) may start with "-", which
        # argparse would take for an option.
        argv = self.argv + ["--%s=%s" % a for a in (
            ("token", token), ("jwks-url", jwks_url), ("iss", iss), ("aud", aud), ("alg", alg),
            ("kid", kid), ("typ", typ))]
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=VERIFIER_TIMEOUT,
                               env=env, cwd=HERE)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("%s did not finish within %ds (stdout %r, stderr %r)"
                                 % (self.name, VERIFIER_TIMEOUT, e.stdout, e.stderr))
        lines = p.stdout.splitlines()
        try:
            out = json.loads(lines[0]) if len(lines) == 1 else None
        except ValueError:
            out = None
        return p.returncode, out, p.stdout, p.stderr


def verifiers():
    node = node_path()
    return [
        Verifier("pyjwt", [PYTHON, os.path.join(HERE, "verify_pyjwt.py")]),
        Verifier("jwcrypto", [PYTHON, os.path.join(HERE, "verify_jwcrypto.py")]),
        Verifier("jose", [node or "node", os.path.join(HERE, "verify_jose.mjs")]),
    ]


def check_verifiers_installed():
    """Raises AssertionError naming what to install when a verifier cannot run."""
    problems = []
    node = node_path()
    if not node:
        problems.append("node is not installed (NODE unset and no node in PATH)")
    with open(os.path.join(HERE, "package-lock.json")) as f:
        pinned = json.load(f)["packages"]["node_modules/jose"]["version"]
    installed_pkg = os.path.join(HERE, "node_modules", "jose", "package.json")
    if not os.path.exists(installed_pkg):
        problems.append("jose is not installed in tests/interop/node_modules: " + NPM_HINT)
    else:
        with open(installed_pkg) as f:
            installed = json.load(f)["version"]
        if installed != pinned:
            problems.append("tests/interop/node_modules has jose %s, package-lock.json pins %s: %s"
                            % (installed, pinned, NPM_HINT))
    if not os.path.exists(PYTHON):
        problems.append("%s does not exist" % PYTHON)
    else:
        for module, package in (("jwt", "python3-jwt"), ("jwcrypto", "python3-jwcrypto"),
                                ("cryptography", "python3-cryptography")):
            p = subprocess.run([PYTHON, "-c", "import " + module], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
            if p.returncode != 0:
                problems.append("%s cannot import %s (install %s): %s"
                                % (PYTHON, module, package, p.stderr.strip().splitlines()[-1:]))
    if problems:
        raise AssertionError("the interop verifiers cannot run:\n  " + "\n  ".join(problems))


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class VerifierAssertions(unittest.TestCase):
    """assertVerifies / assertRejected shared by the daemon tests and the self-test."""

    maxDiff = None

    @staticmethod
    def run_parallel(calls):
        """[(verifier, kwargs of run)] -> their results, in order, run a few at a time."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as ex:
            return list(ex.map(lambda c: c[0].run(**c[1]), calls))

    def assertVerifies(self, v, token, jwks_url, iss, aud, alg, kid, typ):
        rc, out, stdout, stderr = v.run(token, jwks_url, iss, aud, alg, kid, typ)
        self.assertEqual((rc, out and out.get("ok")), (0, True),
                         "%s rejected a token it should accept:\n  token %s\n  jwks %s\n"
                         "  stdout %s\n  stderr %s" % (v, token, jwks_url, stdout.strip(),
                                                       stderr.strip()))
        self.assertIsInstance(out.get("claims"), dict, stdout)
        return out["claims"]

    def assertRejected(self, v, stages, token, jwks_url, iss, aud, alg, kid, typ, result=None):
        """The verifier must say no (exit 1, ok false) for one of the given reasons. A crash, a
        setup problem or a rejection for another reason (say, the JWKS could not be fetched) is
        not the rejection the test is about and fails it. result: what v.run with these
        arguments already returned (see run_parallel)."""
        assert set(stages) <= STAGES, stages
        rc, out, stdout, stderr = result or v.run(token, jwks_url, iss, aud, alg, kid, typ)
        what = "%s on %s\n  token %s\n  stdout %s\n  stderr %s" % (
            v, jwks_url, token, stdout.strip(), stderr.strip())
        if rc == 2 or (out and str(out.get("error", "")).startswith("setup:")):
            self.fail("verifier could not run: " + what)
        self.assertEqual(rc, 1, "expected a rejection (exit 1): " + what)
        self.assertIsNotNone(out, "no single JSON line: " + what)
        self.assertIs(out.get("ok"), False, what)
        stage = str(out.get("error", "")).split(":", 1)[0]
        self.assertIn(stage, set(stages),
                      "rejected, but for the wrong reason (want %s): %s"
                      % ("/".join(sorted(stages)), what))


# ---------------------------------------------------------------------------------------------
# Tokens signed by the daemon.

def issuer_names(alg):
    a = alg.lower()
    return "alpha-" + a, "beta-" + a


class DaemonInterop(VerifierAssertions):
    """One daemon, two issuers per algorithm; every verifier against the live JWKS URLs."""

    @classmethod
    def setUpClass(cls):
        check_verifiers_installed()  # fails (never skips) every test when a library is missing
        cls.verifiers = verifiers()
        issuers = {}
        for alg in ALGORITHMS:
            for name in issuer_names(alg):
                issuers[name] = {
                    "iss": "https://login.example.test/" + name,
                    "algorithm": alg,
                    "audiences": AUDIENCES,
                    "token-types": ", ".join(TOKEN_TYPES),
                    "token-ttl": "15m",
                    "max-token-ttl": "1h",
                    "allow": "*",
                }
        cls.issuers = issuers
        cls.daemon = harness.Daemon(issuers=issuers)
        try:
            cls.daemon.start()
        except BaseException:
            cls.daemon.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.daemon.close()

    def daemon_died(self):
        proc = self.daemon.proc
        return proc is None or proc.poll() is not None

    def setUp(self):
        # A daemon that died in an earlier test (which failed for it) is started again, on the
        # same token, so that each test still says something on its own.
        if self.daemon_died():
            self.daemon.kill()
            self.daemon.start()

    def tearDown(self):
        if self.daemon_died() and not getattr(self, "death_reported", False):
            proc = self.daemon.proc
            self.fail("tokensignd died during this test (exit status %s); its log ends:\n%s"
                      % (proc.returncode if proc else self.daemon.returncode,
                         self.daemon.log()[-3000:]))

    def sign(self, issuer, claims, typ="JWT"):
        try:
            r = self.daemon.sign(issuer, claims, typ=typ)
        except (OSError, harness.HarnessError) as e:
            proc = self.daemon.proc
            if proc is not None:
                try:
                    proc.wait(2)  # a crash: let it be reaped so that we can say how it ended
                except subprocess.TimeoutExpired:
                    pass
            self.death_reported = self.daemon_died()
            self.fail("sign %s %r: no answer (%r); daemon exit status %s; its log ends:\n%s"
                      % (issuer, claims, e, proc.poll() if proc else None,
                         self.daemon.log()[-3000:]))
        self.assertEqual(r.status, 200, "sign %s %r typ %s: %r\n%s"
                         % (issuer, claims, typ, r, self.daemon.log()[-3000:]))
        answer = r.json()
        for member in ("token", "kid", "alg", "iat", "exp"):
            self.assertIn(member, answer, answer)
        return answer

    def expect(self, issuer, answer, typ, aud=AUD):
        """The verifier arguments for answer: what a relying party of issuer expects."""
        return dict(jwks_url=self.daemon.jwks_url(issuer), iss=self.issuers[issuer]["iss"],
                    aud=aud, alg=answer["alg"], kid=answer["kid"], typ=typ)

    def check_claims(self, claims, issuer, answer, sub, aud):
        self.assertEqual(claims["iss"], self.issuers[issuer]["iss"])
        self.assertEqual(claims["sub"], sub)
        self.assertEqual(claims["aud"], aud)
        self.assertEqual(claims["iat"], answer["iat"])
        self.assertEqual(claims["exp"], answer["exp"])
        self.assertIsInstance(claims.get("jti"), str)

    def test_token_types_verify(self):
        # (typ asked for, typ expected in the header): no typ means the first of token-types.
        cases = [(None, TOKEN_TYPES[0])] + [(t, t) for t in TOKEN_TYPES]
        for alg in ALGORITHMS:
            alpha, _ = issuer_names(alg)
            for asked, typ in cases:
                sub = "u1-%s" % asked
                answer = self.sign(alpha, {"sub": sub, "aud": AUD}, typ=asked)
                self.assertEqual(answer["alg"], alg)
                header = json.loads(b64url_decode(answer["token"].split(".")[0]))
                self.assertEqual(header, {"alg": alg, "kid": answer["kid"], "typ": typ})
                for v in self.verifiers:
                    with self.subTest(alg=alg, asked_typ=asked, verifier=v.name):
                        claims = self.assertVerifies(v, answer["token"],
                                                     **self.expect(alpha, answer, typ))
                        self.check_claims(claims, alpha, answer, sub, AUD)

    def test_ecdsa_signature_with_leading_zero_bytes_verifies(self):
        """R||S is fixed-size (RFC 7518 §3.4): an R or S below 2^(8(n-1)) keeps its leading zero
        byte. About 1 signature in 128 has one; sign until both cases turn up."""
        for alg in ALGORITHMS:
            if not alg.startswith("ES"):
                continue
            alpha, _ = issuer_names(alg)
            found = {}
            for i in range(20000):
                answer = self.sign(alpha, {"sub": "lz-%d" % i, "aud": AUD})
                sig = b64url_decode(answer["token"].split(".")[2])
                half = len(sig) // 2
                self.assertEqual(len(sig), {"ES256": 64, "ES384": 96, "ES512": 132}[alg],
                                 "R||S of %s has %d bytes" % (alg, len(sig)))
                if sig[0] == 0:
                    found.setdefault("R", answer)
                if sig[half] == 0:
                    found.setdefault("S", answer)
                if len(found) == 2:
                    break
            self.assertEqual(sorted(found), ["R", "S"],
                             "no signature with a leading zero byte in R and in S after %d tokens"
                             % (i + 1))
            for part, answer in sorted(found.items()):
                for v in self.verifiers:
                    with self.subTest(alg=alg, leading_zero_in=part, verifier=v.name):
                        self.assertVerifies(v, answer["token"], **self.expect(alpha, answer, "JWT"))

    def test_aud_array_verifies(self):
        for alg in ALGORITHMS:
            alpha, _ = issuer_names(alg)
            answer = self.sign(alpha, {"sub": "u-multi", "aud": [AUD, AUD2]})
            for expected_aud in (AUD, AUD2):
                for v in self.verifiers:
                    with self.subTest(alg=alg, expected_aud=expected_aud, verifier=v.name):
                        claims = self.assertVerifies(
                            v, answer["token"], **self.expect(alpha, answer, "JWT", expected_aud))
                        self.check_claims(claims, alpha, answer, "u-multi", [AUD, AUD2])

    def test_other_issuers_jwks_rejects(self):
        """A token of one issuer must not verify with another issuer's JWKS (either way)."""
        for alg in ALGORITHMS:
            alpha, beta = issuer_names(alg)
            for signer, other in ((alpha, beta), (beta, alpha)):
                answer = self.sign(signer, {"sub": "u1", "aud": AUD})
                args = self.expect(signer, answer, "JWT")
                args["jwks_url"] = self.daemon.jwks_url(other)
                # Sanity: the other JWKS is there and does not hold the signer's kid.
                other_kids = [k.get("kid") for k in self.daemon.jwks(other)["keys"]]
                self.assertTrue(other_kids, "%s has an empty JWKS" % other)
                self.assertNotIn(answer["kid"], other_kids)
                for v in self.verifiers:
                    with self.subTest(alg=alg, signer=signer, jwks_of=other, verifier=v.name):
                        self.assertRejected(v, {"key", "signature"}, answer["token"], **args)

    def test_tampered_token_rejected(self):
        for alg in ALGORITHMS:
            alpha, _ = issuer_names(alg)
            answer = self.sign(alpha, {"sub": "u1", "aud": AUD})
            h, p, s = answer["token"].split(".")
            # A payload that is still valid JSON with every expected claim: only the signature
            # can catch it.
            claims = json.loads(b64url_decode(p))
            claims["sub"] = "admin"
            p2 = b64url(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
            sig = bytearray(b64url_decode(s))
            sig[len(sig) // 4] ^= 0x01  # inside R (ECDSA) or anywhere in an RSA signature
            tampered = {"payload": ".".join((h, p2, s)),
                        "signature": ".".join((h, p, b64url(bytes(sig))))}
            for what, token in tampered.items():
                for v in self.verifiers:
                    with self.subTest(alg=alg, tampered=what, verifier=v.name):
                        self.assertRejected(v, {"signature"}, token,
                                            **self.expect(alpha, answer, "JWT"))

    def test_wrong_aud_rejected(self):
        for alg in ALGORITHMS:
            alpha, _ = issuer_names(alg)
            answer = self.sign(alpha, {"sub": "u1", "aud": AUD})
            for v in self.verifiers:
                with self.subTest(alg=alg, verifier=v.name):
                    self.assertRejected(v, {"claims"}, answer["token"],
                                        **self.expect(alpha, answer, "JWT", aud=AUD2))

    def test_wrong_iss_rejected(self):
        for alg in ALGORITHMS:
            alpha, beta = issuer_names(alg)
            answer = self.sign(alpha, {"sub": "u1", "aud": AUD})
            args = self.expect(alpha, answer, "JWT")
            args["iss"] = self.issuers[beta]["iss"]
            for v in self.verifiers:
                with self.subTest(alg=alg, verifier=v.name):
                    self.assertRejected(v, {"claims"}, answer["token"], **args)

    def test_expired_token_rejected(self):
        for alg in ALGORITHMS:
            alpha, _ = issuer_names(alg)
            answer = self.sign(alpha, {"sub": "u1", "aud": AUD, "exp": int(time.time()) + 5})
            # Good while it lasts (one verifier is enough), rejected once exp has passed.
            self.assertVerifies(self.verifiers[0], answer["token"],
                                **self.expect(alpha, answer, "JWT"))
            time.sleep(max(0.0, answer["exp"] - time.time()) + 1.1)
            for v in self.verifiers:
                with self.subTest(alg=alg, verifier=v.name):
                    self.assertRejected(v, {"claims"}, answer["token"],
                                        **self.expect(alpha, answer, "JWT"))


# ---------------------------------------------------------------------------------------------
# The verifiers themselves, against tokens this test forges with a key of its own: they must
# accept what is right and refuse what the daemon must never produce (so that a daemon that
# does produce it fails the tests above).

class _JWKSHandler(http.server.BaseHTTPRequestHandler):
    jwks = {}

    def do_GET(self):  # noqa: N802
        name = self.path.split("/")[1]
        if name not in self.jwks:
            self.send_response(404)
            self.end_headers()
            return
        body = json.dumps(self.jwks[name]).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class VerifierSelfTest(VerifierAssertions):
    ISS = "https://selftest.example.test/a"

    @classmethod
    def setUpClass(cls):
        check_verifiers_installed()
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
        cls.verifiers = verifiers()

        def make_key():
            k = ec.generate_private_key(ec.SECP256R1())
            n = k.public_key().public_numbers()
            jwk = {"kty": "EC", "crv": "P-256", "x": b64url(n.x.to_bytes(32, "big")),
                   "y": b64url(n.y.to_bytes(32, "big"))}
            kid = harness.jwk_thumbprint(jwk)
            return k, dict({"kid": kid, "alg": "ES256", "use": "sig"}, **jwk)

        def sign(key, header, claims, der=False):
            si = "%s.%s" % (b64url(json.dumps(header, separators=(",", ":")).encode()),
                            b64url(json.dumps(claims, separators=(",", ":")).encode()))
            sig = key.sign(si.encode("ascii"), ec.ECDSA(hashes.SHA256()))
            if not der:
                r, s = decode_dss_signature(sig)
                sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
            return si + "." + b64url(sig)

        cls.key, cls.jwk = make_key()
        _, other_jwk = make_key()
        # A kid that starts with "-" (1 thumbprint in 64): must reach the verifiers as a value.
        while True:
            cls.dash_key, cls.dash_jwk = make_key()
            if cls.dash_jwk["kid"].startswith("-"):
                break
        cls.sign_dash = staticmethod(lambda header, claims: sign(cls.dash_key, header, claims))
        cls.sign_with = staticmethod(lambda header, claims, der=False:
                                     sign(cls.key, header, claims, der))
        _JWKSHandler.jwks = {
            "a": {"keys": [cls.jwk]},
            "b": {"keys": [other_jwk]},
            "leaky": {"keys": [dict(cls.jwk, d=b64url(
                cls.key.private_numbers().private_value.to_bytes(32, "big")))]},
            "wrongkid": {"keys": [dict(cls.jwk, kid=other_jwk["kid"])]},
            "dash": {"keys": [cls.dash_jwk]},
        }
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _JWKSHandler)
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    def url(self, name):
        return "http://127.0.0.1:%d/%s/.well-known/jwks.json" % (self.server.server_address[1],
                                                                 name)

    def claims(self, **kw):
        now = int(time.time())
        c = {"iss": self.ISS, "sub": "u1", "aud": AUD, "iat": now, "exp": now + 600,
             "jti": "selftest"}
        c.update(kw)
        return {k: v for k, v in c.items() if v is not None}

    def header(self, **kw):
        h = {"alg": "ES256", "kid": self.jwk["kid"], "typ": "JWT"}
        h.update(kw)
        return {k: v for k, v in h.items() if v is not None}

    def args(self, **kw):
        a = dict(jwks_url=self.url("a"), iss=self.ISS, aud=AUD, alg="ES256",
                 kid=self.jwk["kid"], typ="JWT")
        a.update(kw)
        return a

    def test_accepts_good_token(self):
        claims = self.claims()
        token = self.sign_with(self.header(), claims)
        for v in self.verifiers:
            with self.subTest(verifier=v.name):
                self.assertEqual(self.assertVerifies(v, token, **self.args()), claims)

    def test_rejects(self):
        good = self.sign_with(self.header(), self.claims())
        cases = [
            ("extra header member", {"header"},
             self.sign_with(self.header(jku="http://evil.test/"), self.claims()), {}),
            ("header without typ", {"header"},
             self.sign_with(self.header(typ=None), self.claims()), {}),
            ("typ differs", {"header"}, self.sign_with(self.header(typ="at+jwt"), self.claims()),
             {}),
            ("kid differs from expected", {"header"}, good, {"kid": "some-other-kid"}),
            ("alg differs from expected", {"header"}, good, {"alg": "ES384"}),
            ("DER signature", {"signature"}, self.sign_with(self.header(), self.claims(), True),
             {}),
            ("key of another JWKS", {"key", "signature"}, good, {"jwks_url": self.url("b")}),
            ("JWKS answers 404", {"jwks"}, good, {"jwks_url": self.url("nope")}),
            ("JWK holds a private member", {"key", "jwks"}, good, {"jwks_url": self.url("leaky")}),
            ("kid is not the thumbprint", {"key"},
             self.sign_with(self.header(kid=_JWKSHandler.jwks["wrongkid"]["keys"][0]["kid"]),
                            self.claims()),
             {"jwks_url": self.url("wrongkid"),
              "kid": _JWKSHandler.jwks["wrongkid"]["keys"][0]["kid"]}),
            ("expired", {"claims"}, self.sign_with(self.header(),
                                                   self.claims(exp=int(time.time()) - 5)), {}),
            ("no exp", {"claims"}, self.sign_with(self.header(), self.claims(exp=None)), {}),
            ("non-integer exp", {"claims"},
             self.sign_with(self.header(), self.claims(exp=time.time() + 600.5)), {}),
            ("wrong iss", {"claims"}, good, {"iss": "https://selftest.example.test/b"}),
            ("wrong aud", {"claims"}, good, {"aud": AUD2}),
            ("padded base64url", {"format"}, good.split(".")[0] + "=." + good.split(".", 1)[1],
             {}),
        ]
        calls = [(v, dict(token=token, **self.args(**overrides)))
                 for _, _, token, overrides in cases for v in self.verifiers]
        results = iter(self.run_parallel(calls))
        for what, stages, token, overrides in cases:
            for v in self.verifiers:
                with self.subTest(case=what, verifier=v.name):
                    self.assertRejected(v, stages, token, **self.args(**overrides),
                                        result=next(results))

    def test_kid_starting_with_dash(self):
        kid = self.dash_jwk["kid"]
        token = self.sign_dash(self.header(kid=kid), self.claims())
        for v in self.verifiers:
            with self.subTest(verifier=v.name):
                self.assertVerifies(v, token, **self.args(jwks_url=self.url("dash"), kid=kid))

    def test_aud_array(self):
        token = self.sign_with(self.header(), self.claims(aud=[AUD2, AUD]))
        for v in self.verifiers:
            with self.subTest(verifier=v.name):
                self.assertVerifies(v, token, **self.args())


if __name__ == "__main__":
    unittest.main(verbosity=2)
