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
ALGORITHMS = ["ES256", "ES384", "RS256", "PS256", "EdDSA"]
# Octets of a signature (RFC 7518 §3.4 R||S; RSA at the daemon's default 2048 bits; RFC 8037).
SIG_LEN = {"ES256": 64, "ES384": 96, "RS256": 256, "PS256": 256, "EdDSA": 64}
# Verifier processes run at once (they mostly start up and wait for the JWKS).
PARALLEL = 4

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
        """[(verifier, kwargs of run)] -> their results, in order, run a few at a time (the
        verifiers spend most of their time starting up and waiting for the JWKS)."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=PARALLEL) as ex:
            return list(ex.map(lambda c: c[0].run(**c[1]), calls))

    def assertVerifies(self, v, token, jwks_url, iss, aud, alg, kid, typ, result=None):
        rc, out, stdout, stderr = result or v.run(token, jwks_url, iss, aud, alg, kid, typ)
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

    def check_all(self, cases):
        """cases: [(subtest labels (dict), verifier, run kwargs, expected)] where expected is
        None (must verify) or a set of rejection stages. Runs every verifier call in parallel,
        then asserts each in its own subTest. Returns the claims of each case (None for the
        rejected ones and for failures)."""
        results = self.run_parallel([(v, kw) for _, v, kw, _ in cases])
        claims = []
        for (labels, v, kw, expected), result in zip(cases, results):
            got = None
            with self.subTest(verifier=v.name, **labels):
                if expected is None:
                    got = self.assertVerifies(v, result=result, **kw)
                else:
                    self.assertRejected(v, expected, result=result, **kw)
            claims.append(got)
        return claims


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
            self.death_reported = True
            self.fail("signing on %s failed (%s); daemon %s; log ends:\n%s"
                      % (issuer, e, "exited %s" % proc.returncode
                         if proc is not None and proc.poll() is not None else "still running",
                         self.daemon.log()[-3000:]))
        self.assertEqual(r.status, 200, "%s: %r" % (issuer, r))
        body = r.json()
        self.assertEqual(sorted(body), ["alg", "exp", "iat", "kid", "token"], body)
        return body

    def expect(self, issuer, answer, typ, aud=AUD):
        """The verifier arguments for a token of issuer that must verify."""
        return dict(jwks_url=self.daemon.jwks_url(issuer), iss=self.issuers[issuer]["iss"],
                    aud=aud, alg=self.issuers[issuer]["algorithm"], kid=answer["kid"], typ=typ)

    def token_case(self, labels, v, token, args, expected=None):
        return (labels, v, dict(token=token, **args), expected)

    def check_claims(self, claims, issuer, answer, sub, aud):
        self.assertEqual(claims["iss"], self.issuers[issuer]["iss"])
        self.assertEqual(claims["sub"], sub)
        self.assertEqual(claims["aud"], aud)
        self.assertEqual(claims["iat"], answer["iat"])
        self.assertEqual(claims["exp"], answer["exp"])
        self.assertIsInstance(claims.get("jti"), str)

    def test_token_types_verify(self):
        """Every algorithm signs a token with the default typ, and (the typ being the same
        header member whatever the algorithm) one with an explicit typ, in turn JWT and
        at+jwt."""
        # (typ asked for, typ expected in the header): no typ means the first of token-types.
        cases, checks = [], []
        for i, alg in enumerate(ALGORITHMS):
            alpha, _ = issuer_names(alg)
            explicit = TOKEN_TYPES[i % len(TOKEN_TYPES)]
            for asked, typ in ((None, TOKEN_TYPES[0]), (explicit, explicit)):
                sub = "u1-%s" % asked
                answer = self.sign(alpha, {"sub": sub, "aud": AUD}, typ=asked)
                self.assertEqual(answer["alg"], alg)
                header = json.loads(b64url_decode(answer["token"].split(".")[0]))
                self.assertEqual(header, {"alg": alg, "kid": answer["kid"], "typ": typ})
                self.assertEqual(len(b64url_decode(answer["token"].split(".")[2])),
                                 SIG_LEN[alg], "signature size of %s" % alg)
                for v in self.verifiers:
                    cases.append(self.token_case({"alg": alg, "asked_typ": asked}, v,
                                                 answer["token"], self.expect(alpha, answer, typ)))
                    checks.append((alpha, answer, sub))
        for claims, (issuer, answer, sub) in zip(self.check_all(cases), checks):
            if claims is not None:
                self.check_claims(claims, issuer, answer, sub, AUD)

    def sign_until(self, issuer, wanted, limit):
        """Signs until wanted(signature bytes) has named every case it can name; returns
        {case: answer}. wanted returns the cases a signature shows (an iterable)."""
        found = {}
        for i in range(limit):
            answer = self.sign(issuer, {"sub": "lz-%d" % i, "aud": AUD})
            for case in wanted(b64url_decode(answer["token"].split(".")[2])):
                found.setdefault(case, answer)
            if len(found) == 2:
                break
        return found, i + 1

    def test_ecdsa_signature_with_leading_zero_bytes_verifies(self):
        """R||S is fixed-size (RFC 7518 §3.4): an R or S below 2^(8(n-1)) keeps its leading zero
        byte. About 1 signature in 128 (ES256) or 256 (ES384) has one in R or S; sign until both
        cases turn up."""
        cases = []
        for alg in ALGORITHMS:
            if not alg.startswith("ES"):
                continue
            alpha, _ = issuer_names(alg)

            def zeros(sig, alg=alg):
                self.assertEqual(len(sig), SIG_LEN[alg], "R||S of %s has %d bytes" % (alg, len(sig)))
                return [part for part, at in (("R", 0), ("S", len(sig) // 2)) if sig[at] == 0]
            found, n = self.sign_until(alpha, zeros, 20000)
            self.assertEqual(sorted(found), ["R", "S"],
                             "%s: no signature with a leading zero byte in R and in S after %d "
                             "tokens" % (alg, n))
            for part, answer in sorted(found.items()):
                for v in self.verifiers:
                    cases.append(self.token_case({"alg": alg, "leading_zero_in": part}, v,
                                                 answer["token"], self.expect(alpha, answer, "JWT")))
        self.check_all(cases)

    def test_rsa_signature_with_leading_zero_byte_verifies(self):
        """An RSA signature is exactly as long as the modulus (RFC 8017 §8.1.1 I2OSP, RFC 7518
        §3.3): one below 2^(8(k-1)), about 1 in 200, keeps its leading zero byte."""
        cases = []
        for alg in ALGORITHMS:
            if alg not in ("RS256", "PS256"):
                continue
            alpha, _ = issuer_names(alg)

            def zero(sig, alg=alg):
                self.assertEqual(len(sig), SIG_LEN[alg], "%s signature of %d bytes" % (alg, len(sig)))
                return ["leading zero", "none"] if sig[0] == 0 else ["none"]
            found, n = self.sign_until(alpha, zero, 5000)
            self.assertIn("leading zero", found, "%s: no signature below 2^2040 in %d tokens"
                          % (alg, n))
            answer = found["leading zero"]
            for v in self.verifiers:
                cases.append(self.token_case({"alg": alg}, v, answer["token"],
                                             self.expect(alpha, answer, "JWT")))
        self.check_all(cases)

    def test_aud_array_verifies(self):
        """A token with an aud array verifies for the first value, and for the second (in turn
        per algorithm: the aud check does not depend on it)."""
        cases, answers = [], []
        for i, alg in enumerate(ALGORITHMS):
            alpha, _ = issuer_names(alg)
            answer = self.sign(alpha, {"sub": "u-multi", "aud": [AUD, AUD2]})
            for expected_aud in ((AUD, AUD2)[i % 2],):
                for v in self.verifiers:
                    cases.append(self.token_case(
                        {"alg": alg, "expected_aud": expected_aud}, v, answer["token"],
                        self.expect(alpha, answer, "JWT", expected_aud)))
                    answers.append((alpha, answer))
        for claims, (issuer, answer) in zip(self.check_all(cases), answers):
            if claims is not None:
                self.check_claims(claims, issuer, answer, "u-multi", [AUD, AUD2])

    def test_other_issuers_jwks_rejects(self):
        """A token of one issuer must not verify with another issuer's JWKS of the same
        algorithm (both ways, in turn per algorithm)."""
        cases = []
        for i, alg in enumerate(ALGORITHMS):
            alpha, beta = issuer_names(alg)
            for signer, other in (((alpha, beta), (beta, alpha))[i % 2],):
                answer = self.sign(signer, {"sub": "u1", "aud": AUD})
                args = self.expect(signer, answer, "JWT")
                args["jwks_url"] = self.daemon.jwks_url(other)
                # Sanity: the other JWKS is there and does not hold the signer's kid.
                other_kids = [k.get("kid") for k in self.daemon.jwks(other)["keys"]]
                self.assertTrue(other_kids, "%s has an empty JWKS" % other)
                self.assertNotIn(answer["kid"], other_kids)
                for v in self.verifiers:
                    cases.append(self.token_case({"alg": alg, "signer": signer, "jwks_of": other},
                                                 v, answer["token"], args, {"key", "signature"}))
        self.check_all(cases)

    def test_other_algorithms_jwks_rejects(self):
        """A token is accepted only with its own issuer's keys: against the JWKS of the issuer of
        the next algorithm of ALGORITHMS, no key fits. (A token checked as another alg than its
        own is refused on its header: VerifierSelfTest.)"""
        cases = []
        for i, alg in enumerate(ALGORITHMS):
            other_alg = ALGORITHMS[(i + 1) % len(ALGORITHMS)]
            if other_alg == alg:
                continue
            alpha, _ = issuer_names(alg)
            other, _ = issuer_names(other_alg)
            answer = self.sign(alpha, {"sub": "u1", "aud": AUD})
            other_jwks = dict(self.expect(alpha, answer, "JWT"),
                              jwks_url=self.daemon.jwks_url(other))
            for v in self.verifiers:
                cases.append(self.token_case({"alg": alg, "jwks_of": other}, v,
                                             answer["token"], other_jwks, {"key", "signature"}))
        self.check_all(cases)

    def test_tampered_token_rejected(self):
        cases = []
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
            sig[len(sig) // 4] ^= 0x01  # inside R (ECDSA, EdDSA) or anywhere in an RSA signature
            tampered = {"payload": ".".join((h, p2, s)),
                        "signature": ".".join((h, p, b64url(bytes(sig))))}
            for what, token in tampered.items():
                for v in self.verifiers:
                    cases.append(self.token_case({"alg": alg, "tampered": what}, v, token,
                                                 self.expect(alpha, answer, "JWT"), {"signature"}))
        self.check_all(cases)

    def test_wrong_aud_and_iss_rejected(self):
        """Checked against another aud or iss, a token is rejected (the claims checks do not
        depend on the algorithm: aud and iss in turn)."""
        cases = []
        for i, alg in enumerate(ALGORITHMS):
            alpha, beta = issuer_names(alg)
            answer = self.sign(alpha, {"sub": "u1", "aud": AUD})
            wrong = {"aud": self.expect(alpha, answer, "JWT", aud=AUD2),
                     "iss": dict(self.expect(alpha, answer, "JWT"),
                                 iss=self.issuers[beta]["iss"])}
            what = ("aud", "iss")[i % 2]
            for v in self.verifiers:
                cases.append(self.token_case({"alg": alg, "wrong": what}, v, answer["token"],
                                             wrong[what], {"claims"}))
        self.check_all(cases)

    def test_expired_token_rejected(self):
        answers = {}
        for alg in ALGORITHMS:
            alpha, _ = issuer_names(alg)
            answers[alg] = (alpha, self.sign(alpha, {"sub": "u1", "aud": AUD,
                                                     "exp": int(time.time()) + 5}))
        # Good while they last (one verifier each is enough), rejected once exp has passed.
        self.check_all([self.token_case({"alg": alg, "when": "before exp"}, self.verifiers[0],
                                        answer["token"], self.expect(alpha, answer, "JWT"))
                        for alg, (alpha, answer) in answers.items()])
        last = max(answer["exp"] for _, answer in answers.values())
        time.sleep(max(0.0, last - time.time()) + 1.1)
        self.check_all([self.token_case({"alg": alg, "when": "after exp"}, v, answer["token"],
                                        self.expect(alpha, answer, "JWT"), {"claims"})
                        for alg, (alpha, answer) in answers.items() for v in self.verifiers])


# ---------------------------------------------------------------------------------------------
# The verifiers themselves, against tokens this test forges with keys of its own: they must
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


def public_jwk(alg, key):
    """The JWK tokensign would publish for key: members kid, kty, alg, use, then the key's, in
    that order (docs/api.md)."""
    from cryptography.hazmat.primitives import serialization
    pub = key.public_key()
    if alg.startswith("ES"):
        n = pub.public_numbers()
        size = (pub.curve.key_size + 7) // 8
        members = {"kty": "EC", "crv": "P-%d" % pub.curve.key_size,
                   "x": b64url(n.x.to_bytes(size, "big")), "y": b64url(n.y.to_bytes(size, "big"))}
    elif alg in ("RS256", "PS256"):
        n = pub.public_numbers()
        members = {"kty": "RSA", "n": b64url(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")),
                   "e": b64url(n.e.to_bytes((n.e.bit_length() + 7) // 8, "big"))}
    else:
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        members = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    jwk = {"kid": harness.jwk_thumbprint(members), "kty": members["kty"], "alg": alg,
           "use": "sig"}
    jwk.update((k, v) for k, v in members.items() if k != "kty")
    return jwk


def make_key(alg, bits=2048):
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    if alg in ("RS256", "PS256"):
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return ed25519.Ed25519PrivateKey.generate()


def raw_sign(alg, key, data, der=False, salt=32):
    """A JWS signature of data as RFC 7518 / RFC 8037 define it (der: ECDSA in DER instead of
    R||S; salt: the PSS salt length, 32 being the right one)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    if alg.startswith("ES"):
        size = (key.curve.key_size + 7) // 8
        sig = key.sign(data, ec.ECDSA(hashes.SHA256() if alg == "ES256" else hashes.SHA384()))
        if not der:
            r, s = decode_dss_signature(sig)
            sig = r.to_bytes(size, "big") + s.to_bytes(size, "big")
        return sig
    if alg == "RS256":
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if alg == "PS256":
        return key.sign(data, padding.PSS(padding.MGF1(hashes.SHA256()), salt), hashes.SHA256())
    return key.sign(data)


def forge(alg, key, header, claims, **kw):
    si = "%s.%s" % (b64url(json.dumps(header, separators=(",", ":")).encode()),
                    b64url(json.dumps(claims, separators=(",", ":")).encode()))
    return si + "." + b64url(raw_sign(alg, key, si.encode("ascii"), **kw))


class VerifierSelfTest(VerifierAssertions):
    ISS = "https://selftest.example.test/a"

    @classmethod
    def setUpClass(cls):
        check_verifiers_installed()
        cls.verifiers = verifiers()
        cls.key = make_key("ES256")
        cls.jwk = public_jwk("ES256", cls.key)
        other_jwk = public_jwk("ES256", make_key("ES256"))
        # A kid that starts with "-" (1 thumbprint in 64): must reach the verifiers as a value.
        while True:
            cls.dash_key = make_key("ES256")
            cls.dash_jwk = public_jwk("ES256", cls.dash_key)
            if cls.dash_jwk["kid"].startswith("-"):
                break
        # One key per algorithm, each in its own JWKS "alg-ALG".
        cls.alg_keys = {alg: make_key(alg) for alg in ALGORITHMS}
        cls.alg_jwks = {alg: public_jwk(alg, k) for alg, k in cls.alg_keys.items()}
        # An RSA signature below 2^2040 (about 1 in 200): its leading zero octet must stay.
        rsa_key, rsa_jwk = cls.alg_keys["RS256"], cls.alg_jwks["RS256"]
        for i in range(20000):
            claims = dict(cls.claims_for(), jti="lz-%d" % i)
            token = forge("RS256", rsa_key, {"alg": "RS256", "kid": rsa_jwk["kid"], "typ": "JWT"},
                          claims)
            if b64url_decode(token.split(".")[2])[0] == 0:
                cls.rsa_leading_zero = token
                break
        else:
            raise AssertionError("no RSA signature with a leading zero octet in 20000")
        small_rsa = make_key("RS256", 1024)
        cls.small_rsa = (small_rsa, public_jwk("RS256", small_rsa))
        zero_n = dict(rsa_jwk)
        zero_n["n"] = b64url(b"\0" + b64url_decode(rsa_jwk["n"]))
        zero_n["kid"] = harness.jwk_thumbprint(zero_n)
        cls.zero_n_jwk = zero_n

        def reorder(jwk, order):
            return {k: jwk[k] for k in order}
        _JWKSHandler.jwks = {
            "a": {"keys": [cls.jwk]},
            "b": {"keys": [other_jwk]},
            "leaky": {"keys": [dict(cls.jwk, d=b64url(
                cls.key.private_numbers().private_value.to_bytes(32, "big")))]},
            "wrongkid": {"keys": [dict(cls.jwk, kid=other_jwk["kid"])]},
            "dash": {"keys": [cls.dash_jwk]},
            "reordered": {"keys": [reorder(cls.jwk, ["kid", "alg", "kty", "use", "crv", "x", "y"])]},
            "extra": {"keys": [dict(cls.jwk, key_ops=["verify"])]},
            "no-alg": {"keys": [{k: v for k, v in cls.jwk.items() if k != "alg"}]},
            "rsa-small": {"keys": [cls.small_rsa[1]]},
            "rsa-zero-n": {"keys": [zero_n]},
            "rs-as-ps": {"keys": [dict(rsa_jwk, alg="PS256")]},
        }
        for alg, jwk in cls.alg_jwks.items():
            _JWKSHandler.jwks["alg-" + alg] = {"keys": [jwk]}
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _JWKSHandler)
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    @classmethod
    def claims_for(cls, **kw):
        now = int(time.time())
        c = {"iss": cls.ISS, "sub": "u1", "aud": AUD, "iat": now, "exp": now + 600,
             "jti": "selftest"}
        c.update(kw)
        return {k: v for k, v in c.items() if v is not None}

    def claims(self, **kw):
        return self.claims_for(**kw)

    def sign_with(self, header, claims, der=False):
        return forge("ES256", self.key, header, claims, der=der)

    def sign_alg(self, alg, claims=None, key=None, kid=None, **kw):
        key = key or self.alg_keys[alg]
        header = {"alg": alg, "kid": kid or self.alg_jwks[alg]["kid"], "typ": "JWT"}
        return forge(alg, key, header, claims or self.claims(), **kw)

    def url(self, name):
        return "http://127.0.0.1:%d/%s/.well-known/jwks.json" % (self.server.server_address[1],
                                                                 name)

    def header(self, **kw):
        h = {"alg": "ES256", "kid": self.jwk["kid"], "typ": "JWT"}
        h.update(kw)
        return {k: v for k, v in h.items() if v is not None}

    def args(self, **kw):
        a = dict(jwks_url=self.url("a"), iss=self.ISS, aud=AUD, alg="ES256",
                 kid=self.jwk["kid"], typ="JWT")
        a.update(kw)
        return a

    def alg_args(self, key_alg, **kw):
        """Verifier arguments for a token signed with the key of key_alg (kw overrides)."""
        a = dict(jwks_url=self.url("alg-" + key_alg), alg=key_alg,
                 kid=self.alg_jwks[key_alg]["kid"])
        a.update(kw)
        return self.args(**a)

    def test_accepts_good_token(self):
        claims = self.claims()
        token = self.sign_with(self.header(), claims)
        cases = [({"alg": "ES256 (key a)"}, v, dict(token=token, **self.args()), None)
                 for v in self.verifiers]
        for alg in ALGORITHMS:
            for v in self.verifiers:
                cases.append(({"alg": alg}, v, dict(token=self.sign_alg(alg, claims),
                                                    **self.alg_args(alg)), None))
        for v in self.verifiers:
            cases.append(({"alg": "RS256 signature with a leading zero octet"}, v,
                          dict(token=self.rsa_leading_zero, **self.alg_args("RS256")), None))
        for got in self.check_all(cases):
            if got is not None:
                self.assertEqual(got["iss"], self.ISS)
                self.assertEqual(got["sub"], "u1")

    def test_rejects(self):
        good = self.sign_with(self.header(), self.claims())
        h, p, s = self.rsa_leading_zero.split(".")
        rsa_short = ".".join((h, p, b64url(b64url_decode(s)[1:])))
        small_key, small_jwk = self.small_rsa
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
            ("JWK members in another order", {"key"}, good, {"jwks_url": self.url("reordered")}),
            ("JWK with an extra member", {"key"}, good, {"jwks_url": self.url("extra")}),
            ("JWK without alg", {"key"}, good, {"jwks_url": self.url("no-alg")}),
            ("expired", {"claims"}, self.sign_with(self.header(),
                                                   self.claims(exp=int(time.time()) - 5)), {}),
            ("no exp", {"claims"}, self.sign_with(self.header(), self.claims(exp=None)), {}),
            ("non-integer exp", {"claims"},
             self.sign_with(self.header(), self.claims(exp=time.time() + 600.5)), {}),
            ("wrong iss", {"claims"}, good, {"iss": "https://selftest.example.test/b"}),
            ("wrong aud", {"claims"}, good, {"aud": AUD2}),
            ("padded base64url", {"format"}, good.split(".")[0] + "=." + good.split(".", 1)[1],
             {}),
            # RSA, PS, EdDSA and ES384 shapes the daemon must never produce.
            ("RSA signature without its leading zero octet", {"signature"}, rsa_short,
             self.alg_args("RS256")),
            ("RSA key of 1024 bits", {"key"},
             self.sign_alg("RS256", key=small_key, kid=small_jwk["kid"]),
             self.alg_args("RS256", jwks_url=self.url("rsa-small"), kid=small_jwk["kid"])),
            ("RSA modulus with a leading zero octet", {"key"},
             self.sign_alg("RS256", kid=self.zero_n_jwk["kid"]),
             self.alg_args("RS256", jwks_url=self.url("rsa-zero-n"),
                           kid=self.zero_n_jwk["kid"])),
            ("RS256 token, key published for PS256", {"key"}, self.sign_alg("RS256"),
             self.alg_args("RS256", jwks_url=self.url("rs-as-ps"))),
            ("PS256 with a 20-octet salt", {"signature"}, self.sign_alg("PS256", salt=20),
             self.alg_args("PS256")),
            ("PS256 signature checked as RS256", {"header"}, self.sign_alg("PS256"),
             self.alg_args("PS256", alg="RS256")),
            ("RS256 signature in a PS256 token", {"signature"},
             self.sign_alg("RS256").replace(
                 self.sign_alg("RS256").split(".")[0],
                 b64url(json.dumps({"alg": "PS256", "kid": self.alg_jwks["RS256"]["kid"],
                                    "typ": "JWT"}, separators=(",", ":")).encode())),
             self.alg_args("RS256", alg="PS256",
                           jwks_url=self.url("rs-as-ps"))),
            ("EdDSA token against an ES256 key", {"key", "header", "signature"},
             self.sign_alg("EdDSA", kid=self.jwk["kid"]), self.args(alg="EdDSA")),
            ("ES384 DER signature", {"signature"}, self.sign_alg("ES384", der=True),
             self.alg_args("ES384")),
        ]
        calls = [(v, dict(token=token, **(overrides if "jwks_url" in overrides and "alg" in
                                          overrides else self.args(**overrides))))
                 for _, _, token, overrides in cases for v in self.verifiers]
        results = iter(self.run_parallel(calls))
        for (what, stages, token, overrides) in cases:
            for v in self.verifiers:
                with self.subTest(case=what, verifier=v.name):
                    kw = overrides if "jwks_url" in overrides and "alg" in overrides \
                        else self.args(**overrides)
                    self.assertRejected(v, stages, token, result=next(results), **kw)

    def test_kid_starting_with_dash(self):
        kid = self.dash_jwk["kid"]
        token = forge("ES256", self.dash_key, self.header(kid=kid), self.claims())
        self.check_all([({}, v, dict(token=token, **self.args(jwks_url=self.url("dash"), kid=kid)),
                         None) for v in self.verifiers])

    def test_aud_array(self):
        token = self.sign_with(self.header(), self.claims(aud=[AUD2, AUD]))
        self.check_all([({}, v, dict(token=token, **self.args()), None) for v in self.verifiers])


if __name__ == "__main__":
    unittest.main(verbosity=2)
