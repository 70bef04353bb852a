#!/usr/bin/python3
"""Two issuers in one daemon (SPEC §5: one issuer's JWKS never holds another issuer's key)."""

import json
import urllib.parse

import jwt

import harness

ISSUERS = {
    "a": {"iss": "https://a.example.test", "audiences": "api://a", "allow": "*"},
    "b": {"iss": "https://b.example.test/tenant", "audiences": "api://b", "allow": "*"},
}


class TwoIssuersTest(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = harness.Daemon(issuers=ISSUERS)
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def tearDown(self):
        self.assertStillSigns(self.d, "a", {"aud": "api://a"})
        self.assertStillSigns(self.d, "b", {"aud": "api://b"})

    def sign(self, name):
        return self.assertSigned(self.d.sign(name, {"aud": "api://" + name, "sub": "s"}))

    def test_each_jwks_holds_only_its_keys(self):
        ja, jb = self.d.jwks("a"), self.d.jwks("b")
        kids_a = {k["kid"] for k in ja["keys"]}
        kids_b = {k["kid"] for k in jb["keys"]}
        self.assertEqual(len(ja["keys"]), harness.KEYS_AT_START, ja)
        self.assertEqual(len(jb["keys"]), harness.KEYS_AT_START, jb)
        self.assertFalse(kids_a & kids_b, "a kid in both JWKS")
        ta, tb = self.sign("a"), self.sign("b")
        self.assertIn(ta["kid"], kids_a)
        self.assertNotIn(ta["kid"], kids_b)
        self.assertIn(tb["kid"], kids_b)
        self.assertNotIn(tb["kid"], kids_a)
        self.assertNotEqual(ta["kid"], tb["kid"])
        # no key material is shared either (not only the kid)
        xs_a = {(k["x"], k["y"]) for k in ja["keys"]}
        xs_b = {(k["x"], k["y"]) for k in jb["keys"]}
        self.assertFalse(xs_a & xs_b)

    def test_iss_per_issuer(self):
        for name in ("a", "b"):
            p = json.loads(harness.split_jws(self.sign(name)["token"])[1])
            self.assertEqual(p["iss"], ISSUERS[name]["iss"])
        # a's iss is refused by b, and a's audience by b
        r = self.d.sign("b", {"aud": "api://b", "iss": ISSUERS["a"]["iss"]})
        self.assertError(r, 400, "iss_mismatch")
        r = self.d.sign("b", {"aud": "api://a"})
        self.assertError(r, 400, "aud_not_allowed")

    def test_token_of_a_does_not_verify_with_b(self):
        ta = self.sign("a")["token"]
        # a's own JWKS verifies it
        ka = jwt.PyJWKClient(self.d.jwks_url("a"), cache_keys=False).get_signing_key_from_jwt(ta)
        jwt.decode(ta, ka.key, algorithms=["ES256"], audience="api://a",
                   issuer=ISSUERS["a"]["iss"])
        # b's JWKS has no key with that kid
        with self.assertRaises(jwt.PyJWKClientError):
            jwt.PyJWKClient(self.d.jwks_url("b"), cache_keys=False).get_signing_key_from_jwt(ta)
        # and no key of b verifies the signature, whatever the kid
        for k in self.d.jwks("b")["keys"]:
            key = jwt.PyJWK(k).key
            with self.assertRaises(jwt.InvalidSignatureError):
                jwt.decode(ta, key, algorithms=["ES256"], audience="api://a",
                           issuer=ISSUERS["a"]["iss"])
            self.assertFalse(harness.verify_es256(ta, k))

    def test_sign_socket_jwks_per_issuer(self):
        for name in ("a", "b"):
            r = self.d.unix_request("GET", "/v1/issuers/%s/jwks" % name)
            self.assertEqual(r.status, 200, r)
            pub = self.d.http("GET", "/%s/.well-known/jwks.json" % name)
            self.assertEqual(r.body, pub.body)
        self.assertNotEqual(self.d.http("GET", "/a/.well-known/jwks.json").body,
                            self.d.http("GET", "/b/.well-known/jwks.json").body)

    def test_discovery(self):
        for name in ("a", "b"):
            r = self.d.http("GET", "/%s/.well-known/openid-configuration" % name)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.headers.get("content-type", "").split(";")[0], "application/json")
            doc = r.json()
            self.assertEqual(doc["issuer"], ISSUERS[name]["iss"])
            # no public-url: the scheme and host of the issuer's iss (SPEC §3)
            self.assertEqual(doc["jwks_uri"], {
                "a": "https://a.example.test/a/.well-known/jwks.json",
                "b": "https://b.example.test/b/.well-known/jwks.json"}[name])
            self.assertEqual(doc["jwks_uri"], self.d.jwks_uri(name))
            self.assertEqual(doc["id_token_signing_alg_values_supported"], ["ES256"])
            # the path it names serves this issuer's JWKS
            self.assertEqual(self.d.http("GET", urllib.parse.urlsplit(doc["jwks_uri"]).path).body,
                             self.d.http("GET", "/%s/.well-known/jwks.json" % name).body)

    def test_discovery_ignores_the_host_header(self):
        """A hostile Host must not reach the document: it is cacheable, and a cache in front
        would serve the attacker's jwks_uri to every relying party."""
        plain = self.d.http("GET", "/b/.well-known/openid-configuration")
        self.assertEqual(plain.status, 200, plain)
        for host in ("evil.example", "keys.example.test:8443", "[::1]:8080", "evil.example/x",
                     "a\"b", "a b", "x<script>", "a@b", "h%2f"):
            with self.subTest(host=host):
                r = self.d.http("GET", "/b/.well-known/openid-configuration",
                                headers={"Host": host})
                self.assertEqual(r.status, 200, "Host %r: %r" % (host, r))
                self.assertEqual(r.json()["jwks_uri"],
                                 "https://b.example.test/b/.well-known/jwks.json")
                # the same bytes and ETag whatever the Host: nothing varies, so no Vary
                self.assertEqual(r.body, plain.body)
                self.assertEqual(r.headers.get("etag"), plain.headers.get("etag"))
                self.assertNotIn("vary", r.headers)
                self.assertNotIn(b"evil", r.body)

    def test_discovery_without_a_base(self):
        """An iss that is not an http(s) URL and no public-url: no jwks_uri to publish."""
        issuers = {"u": {"iss": "urn:example:issuer", "audiences": "api://u", "allow": "*"}}
        with harness.Daemon(issuers=issuers) as d:
            r = d.http("GET", "/u/.well-known/openid-configuration",
                       headers={"Host": "evil.example"})
            self.assertError(r, 404, "no_jwks_uri")
            self.assertEqual(d.http("GET", "/u/.well-known/jwks.json").status, 200)


class PublicUrlTest(harness.TestCase):
    def test_public_url(self):
        with harness.Daemon(issuers=ISSUERS, jwks_public_url="https://keys.example.com/") as d:
            for name in ("a", "b"):
                r = d.http("GET", "/%s/.well-known/openid-configuration" % name,
                           headers={"Host": "other.example"})
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json()["jwks_uri"],
                                 "https://keys.example.com/%s/.well-known/jwks.json" % name)
            self.assertStillSigns(d, "a", {"aud": "api://a"})


if __name__ == "__main__":
    harness.main()
