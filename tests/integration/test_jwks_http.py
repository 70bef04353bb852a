#!/usr/bin/python3
"""The public JWKS listener (SPEC §5, docs/api.md "The public JWKS"): caching headers, strong
ETag and If-None-Match, HEAD, 405, 404, and the exact shape of each JWK."""

import json

import harness

JWKS = "/main/.well-known/jwks.json"
DISCOVERY = "/main/.well-known/openid-configuration"
EC_MEMBERS = ["kid", "kty", "alg", "use", "crv", "x", "y"]


def ordered(body):
    return json.loads(body.decode("utf-8"), object_pairs_hook=lambda pairs: pairs)


class JwksHttpTest(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = harness.Daemon(jwks_max_age="5m")
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def tearDown(self):
        self.assertStillSigns(self.d)

    def get(self, path=JWKS, **headers):
        return self.d.http("GET", path, headers=headers or None)

    def etag(self, path=JWKS):
        r = self.get(path)
        self.assertEqual(r.status, 200, r)
        return r.headers["etag"]

    def test_get(self):
        r = self.get()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get("content-type", "").split(";")[0].strip(),
                         "application/json")
        self.assertEqual(r.headers.get("cache-control"), "public, max-age=300")
        if "content-length" in r.headers:
            self.assertEqual(int(r.headers["content-length"]), len(r.body))
        doc = r.json()
        self.assertEqual(list(doc), ["keys"])
        self.assertEqual(len(doc["keys"]), harness.KEYS_AT_START)
        # deterministic: the same bytes every time
        self.assertEqual(self.get().body, r.body)

    def test_etag_strong(self):
        for path in (JWKS, DISCOVERY):
            e = self.etag(path)
            self.assertFalse(e.startswith("W/"), "weak ETag: " + e)
            self.assertRegex(e, r'^"[\x21\x23-\x7e]+"$', "quoted entity-tag (RFC 9110 §8.8.3)")
            self.assertEqual(self.etag(path), e, "stable")
        self.assertNotEqual(self.etag(JWKS), self.etag(DISCOVERY))

    def test_if_none_match(self):
        e = self.etag()
        for inm in (e, "*", '"a", ' + e, e + ', "b"', '"a",%s' % e):
            r = self.get(**{"If-None-Match": inm})
            self.assertEqual(r.status, 304, "If-None-Match %s: %r" % (inm, r))
            self.assertEqual(r.body, b"", "304 has no body")
            self.assertEqual(r.headers.get("etag"), e)
            self.assertEqual(r.headers.get("cache-control"), "public, max-age=300")
        for inm in ('"nope"', '"a", "b"', e[:-2] + '"', e.strip('"'), '"' + e + '"',
                    e[:-1] + 'x"'):
            r = self.get(**{"If-None-Match": inm})
            self.assertEqual(r.status, 200, "If-None-Match %s: %r" % (inm, r))
            self.assertTrue(r.json()["keys"])
            self.assertEqual(r.headers.get("etag"), e)

    def test_if_none_match_discovery(self):
        e = self.etag(DISCOVERY)
        r = self.get(DISCOVERY, **{"If-None-Match": e})
        self.assertEqual(r.status, 304, r)
        self.assertEqual(r.body, b"")
        r = self.get(DISCOVERY, **{"If-None-Match": self.etag(JWKS)})
        self.assertEqual(r.status, 200, "the JWKS ETag is not the discovery ETag: %r" % r)

    def test_head(self):
        g = self.get()
        for path in (JWKS, DISCOVERY):
            h = self.d.http("HEAD", path)
            self.assertEqual(h.status, 200, h)
            self.assertEqual(h.body, b"", "HEAD has no body")
            self.assertEqual(h.headers.get("etag"), self.etag(path))
            self.assertEqual(h.headers.get("cache-control"), "public, max-age=300")
            self.assertEqual(h.headers.get("content-type", "").split(";")[0].strip(),
                             "application/json")
        h = self.d.http("HEAD", JWKS)
        if "content-length" in h.headers:
            self.assertEqual(int(h.headers["content-length"]), len(g.body))
        h = self.d.http("HEAD", JWKS, headers={"If-None-Match": g.headers["etag"]})
        self.assertEqual(h.status, 304, h)

    def test_other_methods(self):
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            for path in (JWKS, DISCOVERY):
                r = self.d.http(method, path, body=b"{}" if method in ("POST", "PUT", "PATCH")
                                else None)
                self.assertEqual(r.status, 405, "%s %s: %r" % (method, path, r))
                allow = [m.strip() for m in r.headers.get("allow", "").split(",")]
                self.assertEqual(sorted(allow), ["GET", "HEAD"], r)

    def test_unknown(self):
        for path in ("/nope/.well-known/jwks.json", "/nope/.well-known/openid-configuration",
                     "/", "/main", "/main/", "/main/.well-known/", "/main/.well-known/jwks",
                     "/main/.well-known/jwks.json/x", "/.well-known/jwks.json",
                     "/v1/issuers/main/jwks", "/MAIN/.well-known/jwks.json",
                     "/main/.well-known/jwks.json.bak"):
            r = self.get(path)
            self.assertEqual(r.status, 404, "%s: %r" % (path, r))
            self.assertNotIn(b'"keys"', r.body)

    def test_header_memory_limit(self):
        # Request line and headers share the connection's 8 KiB (docs/api.md).
        self.assertEqual(self.get(**{"X-Pad": "x" * 6000}).status, 200)
        self.assertEqual(self.get(**{"X-Pad": "x" * 16000}).status, 431)
        self.assertEqual(self.get().status, 200)

    def test_jwk_members(self):
        doc = ordered(self.get().body)
        self.assertEqual([k for k, _ in doc], ["keys"])
        keys = doc[0][1]
        self.assertEqual(len(keys), harness.KEYS_AT_START)
        for pairs in keys:
            self.assertEqual([k for k, _ in pairs], EC_MEMBERS, "members and their order")
            jwk = dict(pairs)
            self.assertEqual(jwk["kty"], "EC")
            self.assertEqual(jwk["crv"], "P-256")
            self.assertEqual(jwk["alg"], "ES256")
            self.assertEqual(jwk["use"], "sig")
            self.assertEqual(len(harness.b64url_decode(jwk["x"])), 32)
            self.assertEqual(len(harness.b64url_decode(jwk["y"])), 32)
            self.assertRegex(jwk["kid"], r"^[A-Za-z0-9_-]{43}$")
            self.assertEqual(jwk["kid"], harness.jwk_thumbprint(jwk), "RFC 7638 thumbprint")
            # the point lies on P-256 (cryptography refuses points off the curve)
            from cryptography.hazmat.primitives.asymmetric import ec
            ec.EllipticCurvePublicNumbers(int.from_bytes(harness.b64url_decode(jwk["x"]), "big"),
                                          int.from_bytes(harness.b64url_decode(jwk["y"]), "big"),
                                          ec.SECP256R1()).public_key()
        self.assertNotRegex(self.get().body.decode(), r'"(d|p|q|dp|dq|qi|k)"\s*:',
                            "private members")

    def test_thumbprint_reference_vector(self):
        # our thumbprint helper against RFC 7638 §3.1's example, so the check above means what
        # it says
        jwk = {"kty": "RSA", "e": "AQAB", "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSo"
            "c_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65Y"
            "GjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrd"
            "kt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKn"
            "qDKgw")}
        self.assertEqual(harness.jwk_thumbprint(jwk), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")

    def test_discovery_headers(self):
        r = self.get(DISCOVERY)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get("cache-control"), "public, max-age=300")
        doc = r.json()
        self.assertEqual(doc["issuer"], harness.DEFAULT_ISSUER["iss"])
        self.assertEqual(doc["jwks_uri"], "https://login.example.test/main/.well-known/jwks.json")
        self.assertEqual(doc["jwks_uri"], self.d.jwks_uri("main"))
        self.assertEqual(doc["id_token_signing_alg_values_supported"], ["ES256"])

    def test_many_connections(self):
        e = self.etag()
        for _ in range(100):
            r = self.get(**{"If-None-Match": e})
            self.assertEqual(r.status, 304, r)


class MaxAgeTest(harness.TestCase):
    def check(self, max_age, seconds, extra_issuer=None):
        ic = dict(harness.DEFAULT_ISSUER)
        ic.update(extra_issuer or {})
        with harness.Daemon(issuers={"main": ic}, jwks_max_age=max_age) as d:
            for path in (JWKS, DISCOVERY):
                r = d.http("GET", path)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.headers.get("cache-control"), "public, max-age=%d" % seconds)
                r = d.http("GET", path, headers={"If-None-Match": r.headers["etag"]})
                self.assertEqual(r.status, 304, r)
                self.assertEqual(r.headers.get("cache-control"), "public, max-age=%d" % seconds)
            self.assertStillSigns(d)

    def test_7m(self):
        self.check("7m", 420, {"prepublish": "7m", "rotation-period": "1h"})

    def test_90s(self):
        self.check("90s", 90, {"prepublish": "2h", "rotation-period": "1d"})


if __name__ == "__main__":
    harness.main()
