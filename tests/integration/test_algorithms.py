#!/usr/bin/python3
"""The five signing algorithms (SPEC §3-§5, docs/api.md): ES256, ES384, RS256, PS256, EdDSA.

- One daemon with an issuer per algorithm (and RSA at 3072 and 4096 bits) signs: the protected
  header is exactly {"alg","kid","typ"}, the signature has the algorithm's size and verifies
  with python3-cryptography and PyJWT against the live JWKS; each JWK has exactly the members of
  its key type, in the documented order; each kid is the RFC 7638 thumbprint (checked with
  jwcrypto too); the discovery document names the algorithm.
- RSA below 2048 bits is a configuration error (--check-config and the daemon).
- A token that lacks an algorithm's mechanisms is refused at start, naming the issuer and the
  algorithm; one that lacks only the combined mechanism (CKM_SHA256_RSA_PKCS,
  CKM_SHA256_RSA_PKCS_PSS) is used through the raw one with the digest made in the daemon
  (p11shim hides the mechanisms: HIDE in tests/shim/README.md).
- The self-check: a signature the token corrupted (p11shim C_Sign CORRUPT) is never answered:
  503 signature_check_failed and a critical log line, and the next request signs again.
- Known answers: katsign (tests/integration/katsign.c) signs with the daemon's own
  hsm_prepare_alg()/hsm_sign() and an imported key: RFC 7515 A.2 (RS256) and RFC 8037 A.4
  (Ed25519) must come out exactly; ES256, ES384 and PS256 (randomised) must verify.

Environment: TOKENSIGND, P11PROBE, SOFTHSM_MODULE, P11SHIM (the built shim) and KATSIGN (the
built katsign); see tests/shim/meson.build. Standalone unittest program."""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwcrypto import jwk as jjwk

import harness

AUD = "api://orders"
CLAIMS = {"sub": "user-42", "aud": AUD}
EXIT_TIMEOUT = 30.0

# What each algorithm's keys and signatures look like (RFC 7518 §3, RFC 8037).
ALGS = {
    "ES256": {"kty": "EC", "crv": "P-256", "coord": 32, "sig": 64},
    "ES384": {"kty": "EC", "crv": "P-384", "coord": 48, "sig": 96},
    "RS256": {"kty": "RSA", "sig": None},
    "PS256": {"kty": "RSA", "sig": None},
    "EdDSA": {"kty": "OKP", "crv": "Ed25519", "coord": 32, "sig": 64},
}
# docs/api.md: the members of each JWK, exactly and in this order.
JWK_MEMBERS = {
    "EC": ["kid", "kty", "alg", "use", "crv", "x", "y"],
    "RSA": ["kid", "kty", "alg", "use", "n", "e"],
    "OKP": ["kid", "kty", "alg", "use", "crv", "x"],
}
# How hsm_algs.c signs each algorithm on a token that has every mechanism (the start-up log).
PLANS = {
    "ES256": "CKM_ECDSA over a SHA-256 digest",
    "ES384": "CKM_ECDSA over a SHA-384 digest",
    "RS256": "CKM_SHA256_RSA_PKCS",
    "PS256": "CKM_SHA256_RSA_PKCS_PSS",
    "EdDSA": "CKM_EDDSA (Ed25519)",
}
RS256_FALLBACK = "CKM_RSA_PKCS over a SHA-256 DigestInfo made here"
PS256_FALLBACK = "CKM_RSA_PKCS_PSS over a SHA-256 digest made here"

# PKCS#11 mechanism numbers (p11-kit's pkcs11.h).
CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_RSA_PKCS, CKM_RSA_PKCS_PSS = 0x0, 0x1, 0xd
CKM_SHA256_RSA_PKCS, CKM_SHA256_RSA_PKCS_PSS = 0x40, 0x43
CKM_EC_EDWARDS_KEY_PAIR_GEN, CKM_EDDSA = 0x1055, 0x1057
CKR_MECHANISM_INVALID = 0x70


def b64d(s):
    return harness.b64url_decode(s)


def b64e(b):
    return harness.b64url_encode(b)


def ordered_members(text):
    """The member names of each object in a JSON array of JWKs (text), in document order."""
    out = []

    def hook(pairs):
        names = [k for k, _ in pairs]
        if len(set(names)) != len(names):
            raise AssertionError("repeated member in %r" % names)
        if "kty" in names:
            out.append(names)
        return dict(pairs)
    json.loads(text, object_pairs_hook=hook)
    return out


def public_key(jwk):
    """The python3-cryptography public key of a JWK (raises if the key is not valid)."""
    if jwk["kty"] == "EC":
        curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}[jwk["crv"]]
        return ec.EllipticCurvePublicNumbers(int.from_bytes(b64d(jwk["x"]), "big"),
                                             int.from_bytes(b64d(jwk["y"]), "big"),
                                             curve).public_key()
    if jwk["kty"] == "RSA":
        return rsa.RSAPublicNumbers(int.from_bytes(b64d(jwk["e"]), "big"),
                                    int.from_bytes(b64d(jwk["n"]), "big")).public_key()
    return ed25519.Ed25519PublicKey.from_public_bytes(b64d(jwk["x"]))


def verify_signature(alg, pub, data, sig):
    """True when sig is a valid JWS signature of data under alg, exactly as RFC 7518 / RFC 8037
    define it (R||S; PKCS#1 v1.5; PSS with MGF1-SHA-256 and a 32-octet salt; Ed25519)."""
    try:
        if alg in ("ES256", "ES384"):
            half = ALGS[alg]["coord"]
            if len(sig) != 2 * half:
                return False
            der = encode_dss_signature(int.from_bytes(sig[:half], "big"),
                                       int.from_bytes(sig[half:], "big"))
            pub.verify(der, data, ec.ECDSA(hashes.SHA256() if alg == "ES256" else hashes.SHA384()))
        elif alg == "RS256":
            if len(sig) != pub.key_size // 8:
                return False
            pub.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "PS256":
            if len(sig) != pub.key_size // 8:
                return False
            pub.verify(sig, data, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
        else:
            pub.verify(sig, data)
        return True
    except InvalidSignature:
        return False


def own_thumbprint(jwk):
    """RFC 7638 §3.2, written out per key type: the required members in lexicographic order,
    no whitespace, SHA-256, base64url."""
    if jwk["kty"] == "EC":
        text = '{"crv":"%s","kty":"EC","x":"%s","y":"%s"}' % (jwk["crv"], jwk["x"], jwk["y"])
    elif jwk["kty"] == "RSA":
        text = '{"e":"%s","kty":"RSA","n":"%s"}' % (jwk["e"], jwk["n"])
    else:
        text = '{"crv":"%s","kty":"OKP","x":"%s"}' % (jwk["crv"], jwk["x"])
    return b64e(hashlib.sha256(text.encode("ascii")).digest())


def log_since(d, start):
    return d.log()[start:]


def shim_daemon(issuers):
    """A harness.Daemon (not started) that loads its token through p11shim; its fault file is
    d.faults, its call log d.shim_log."""
    return harness.shim_daemon(issuers)


set_faults = harness.write_faults


def read_faults(d):
    with open(d.faults) as f:
        return f.read()


def hide(*mechs):
    """Fault lines that make the token seem to lack mechs: not listed, no info, and refused by
    C_SignInit / C_GenerateKeyPair should the daemon use it all the same."""
    out = []
    for m in mechs:
        out += ["C_GetMechanismList:0x%x HIDE *" % m, "C_GetMechanismInfo:0x%x HIDE *" % m,
                "C_SignInit:0x%x CKR_MECHANISM_INVALID *" % m,
                "C_GenerateKeyPair:0x%x CKR_MECHANISM_INVALID *" % m]
    return out


def token_objects(d):
    """The token's objects, read with the real module (no shim, no faults)."""
    env = {k: v for k, v in d.env.items() if not k.startswith("P11SHIM_")}
    return harness.p11probe(os.environ["SOFTHSM_MODULE"], d.token_label, d.pin_file, env)


def plan_line(issuer, alg, plan, bits=None, self_check=None):
    """The start-up line main.c writes for an issuer, as a regex."""
    return re.compile(r"^(?:tokensignd: info: |<6>)issuer %s: %s%s via %s, self-check %s$" % (
        re.escape(issuer), re.escape(alg), re.escape(" (new keys %d bits)" % bits) if bits else "",
        re.escape(plan), "(?:on|off)" if self_check is None else ("on" if self_check else "off")),
        re.M)


# ---------------------------------------------------------------------------------------------

class FiveAlgorithms(harness.TestCase):
    """One daemon (real SoftHSM), one issuer per algorithm, plus RSA at 3072 and 4096 bits."""

    ISSUERS = {
        "es256": ("ES256", None),
        "es384": ("ES384", None),
        "rs256": ("RS256", None),
        "ps256": ("PS256", None),
        "eddsa": ("EdDSA", None),
        "rs256-3072": ("RS256", 3072),
        "ps256-4096": ("PS256", 4096),
    }

    @classmethod
    def setUpClass(cls):
        issuers = {}
        for name, (alg, bits) in cls.ISSUERS.items():
            issuers[name] = {"algorithm": alg, "audiences": AUD, "token-types": "JWT, at+jwt"}
            if bits:
                issuers[name]["key-size"] = str(bits)
        cls.d = harness.Daemon(issuers=issuers)
        # Four RSA keys of up to 4096 bits are made before READY=1: SoftHSM takes seconds for
        # each, many more on a loaded machine or under the sanitizers.
        harness.READY_TIMEOUT = 240.0
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def alg(self, name):
        return self.ISSUERS[name][0]

    def bits(self, name):
        alg, bits = self.ISSUERS[name]
        return (bits or 2048) if ALGS[alg]["kty"] == "RSA" else None

    def sig_len(self, name):
        return ALGS[self.alg(name)]["sig"] or self.bits(name) // 8

    def jwks_text(self, name):
        r = self.d.http("GET", "/%s/.well-known/jwks.json" % name)
        self.assertEqual(r.status, 200, r)
        return r.body.decode("utf-8")

    def test_startup_log_names_each_plan(self):
        log = self.d.log()
        for name, (alg, bits) in self.ISSUERS.items():
            with self.subTest(issuer=name):
                self.assertRegex(log, plan_line(name, alg, PLANS[alg], self.bits(name),
                                                self_check=ALGS[alg]["kty"] == "RSA"))

    def test_sign_header_size_and_signature(self):
        for name in self.ISSUERS:
            alg = self.alg(name)
            for typ in ("JWT", "at+jwt"):
                with self.subTest(issuer=name, typ=typ):
                    body = self.assertSigned(self.d.sign(name, dict(CLAIMS), typ=typ))
                    self.assertEqual(body["alg"], alg)
                    h64, p64, s64 = body["token"].split(".")
                    # Exactly these bytes: members, order and no whitespace (jws.c).
                    self.assertEqual(b64d(h64).decode("utf-8"), json.dumps(
                        {"alg": alg, "kid": body["kid"], "typ": typ}, separators=(",", ":")))
                    sig = b64d(s64)
                    self.assertEqual(len(sig), self.sig_len(name), "%s signature size" % alg)
                    keys = [k for k in self.d.jwks(name)["keys"] if k["kid"] == body["kid"]]
                    self.assertEqual(len(keys), 1, "the signing kid is published once")
                    self.assertTrue(verify_signature(alg, public_key(keys[0]),
                                                     (h64 + "." + p64).encode("ascii"), sig),
                                    "python3-cryptography: the signature does not verify")
                    # And a JOSE library, with the key it builds from the JWK itself.
                    claims = jwt.decode(body["token"], jwt.PyJWK(keys[0]).key, algorithms=[alg],
                                        audience=AUD, issuer=self.d.issuers[name]["iss"])
                    self.assertEqual(claims["sub"], CLAIMS["sub"])
                    # A signature over other bytes must not verify (the check is not vacuous).
                    self.assertFalse(verify_signature(alg, public_key(keys[0]),
                                                      (h64 + "." + p64 + "x").encode(), sig))

    def test_jwk_members_and_values(self):
        for name in self.ISSUERS:
            alg = self.alg(name)
            kty = ALGS[alg]["kty"]
            with self.subTest(issuer=name):
                text = self.jwks_text(name)
                self.assertEqual(list(json.loads(text)), ["keys"])
                keys = json.loads(text)["keys"]
                self.assertEqual(len(keys), harness.KEYS_AT_START)
                members = ordered_members(text)
                self.assertEqual(len(members), len(keys))
                for names, jwk in zip(members, keys):
                    self.assertEqual(names, JWK_MEMBERS[kty], "members of %r" % jwk)
                    self.assertEqual((jwk["kty"], jwk["alg"], jwk["use"]), (kty, alg, "sig"))
                    if kty == "RSA":
                        n, e = b64d(jwk["n"]), b64d(jwk["e"])
                        self.assertEqual(len(n), self.bits(name) // 8, "modulus octets")
                        self.assertNotEqual(n[0], 0, "n has a leading zero octet")
                        self.assertEqual(int.from_bytes(n, "big").bit_length(), self.bits(name))
                        self.assertEqual(jwk["e"], "AQAB", "e = 65537, minimal")
                        self.assertEqual(public_key(jwk).key_size, self.bits(name))
                    else:
                        self.assertEqual(jwk["crv"], ALGS[alg]["crv"])
                        for c in ("x", "y") if kty == "EC" else ("x",):
                            self.assertEqual(len(b64d(jwk[c])), ALGS[alg]["coord"], c)
                        public_key(jwk)  # raises unless the point is on the curve
                # The sign socket serves the same bytes.
                r = self.d.unix_request("GET", "/v1/issuers/%s/jwks" % name)
                self.assertEqual((r.status, r.body.decode("utf-8")), (200, text))

    def test_kid_is_rfc7638_thumbprint(self):
        """Each kid of the live JWKS, against three computations: one written out here per key
        type, harness.jwk_thumbprint, and jwcrypto's JWK.thumbprint() of the key as
        python3-cryptography loaded it (so not even the JWK's text is shared)."""
        seen = set()
        for name in self.ISSUERS:
            for jwk in self.d.jwks(name)["keys"]:
                with self.subTest(issuer=name, kid=jwk["kid"]):
                    self.assertEqual(len(jwk["kid"]), 43)
                    self.assertEqual(jwk["kid"], own_thumbprint(jwk))
                    self.assertEqual(jwk["kid"], harness.jwk_thumbprint(jwk))
                    self.assertEqual(jwk["kid"], jjwk.JWK.from_pyca(public_key(jwk)).thumbprint())
                    self.assertEqual(jwk["kid"], jjwk.JWK(**jwk).thumbprint())
                    self.assertNotIn(jwk["kid"], seen, "the same kid twice")
                    seen.add(jwk["kid"])
        self.assertEqual(len(seen), harness.KEYS_AT_START * len(self.ISSUERS))

    def test_discovery_lists_the_algorithm(self):
        for name in self.ISSUERS:
            with self.subTest(issuer=name):
                r = self.d.http("GET", "/%s/.well-known/openid-configuration" % name)
                self.assertEqual(r.status, 200, r)
                doc = r.json()
                self.assertEqual(doc["issuer"], self.d.issuers[name]["iss"])
                self.assertEqual(doc["jwks_uri"], self.d.jwks_uri(name))
                self.assertEqual(doc["id_token_signing_alg_values_supported"], [self.alg(name)])

    def test_keys_in_token_have_the_algorithms_type(self):
        """The token's key objects per issuer: the key type each algorithm needs (CKK_EC 3,
        CKK_RSA 0, CKK_EC_EDWARDS 0x40), and the JWKS holds no key of another issuer."""
        want = {"EC": 3, "RSA": 0, "OKP": 0x40}
        objs = self.d.probe()
        for name in self.ISSUERS:
            kids = {k["kid"] for k in self.d.jwks(name)["keys"]}
            for other in self.ISSUERS:
                if other != name:
                    self.assertFalse(kids & {k["kid"] for k in self.d.jwks(other)["keys"]})
        types = {o.get("key_type") for o in objs if o.get("class") in ("private_key", "public_key")}
        self.assertTrue(types, "p11probe shows no key objects: %r" % objs[:3])
        for kty, kt in want.items():
            self.assertIn(kt, types, "no %s key (key_type %#x) in the token" % (kty, kt))


    def test_z_restart_finds_every_key(self):
        """Runs last (it restarts the shared daemon): every algorithm's keys are found again in
        the token (hsm_find_key, CKA_EC_POINT / CKA_MODULUS read back), none is made anew, the
        JWKS are byte for byte the same and each issuer still signs."""
        before = {name: self.jwks_text(name) for name in self.ISSUERS}
        generated = self.d.log().count("event=generated")
        start = len(self.d.log())
        self.d.restart()
        self.assertEqual(self.d.log()[start:].count("event=generated"), 0,
                         "keys were made at restart:\n" + self.d.log()[start:])
        self.assertEqual(self.d.log().count("event=generated"), generated)
        for name in self.ISSUERS:
            with self.subTest(issuer=name):
                self.assertEqual(self.jwks_text(name), before[name])
                body = self.assertSigned(self.d.sign(name, dict(CLAIMS)))
                key = [k for k in self.d.jwks(name)["keys"] if k["kid"] == body["kid"]][0]
                h, p, s = body["token"].split(".")
                self.assertTrue(verify_signature(self.alg(name), public_key(key),
                                                 (h + "." + p).encode(), b64d(s)))


# ---------------------------------------------------------------------------------------------

class RsaKeySize(harness.TestCase):
    """SPEC §3: RSA below 2048 bits is a configuration error naming file, line and reason."""

    def conf_with(self, alg, bits):
        """(config text, line number of key-size) for a daemon with one issuer of alg."""
        d = harness.Daemon(issuers={"weak": {"algorithm": alg, "key-size": str(bits)}})
        self.addCleanup(d.close)
        text = d.config_text()
        line = text.split("\n").index("key-size = %s" % bits) + 1
        return d, text, line

    def assertNamesLine(self, text, line, words):
        found = [m for m in re.finditer(r"tokensignd\.conf:(\d+): (.*)", text)
                 if int(m.group(1)) == line and all(w in m.group(2) for w in words)]
        self.assertTrue(found, "no 'tokensignd.conf:%d: ...%s...' in:\n%s" % (line, words, text))

    def test_check_config_refuses_rsa_below_2048(self):
        for alg in ("RS256", "PS256"):
            for bits in (1024, 2047, 512):
                with self.subTest(alg=alg, bits=bits):
                    _, text, line = self.conf_with(alg, bits)
                    rc, err = harness.check_config(text)
                    self.assertEqual(rc, 1, err)
                    self.assertNamesLine(err, line, ["key-size", str(bits), "2048"])

    def test_check_config_accepts_2048_3072_4096(self):
        for alg in ("RS256", "PS256"):
            for bits in (2048, 3072, 4096):
                with self.subTest(alg=alg, bits=bits):
                    _, text, _ = self.conf_with(alg, bits)
                    rc, err = harness.check_config(text)
                    self.assertEqual(rc, 0, err)

    def test_key_size_other_than_rsa_sizes_refused(self):
        for bits in (2049, 8192, "2k"):
            with self.subTest(bits=bits):
                _, text, line = self.conf_with("RS256", bits)
                rc, err = harness.check_config(text)
                self.assertEqual(rc, 1, err)
                self.assertNamesLine(err, line, ["key-size"])

    def test_daemon_refuses_rsa_below_2048(self):
        for bits in (1024, 2047):
            with self.subTest(bits=bits):
                d, _, line = self.conf_with("RS256", bits)
                d.spawn()
                try:
                    rc = d.proc.wait(EXIT_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.fail("the daemon did not exit with key-size %d:\n%s" % (bits, d.log()))
                d.stop()
                self.assertNotEqual(rc, 0, d.log())
                self.assertNamesLine(d.log(), line, ["key-size", str(bits), "2048"])
                self.assertFalse(os.path.exists(d.sign_socket), "socket made despite the error")
                self.assertEqual([o for o in d.probe() if o.get("class") != "data"], [],
                                 "a key was made despite the error")


# ---------------------------------------------------------------------------------------------

class MissingMechanism(harness.TestCase):
    """The token lacks a mechanism (p11shim HIDE): the daemon refuses at start an algorithm it
    cannot generate or sign, and falls back from a combined RSA mechanism to the raw one."""

    def refused(self, issuers, faults):
        """Starts a shim daemon that must refuse to start; returns its log."""
        d = shim_daemon(issuers)
        self.addCleanup(d.close)
        d.provision()
        set_faults(d, *faults)
        d.spawn()
        try:
            rc = d.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            log = d.log()
            d.kill()
            self.fail("the daemon started on a token without the mechanism:\n" + log)
        d.stop()
        log = d.log()
        self.assertNotEqual(rc, 0, log)
        self.assertFalse(os.path.exists(d.sign_socket), "socket made despite the error:\n" + log)
        # Refused before any key or record was made: no half-configured token.
        self.assertEqual(token_objects(d), [], log)
        return log

    def assertRefusal(self, log, issuer, alg, words=()):
        lines = [ln for ln in log.splitlines()
                 if re.search(r"(error|<3>).*\bissuer %s\b" % re.escape(issuer), ln)
                 and alg in ln]
        self.assertTrue(lines, "no error line naming issuer %s and %s:\n%s" % (issuer, alg, log))
        for w in words:
            self.assertTrue(any(w in ln for ln in lines), "%r not in %r" % (w, lines))

    def test_eddsa_without_ckm_eddsa(self):
        log = self.refused({"main": {"algorithm": "ES256"}, "ed": {"algorithm": "EdDSA"}},
                           hide(CKM_EDDSA))
        self.assertRefusal(log, "ed", "EdDSA", ["sign"])

    def test_eddsa_without_key_generation(self):
        log = self.refused({"ed": {"algorithm": "EdDSA"}}, hide(CKM_EC_EDWARDS_KEY_PAIR_GEN))
        self.assertRefusal(log, "ed", "EdDSA", ["generate"])

    def test_rs256_without_any_pkcs1_mechanism(self):
        log = self.refused({"rs": {"algorithm": "RS256"}},
                           hide(CKM_SHA256_RSA_PKCS, CKM_RSA_PKCS))
        self.assertRefusal(log, "rs", "RS256", ["sign"])

    def test_ps256_without_any_pss_mechanism(self):
        log = self.refused({"ps": {"algorithm": "PS256"}},
                           hide(CKM_SHA256_RSA_PKCS_PSS, CKM_RSA_PKCS_PSS))
        self.assertRefusal(log, "ps", "PS256", ["sign"])

    def test_rsa_without_key_generation(self):
        log = self.refused({"rs": {"algorithm": "RS256", "key-size": "3072"}},
                           hide(CKM_RSA_PKCS_KEY_PAIR_GEN))
        self.assertRefusal(log, "rs", "RS256", ["generate"])

    def test_raw_rsa_fallbacks_sign_tokens_that_verify(self):
        """Without CKM_SHA256_RSA_PKCS and CKM_SHA256_RSA_PKCS_PSS (hidden, and refused by
        C_SignInit should the daemon try them), RS256 goes through CKM_RSA_PKCS over a DigestInfo
        and PS256 through CKM_RSA_PKCS_PSS over a digest, both made in the daemon."""
        d = shim_daemon({"rs": {"algorithm": "RS256"}, "ps": {"algorithm": "PS256"}})
        self.addCleanup(d.close)
        d.provision()
        set_faults(d, *hide(CKM_SHA256_RSA_PKCS, CKM_SHA256_RSA_PKCS_PSS))
        d.start()
        log = d.log()
        self.assertRegex(log, plan_line("rs", "RS256", RS256_FALLBACK, 2048, True))
        self.assertRegex(log, plan_line("ps", "PS256", PS256_FALLBACK, 2048, True))
        for name, alg in (("rs", "RS256"), ("ps", "PS256")):
            jwks = d.jwks(name)["keys"]
            for i in range(5):
                with self.subTest(issuer=name, i=i):
                    body = self.assertSigned(d.sign(name, dict(CLAIMS)))
                    key = [k for k in jwks if k["kid"] == body["kid"]][0]
                    claims = jwt.decode(body["token"], jwt.PyJWK(key).key, algorithms=[alg],
                                        audience=AUD, issuer=d.issuers[name]["iss"])
                    self.assertEqual(claims["sub"], CLAIMS["sub"])
                    h, p, s = body["token"].split(".")
                    self.assertTrue(verify_signature(alg, public_key(key),
                                                     (h + "." + p).encode(), b64d(s)))
        with open(d.shim_log) as f:
            calls = f.read().splitlines()
        self.assertNotIn("C_SignInit CKR_MECHANISM_INVALID", calls,
                         "the daemon tried a hidden mechanism")
        self.assertIn("C_SignInit CKR_OK", calls)

    def test_shim_hides_what_it_is_told(self):
        """The test tool itself: HIDE takes a mechanism out of C_GetMechanismList and makes its
        C_GetMechanismInfo CKR_MECHANISM_INVALID, for that mechanism only."""
        katsign = os.environ.get("KATSIGN")
        self.assertTrue(katsign, "KATSIGN is not set: add the katsign stanza to meson")
        d = shim_daemon({"main": {"algorithm": "ES256"}})
        self.addCleanup(d.close)
        d.provision()

        def mechanisms():
            p = subprocess.run([katsign, "mechanisms", d.module, d.token_label, d.pin_file,
                                hex(CKM_SHA256_RSA_PKCS), hex(CKM_RSA_PKCS), hex(CKM_EDDSA)],
                               env=d.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            return json.loads(p.stdout)
        before = mechanisms()
        for m in (CKM_SHA256_RSA_PKCS, CKM_RSA_PKCS, CKM_EDDSA):
            self.assertIn(hex(m), before["list"])
            self.assertEqual(before["info"][hex(m)], "0x0")
        set_faults(d, "C_GetMechanismList:CKM_SHA256_RSA_PKCS HIDE *",
                   "C_GetMechanismInfo:0x40 HIDE *", "C_GetMechanismList:4183 HIDE 2")
        after = mechanisms()
        self.assertNotIn(hex(CKM_SHA256_RSA_PKCS), after["list"])
        self.assertNotIn(hex(CKM_EDDSA), after["list"])
        self.assertEqual(after["info"][hex(CKM_SHA256_RSA_PKCS)], hex(CKR_MECHANISM_INVALID))
        self.assertEqual(after["info"][hex(CKM_RSA_PKCS)], "0x0")
        self.assertEqual(after["info"][hex(CKM_EDDSA)], "0x0")
        self.assertEqual(sorted(set(before["list"]) - set(after["list"])),
                         sorted([hex(CKM_SHA256_RSA_PKCS), hex(CKM_EDDSA)]))
        # katsign asked once, with a buffer: one count of the finite line is used.
        self.assertIn("C_GetMechanismList:4183 HIDE 1", read_faults(d))


# ---------------------------------------------------------------------------------------------

class SelfCheck(harness.TestCase):
    """A signature that does not verify with the key's public half is never answered (SPEC §4
    self-check): p11shim flips a bit of one C_Sign output."""

    CHECKED = {"rs256": "RS256", "ps256": "PS256", "es256-check": "ES256",
               "es384-check": "ES384", "eddsa-check": "EdDSA"}

    @classmethod
    def setUpClass(cls):
        issuers = {}
        for name, alg in cls.CHECKED.items():
            issuers[name] = {"algorithm": alg}
            if ALGS[alg]["kty"] != "RSA":
                issuers[name]["self-check"] = "yes"
        issuers["es256-plain"] = {"algorithm": "ES256"}
        issuers["rs256-off"] = {"algorithm": "RS256", "self-check": "no"}
        cls.d = shim_daemon(issuers)
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def tearDown(self):
        set_faults(self.d)

    def signs_and_verifies(self, name, ctx):
        body = self.assertSigned(self.d.sign(name, dict(CLAIMS)), ctx)
        key = [k for k in self.d.jwks(name)["keys"] if k["kid"] == body["kid"]][0]
        h, p, s = body["token"].split(".")
        self.assertTrue(verify_signature(self.d.issuers[name]["algorithm"], public_key(key),
                                         (h + "." + p).encode(), b64d(s)), ctx)
        return body

    def test_log_says_which_issuers_check(self):
        log = self.d.log()
        for name, alg in self.CHECKED.items():
            with self.subTest(issuer=name):
                self.assertRegex(log, plan_line(name, alg, PLANS[alg], 2048 if ALGS[alg]["kty"] ==
                                                "RSA" else None, True))
        self.assertRegex(log, plan_line("es256-plain", "ES256", PLANS["ES256"], None, False))
        self.assertRegex(log, plan_line("rs256-off", "RS256", PLANS["RS256"], 2048, False))

    def test_corrupt_signature_is_never_answered(self):
        for name, alg in self.CHECKED.items():
            with self.subTest(issuer=name):
                kid = self.signs_and_verifies(name, "before the fault")["kid"]
                start = len(self.d.log())
                set_faults(self.d, "C_Sign CORRUPT 1")
                r = self.d.sign(name, dict(CLAIMS))
                self.assertError(r, 503, "signature_check_failed")
                self.assertNotIn(b"eyJ", r.body, "a token in the error answer")
                self.assertRegex(read_faults(self.d), r"C_Sign CORRUPT 0",
                                 "the fault was not used: the test proves nothing")
                new = log_since(self.d, start)
                self.assertRegex(new, re.compile(r"^(?:tokensignd: crit: |<2>)issuer %s: key %s: "
                                                 r".*does not verify" % (re.escape(name),
                                                                         re.escape(kid)), re.M),
                                 "no critical log line")
                self.signs_and_verifies(name, "the request after")

    def test_without_self_check_the_corrupt_token_goes_out(self):
        """self-check = no (and the ES256 default) does not check: the corrupt signature is
        answered with 200 and does not verify. This is what the check is for, and shows that
        the fault really corrupts what the issuers above would have answered."""
        for name in ("rs256-off", "es256-plain"):
            with self.subTest(issuer=name):
                set_faults(self.d, "C_Sign CORRUPT 1")
                body = self.assertSigned(self.d.sign(name, dict(CLAIMS)))
                self.assertRegex(read_faults(self.d), r"C_Sign CORRUPT 0")
                key = [k for k in self.d.jwks(name)["keys"] if k["kid"] == body["kid"]][0]
                h, p, s = body["token"].split(".")
                self.assertFalse(verify_signature(self.d.issuers[name]["algorithm"],
                                                  public_key(key), (h + "." + p).encode(),
                                                  b64d(s)))
                self.signs_and_verifies(name, "the request after")

    def test_good_signatures_pass_the_check(self):
        for name in self.CHECKED:
            for i in range(10):
                with self.subTest(issuer=name, i=i):
                    self.signs_and_verifies(name, "signature %d" % i)


# ---------------------------------------------------------------------------------------------
# Known answers. RFC 7515 Appendix A.2: RS256 example key (a JWK), signing input and signature.
# RFC 8037 Appendix A.1 (key) and A.4 (signature). Typos are caught by the *_vector_is_right
# tests, which recompute them with python3-cryptography.

RFC7515_A2_KEY = {
    "kty": "RSA",
    "n": "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0"
         "Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXnd"
         "S5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5Ihl"
         "JH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
    "e": "AQAB",
    "d": "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2N"
         "XOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0"
         "M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl"
         "_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ",
    "p": "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py"
         "5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc",
    "q": "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQ"
         "eZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc",
    "dp": "BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKn"
          "u1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0",
    "dq": "h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0"
          "ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU",
    "qi": "IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5c"
          "Y7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U",
}
RFC7515_A2_INPUT = ("eyJhbGciOiJSUzI1NiJ9"
                    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb"
                    "290Ijp0cnVlfQ")
RFC7515_A2_SIG = (
    "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5"
    "jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1"
    "L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEU"
    "ipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw")

RFC8037_A1_KEY = {"kty": "OKP", "crv": "Ed25519",
                  "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
                  "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
RFC8037_A4_INPUT = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
RFC8037_A4_SIG = ("hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_"
                  "MuM0KAg")


def rsa_private(jwk):
    i = {k: int.from_bytes(b64d(jwk[k]), "big") for k in ("n", "e", "d", "p", "q", "dp", "dq",
                                                           "qi")}
    return rsa.RSAPrivateNumbers(i["p"], i["q"], i["d"], i["dp"], i["dq"], i["qi"],
                                 rsa.RSAPublicNumbers(i["e"], i["n"])).private_key()


def private_jwk(alg, key):
    """A private JWK of a python3-cryptography key, for katsign."""
    if alg in ("RS256", "PS256"):
        n = key.private_numbers()
        def enc(v):
            return b64e(v.to_bytes((v.bit_length() + 7) // 8, "big"))
        return {"kty": "RSA", "n": enc(n.public_numbers.n), "e": enc(n.public_numbers.e),
                "d": enc(n.d), "p": enc(n.p), "q": enc(n.q), "dp": enc(n.dmp1),
                "dq": enc(n.dmq1), "qi": enc(n.iqmp)}
    size = ALGS[alg]["coord"]
    pn = key.public_key().public_numbers()
    return {"kty": "EC", "crv": ALGS[alg]["crv"], "x": b64e(pn.x.to_bytes(size, "big")),
            "y": b64e(pn.y.to_bytes(size, "big")),
            "d": b64e(key.private_numbers().private_value.to_bytes(size, "big"))}


class KnownAnswers(harness.TestCase):
    """katsign: the daemon's hsm_prepare_alg() + hsm_sign() on an imported key."""

    @classmethod
    def setUpClass(cls):
        cls.katsign_path = os.environ.get("KATSIGN")
        cls.token = harness.Daemon()  # never started: a provisioned throwaway token
        cls.token.provision()
        cls.tmp = tempfile.mkdtemp(prefix="tokensign-kat-")

    @classmethod
    def tearDownClass(cls):
        cls.token.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def katsign(self, alg, jwk, signing_input, count=1, hidden=()):
        """[(plan, signature bytes)] from katsign; hidden: mechanisms p11shim hides."""
        self.assertTrue(self.katsign_path, "KATSIGN is not set: add the katsign stanza to meson")
        t = self.token
        path = os.path.join(self.tmp, "key.json")
        with open(path, "w") as f:
            json.dump(jwk, f)
        module, env = t.module, dict(t.env)
        if hidden:
            module = os.environ["P11SHIM"]
            faults = os.path.join(self.tmp, "faults")
            with open(faults, "w") as f:
                f.write("".join(line + "\n" for line in hide(*hidden)))
            env.update(P11SHIM_MODULE=os.environ["SOFTHSM_MODULE"], P11SHIM_FAULTS=faults)
        p = subprocess.run([self.katsign_path, module, t.token_label, t.pin_file, alg, path,
                            signing_input, str(count)], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=120)
        os.unlink(path)
        self.assertEqual(p.returncode, 0, "katsign failed: %s%s" % (p.stdout, p.stderr))
        out = [json.loads(line) for line in p.stdout.splitlines()]
        self.assertEqual(len(out), count, p.stdout)
        return [(o["plan"], b64d(o["sig"])) for o in out]

    # -- the vectors themselves --

    def test_rfc7515_a2_vector_is_right(self):
        k = RFC7515_A2_KEY
        i = {m: int.from_bytes(b64d(k[m]), "big") for m in k if m != "kty"}
        self.assertEqual(i["p"] * i["q"], i["n"])
        self.assertEqual(i["d"] % (i["p"] - 1), i["dp"])
        self.assertEqual(i["d"] % (i["q"] - 1), i["dq"])
        self.assertEqual(i["qi"] * i["q"] % i["p"], 1)
        self.assertEqual(pow(pow(42, i["e"], i["n"]), i["d"], i["n"]), 42)
        self.assertEqual(i["n"].bit_length(), 2048)
        header, payload = RFC7515_A2_INPUT.split(".")
        self.assertEqual(json.loads(b64d(header)), {"alg": "RS256"})
        self.assertEqual(json.loads(b64d(payload))["iss"], "joe")
        sig = rsa_private(k).sign(RFC7515_A2_INPUT.encode(), padding.PKCS1v15(), hashes.SHA256())
        self.assertEqual(b64e(sig), RFC7515_A2_SIG)

    def test_rfc8037_vector_is_right(self):
        key = ed25519.Ed25519PrivateKey.from_private_bytes(b64d(RFC8037_A1_KEY["d"]))
        pub = public_key(RFC8037_A1_KEY)
        self.assertEqual(b64e(key.public_key().public_bytes(serialization.Encoding.Raw,
                                                            serialization.PublicFormat.Raw)),
                         RFC8037_A1_KEY["x"])
        self.assertEqual(b64e(key.sign(RFC8037_A4_INPUT.encode())), RFC8037_A4_SIG)
        pub.verify(b64d(RFC8037_A4_SIG), RFC8037_A4_INPUT.encode())

    # -- the daemon's signing code --

    def test_rs256_rfc7515_a2(self):
        out = self.katsign("RS256", RFC7515_A2_KEY, RFC7515_A2_INPUT, count=2)
        for plan, sig in out:
            self.assertEqual(plan, PLANS["RS256"])
            self.assertEqual(b64e(sig), RFC7515_A2_SIG)

    def test_rs256_rfc7515_a2_via_raw_rsa_and_digest_info(self):
        [(plan, sig)] = self.katsign("RS256", RFC7515_A2_KEY, RFC7515_A2_INPUT,
                                     hidden=[CKM_SHA256_RSA_PKCS])
        self.assertEqual(plan, RS256_FALLBACK)
        self.assertEqual(b64e(sig), RFC7515_A2_SIG)

    def test_eddsa_rfc8037_a4(self):
        out = self.katsign("EdDSA", RFC8037_A1_KEY, RFC8037_A4_INPUT, count=2)
        for plan, sig in out:
            self.assertEqual(plan, PLANS["EdDSA"])
            self.assertEqual(b64e(sig), RFC8037_A4_SIG)

    def check_randomised(self, alg, key, hidden=(), plan=None):
        data = "eyJhbGciOiJ4In0.%s" % b64e(os.urandom(24))
        out = self.katsign(alg, private_jwk(alg, key), data, count=3, hidden=hidden)
        sigs = [sig for _, sig in out]
        for got_plan, sig in out:
            self.assertEqual(got_plan, plan or PLANS[alg])
            self.assertEqual(len(sig), ALGS[alg]["sig"] or key.key_size // 8)
            self.assertTrue(verify_signature(alg, key.public_key(), data.encode(), sig),
                            "%s signature does not verify" % alg)
            self.assertFalse(verify_signature(alg, key.public_key(), data.encode() + b"x", sig))
        self.assertEqual(len(set(sigs)), 3, "%s signatures repeat: no fresh randomness" % alg)

    def test_es256_verifies(self):
        self.check_randomised("ES256", ec.generate_private_key(ec.SECP256R1()))

    def test_es384_verifies(self):
        self.check_randomised("ES384", ec.generate_private_key(ec.SECP384R1()))

    def test_ps256_verifies(self):
        self.check_randomised("PS256", rsa.generate_private_key(65537, 2048))

    def test_ps256_verifies_via_raw_pss(self):
        self.check_randomised("PS256", rsa.generate_private_key(65537, 2048),
                              hidden=[CKM_SHA256_RSA_PKCS_PSS], plan=PS256_FALLBACK)


if __name__ == "__main__":
    harness.main()
