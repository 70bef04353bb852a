#!/usr/bin/python3
"""Every refusal of docs/api.md's rule table, over the real sign socket: the status AND the
`error` code, the order in which the rules apply, and that the daemon still signs afterwards."""

import json
import time

import harness

SIGN = "/v1/issuers/main/sign"
AUD = "api://orders"
HEADER_PARAMETERS = ["alg", "kid", "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "crit", "cty",
                     "enc", "zip", "b64", "header", "protected", "headers"]
MAX_BODY = 65536


def nested_object(levels):
    """An object of exactly `levels` nesting levels ({} is 1)."""
    v = {}
    for _ in range(levels - 1):
        v = {"n": v}
    return v


def nested_array(levels):
    v = []
    for _ in range(levels - 1):
        v = [v]
    return v


def body_of_depth(depth, inner=nested_object):
    """A valid sign body whose nesting depth, counting the body object as level 1, is exactly
    depth (>= 3): body(1) > claims(2) > claims.deep(3..depth)."""
    return {"claims": {"aud": AUD, "deep": inner(depth - 2)}}


def chunk(data, size=4000):
    """data in HTTP/1.1 chunked transfer coding."""
    out = b""
    for i in range(0, len(data), size):
        part = data[i:i + size]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"


def padded_body(size):
    """A valid sign body of exactly size bytes (a filler claim)."""
    base = json.dumps({"claims": {"aud": AUD, "pad": ""}}, separators=(",", ":")).encode()
    body = json.dumps({"claims": {"aud": AUD, "pad": "x" * (size - len(base))}},
                      separators=(",", ":")).encode()
    assert len(body) == size, (len(body), size)
    return body


class RefusalTest(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = harness.Daemon(issuers={
            "main": dict(harness.DEFAULT_ISSUER),
            # only root may sign here: used for the 403 precedence cases
            "rootonly": {"audiences": AUD, "allow": "uid:0"},
        }, sign_mode="0666")
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def tearDown(self):
        # after every group of refusals the daemon still signs a valid request
        self.assertStillSigns(self.d)

    # -- helpers --

    def post(self, body, ct="application/json", path=SIGN, **kw):
        headers = dict(kw.pop("headers", {}))
        headers.setdefault("Content-Type", ct)
        if isinstance(body, dict) or isinstance(body, list):
            body = json.dumps(body)
        return self.d.unix_request("POST", path, body, headers=headers, **kw)

    def refused(self, body, status, code, msg=None, **kw):
        r = self.post(body, **kw)
        return self.assertError(r, status, code, msg or repr(body)[:200])

    def claims(self, claims, status=400, code=None, typ=None, **kw):
        body = {"claims": claims}
        if typ is not None:
            body["typ"] = typ
        return self.refused(body, status, code, **kw)

    # -- routing: 404 not_found, 405, 404 unknown_issuer --

    def test_unknown_path(self):
        for path in ("/", "/v1", "/v1/issuers", "/v1/issuers/main", "/v1/issuers/main/signx",
                     "/v1/issuers/main/sign/extra", "/v2/issuers/main/sign", "/v1/issuer/main/sign",
                     "/healthz/x", "/main/.well-known/jwks.json"):
            for method in ("GET", "POST"):
                r = self.d.unix_request(method, path, {"claims": {"aud": AUD}})
                self.assertError(r, 404, "not_found", "%s %s" % (method, path))

    def test_method_not_allowed(self):
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            r = self.d.unix_request(method, SIGN, {"claims": {"aud": AUD}})
            self.assertError(r, 405, "method_not_allowed", method)
            self.assertIn("POST", r.headers.get("allow", ""), r)
        for path in ("/healthz", "/readyz", "/v1/issuers/main/jwks"):
            r = self.d.unix_request("POST", path, {"claims": {"aud": AUD}})
            self.assertError(r, 405, "method_not_allowed", path)
            self.assertIn("GET", r.headers.get("allow", ""), r)

    def test_unknown_issuer(self):
        for name in ("nope", "mainx", "ma", "rootonly-x", "a-b-c"):
            r = self.post({"claims": {"aud": AUD}}, path="/v1/issuers/%s/sign" % name)
            self.assertError(r, 404, "unknown_issuer", name)
        r = self.d.unix_request("GET", "/v1/issuers/nope/jwks")
        self.assertError(r, 404, "unknown_issuer", "jwks of unknown issuer")

    # -- 413 / 415 --

    def test_body_size_boundary(self):
        body = padded_body(MAX_BODY)
        a = self.assertSigned(self.post(body), "exactly 64 KiB is allowed")
        self.assertEqual(json.loads(harness.split_jws(a["token"])[1])["pad"],
                         json.loads(body)["claims"]["pad"])
        self.refused(padded_body(MAX_BODY + 1), 413, "body_too_large", "64 KiB + 1")
        self.refused(padded_body(MAX_BODY + 4096), 413, "body_too_large", "68 KiB")
        self.refused(padded_body(2 * 1024 * 1024), 413, "body_too_large", "2 MiB")

    def test_body_too_large_chunked(self):
        # no Content-Length: the limit must hold for what is actually received
        for size, ct in ((MAX_BODY + 1, "application/json"), (MAX_BODY + 1000, "application/json"),
                         (MAX_BODY + 1, "text/plain")):  # 413 before 415 here too
            r = self.d.unix_request("POST", SIGN, chunk(padded_body(size)), headers={
                "Content-Type": ct, "Transfer-Encoding": "chunked"})
            self.assertError(r, 413, "body_too_large", "chunked, %d bytes, %s" % (size, ct))
        # exactly 64 KiB in chunks is fine
        self.assertSigned(self.d.unix_request("POST", SIGN, chunk(padded_body(MAX_BODY)), headers={
            "Content-Type": "application/json", "Transfer-Encoding": "chunked"}))

    def test_small_chunked_body_accepted(self):
        data = json.dumps({"claims": {"aud": AUD, "c": "chunked"}}).encode()
        chunked = b"%x\r\n" % 10 + data[:10] + b"\r\n" + b"%x\r\n" % (len(data) - 10) + \
            data[10:] + b"\r\n0\r\n\r\n"
        r = self.d.unix_request("POST", SIGN, chunked, headers={
            "Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        a = self.assertSigned(r)
        self.assertEqual(json.loads(harness.split_jws(a["token"])[1])["c"], "chunked")

    def test_content_type(self):
        body = json.dumps({"claims": {"aud": AUD}})
        for ct in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx",
                   "application/json-patch+json", "application/jwt", "json", ""):
            r = self.d.unix_request("POST", SIGN, body, headers={"Content-Type": ct})
            self.assertError(r, 415, "unsupported_media_type", repr(ct))
        r = self.d.unix_request("POST", SIGN, body)  # no Content-Type at all
        self.assertError(r, 415, "unsupported_media_type", "no Content-Type")

    # -- 400: parsing --

    def test_invalid_utf8(self):
        cases = [
            b'{"claims":{"aud":"api://orders","x":"\xff"}}',
            b'{"claims":{"aud":"api://orders","x":"\xc3"}}',          # truncated sequence
            b'{"claims":{"aud":"api://orders","x":"\xc0\xaf"}}',      # overlong '/'
            b'{"claims":{"aud":"api://orders","x":"\xed\xa0\x80"}}',  # UTF-8 encoded surrogate
            b'{"claims":{"aud":"api://orders","\xfe":"x"}}',          # in a member name
            b'{"claims":{"aud":"api://orders","x":"\\u0000"}}',       # escaped NUL in a value
            b'{"claims":{"aud":"api://orders","a\\u0000b":"x"}}',     # escaped NUL in a name
            b'{"claims":{"aud":"api://orders","x":"a\x00b"}}',        # raw NUL byte
        ]
        for body in cases:
            self.refused(body, 400, "invalid_utf8")

    def test_duplicate_members(self):
        cases = [
            b'{"claims":{"aud":"api://orders"},"claims":{"aud":"api://orders"}}',
            b'{"typ":"JWT","claims":{"aud":"api://orders"},"typ":"at+jwt"}',
            b'{"claims":{"aud":"api://orders","aud":"api://billing"}}',
            b'{"claims":{"aud":"api://orders","sub":"a","sub":"a"}}',
            b'{"claims":{"aud":"api://orders","x":{"y":{"z":1,"z":2}}}}',
            b'{"claims":{"aud":"api://orders","x":[1,{"k":1,"k":1}]}}',
            # the same name after JSON unescaping is the same member
            b'{"claims":{"aud":"api://orders","sub":"a","s\\u0075b":"b"}}',
        ]
        for body in cases:
            self.refused(body, 400, "duplicate_member")

    def test_depth(self):
        for inner in (nested_object, nested_array):
            self.assertSigned(self.post(body_of_depth(32, inner)),
                              "depth 32 (%s) is allowed" % inner.__name__)
            self.refused(body_of_depth(33, inner), 400, "too_deep", "depth 33 " + inner.__name__)
        # body itself counts as level 1: claims at level 2
        self.assertSigned(self.post(body_of_depth(3)))
        # a very deep body is refused, not a crash
        self.refused(b"{\"claims\":" + b"[" * 20000 + b"]" * 20000 + b"}", 400, "too_deep")
        self.refused(b"{\"claims\":" + b"[" * 20000, 400, "too_deep", "deep and truncated")
        # depth inside the typ member counts too
        self.refused(json.dumps({"claims": {"aud": AUD}, "typ": nested_array(32)}), 400,
                     "too_deep", "deep typ")

    def test_reals(self):
        """h15-cost: a request's tree is made in a per-thread arena, and a real is the one value
        whose text jansson makes for us (json_out): refused and signed bodies with reals, in
        the claims, in aud (which the audit record writes out) and in a batch's items."""
        for aud in (1.5, [1.5], ["api://orders", -2.5e-3]):
            self.claims({"aud": aud}, code="aud_invalid")
        self.claims({"aud": AUD, "exp": 1.5e9}, code="exp_invalid")
        self.claims({"aud": AUD, "nbf": 0.5}, code="nbf_invalid")
        self.assertSigned(self.post({"claims": {"aud": AUD, "f": 1.5, "g": [-0.25, {"h": 1e10}]}}))
        r = self.post({"requests": [{"claims": {"aud": 2.5}}, {"claims": {"aud": AUD, "f": 0.5}}]},
                      path=SIGN + "-batch")
        self.assertEqual(r.status, 200, r)
        results = r.json()["results"]
        self.assertEqual(results[0]["error"], "aud_invalid", results)
        self.assertIn("token", results[1], results)

    def test_invalid_json(self):
        for body in (b"", b"{", b'{"claims":', b'{"claims":{"aud":"api://orders"}',
                     b'{"claims":{"aud":"api://orders"}} x', b'{"claims":{"aud":"api://orders"}}}',
                     b"{'claims':{}}", b'{"claims":{"aud":"api://orders",}}',
                     b'{"claims":{"aud":api://orders}}', b'{"claims":{"aud":"api://orders","n":NaN}}',
                     b'{"claims":{"aud":"api://orders","n":01}}',
                     # numbers out of range
                     b'{"claims":{"aud":"api://orders","n":99999999999999999999999}}',
                     b'{"claims":{"aud":"api://orders","n":1e400}}'):
            self.refused(body, 400, "invalid_json")

    def test_body_not_object(self):
        for body in (b"[]", b'[{"claims":{"aud":"api://orders"}}]', b'"claims"', b"1", b"null",
                     b"true"):
            self.refused(body, 400, "body_not_object")

    # -- 400: body members --

    def test_header_parameters(self):
        for name in HEADER_PARAMETERS:
            for value in ("none", {"kty": "oct"}, ["crit"], None):
                body = {"claims": {"aud": AUD}, name: value}
                self.refused(body, 400, "header_parameter", name)

    def test_unknown_member(self):
        for body in ({"claims": {"aud": AUD}, "foo": 1},
                     {"claims": {"aud": AUD}, "Claims": {}},
                     {"claims": {"aud": AUD}, "TYP": "JWT"},
                     {"claims": {"aud": AUD}, "iss": "x"},
                     {"claims": {"aud": AUD}, "payload": {}}):
            self.refused(body, 400, "unknown_member")

    def test_claims_missing_or_not_object(self):
        self.refused({}, 400, "claims_missing")
        self.refused({"typ": "JWT"}, 400, "claims_missing")
        for claims in ([], [{"aud": AUD}], "x", 1, None, True):
            self.refused({"claims": claims}, 400, "claims_not_object", repr(claims))

    def test_typ(self):
        for typ in (1, None, True, ["JWT"], {"t": "JWT"}):
            self.refused({"claims": {"aud": AUD}, "typ": typ}, 400, "typ_invalid", repr(typ))
        for typ in ("JOSE", "jwt", "AT+JWT", "at+JWT", "", "JWT ", "secevent+jwt"):
            self.refused({"claims": {"aud": AUD}, "typ": typ}, 400, "typ_not_allowed", repr(typ))

    # -- 400: claims --

    def test_iss(self):
        for iss in ("https://evil.example/main", "https://login.example.test/main/",
                    "https://login.example.test/other", "", 1, None, ["x"]):
            self.claims({"aud": AUD, "iss": iss}, code="iss_mismatch", msg=repr(iss))

    def test_iat(self):
        now = int(time.time())
        for iat in (now, now - 100, "now", None):
            self.claims({"aud": AUD, "iat": iat}, code="iat_forbidden", msg=repr(iat))

    def test_aud(self):
        self.claims({"sub": "x"}, code="aud_missing")
        self.claims({}, code="aud_missing")
        for aud in ([], "", [""], 5, [5], ["api://orders", 5], {"a": "b"}, True, None,
                    ["api://orders", ""], [["api://orders"]]):
            self.claims({"aud": aud}, code="aud_invalid", msg=repr(aud))
        for aud in ("api://other", "API://orders", "api://orders ", ["api://other"],
                    ["api://orders", "api://other"], ["api://other", "api://billing"]):
            self.claims({"aud": aud}, code="aud_not_allowed", msg=repr(aud))

    def test_exp(self):
        now = int(time.time())
        for exp in ("1700000000", float(now + 600) + 0.5, True, None, [now + 600],
                    {"t": now + 600}):
            self.claims({"aud": AUD, "exp": exp}, code="exp_invalid", msg=repr(exp))
        for exp in (now - 10, now - 3600, 0, -1, now):
            self.claims({"aud": AUD, "exp": exp}, code="exp_in_past", msg=repr(exp))
        for exp in (now + 3600 + 60, now + 86400, 2 ** 62):
            self.claims({"aud": AUD, "exp": exp}, code="exp_too_far", msg=repr(exp))

    def test_nbf(self):
        now = int(time.time())
        for nbf in ("0", 1.5, True, None, [1]):
            self.claims({"aud": AUD, "nbf": nbf}, code="nbf_invalid", msg=repr(nbf))
        self.claims({"aud": AUD, "exp": now + 600, "nbf": now + 601}, code="nbf_after_exp")
        # against the default exp (now + token-ttl 15m)
        self.claims({"aud": AUD, "nbf": now + 3000}, code="nbf_after_exp")

    def test_jti(self):
        for jti in ("", "j" * 129, "\u00e9" * 129, 5, None, True, ["a"], {"a": "b"}):
            self.claims({"aud": AUD, "jti": jti}, code="jti_invalid", msg=repr(jti)[:40])
        # 1 to 128 *characters*: 128 two-byte characters are fine
        a = self.assertSigned(self.post({"claims": {"aud": AUD, "jti": "\u00e9" * 128}}),
                              "jti of 128 characters (256 UTF-8 bytes)")
        self.assertEqual(json.loads(harness.split_jws(a["token"])[1])["jti"], "\u00e9" * 128)

    # -- precedence (docs/api.md: the first rule in table order wins) --

    def test_precedence_routing(self):
        # unknown path beats method
        r = self.d.unix_request("DELETE", "/nope", b"x", headers={"Content-Type": "text/plain"})
        self.assertError(r, 404, "not_found")
        # 405 beats unknown issuer
        r = self.d.unix_request("GET", "/v1/issuers/nope/sign")
        self.assertError(r, 405, "method_not_allowed")
        # unknown issuer beats bad content type, oversize and bad JSON
        self.refused(b"{", 404, "unknown_issuer", path="/v1/issuers/nope/sign", ct="text/plain")
        self.refused(padded_body(MAX_BODY + 1), 404, "unknown_issuer",
                     path="/v1/issuers/nope/sign")
        self.refused(b"[", 404, "unknown_issuer", path="/v1/issuers/nope/sign")

    def test_precedence_forbidden_first(self):
        # a caller who may not use the issuer learns nothing about its policy
        nobody = {"as_uid": 65534}
        path = "/v1/issuers/rootonly/sign"
        self.refused(padded_body(MAX_BODY + 1), 403, "forbidden", "403 before 413", path=path,
                     **nobody)
        self.refused({"claims": {"aud": AUD}}, 403, "forbidden", "403 before 415", path=path,
                     ct="text/plain", **nobody)
        self.refused(b"{", 403, "forbidden", "403 before 400", path=path, **nobody)
        self.refused({"claims": {}}, 403, "forbidden", "403 before aud_missing", path=path,
                     **nobody)
        self.refused({"claims": {"aud": AUD}}, 403, "forbidden", "valid body", path=path,
                     **nobody)
        # root may: the same valid body signs
        self.assertSigned(self.post({"claims": {"aud": AUD}}, path=path))

    def test_precedence_size_type_body(self):
        self.refused(padded_body(MAX_BODY + 1), 413, "body_too_large", "413 before 415",
                     ct="text/plain")
        self.refused(b"\xff" * (MAX_BODY + 1), 413, "body_too_large", "413 before 400")
        self.refused(b"{", 415, "unsupported_media_type", "415 before 400", ct="text/plain")
        self.refused(b"\xff", 415, "unsupported_media_type", "415 before invalid_utf8",
                     ct="text/plain")

    def test_precedence_within_400(self):
        now = int(time.time())
        pairs = [
            # (body, winning code)
            (b'{"claims":{"aud":"\xff","aud":"x"}}', "invalid_utf8"),
            (b'{"claims":{"a":1,"a":2}', "duplicate_member"),     # and truncated
            (b'{"claims":{"a":1,"a":2,"d":' + b"[" * 40 + b"]" * 40 + b"}}", "duplicate_member"),
            # deep nesting before a duplicate: duplicate_member is checked first
            (b'{"claims":{"d":' + b"[" * 40 + b"]" * 40 + b',"a":1,"a":2}}', "duplicate_member"),
            (b'{"claims":{"d":' + b"[" * 40 + b"]" * 40 + b'},"foo":1}', "too_deep"),
            (json.dumps({"claims": {"aud": AUD}, "alg": "none", "foo": 1}), "header_parameter"),
            (json.dumps({"foo": 1, "alg": "none"}), "header_parameter"),
            (json.dumps({"foo": 1}), "unknown_member"),
            (json.dumps({"claims": [], "foo": 1}), "unknown_member"),
            (json.dumps({"typ": 5}), "claims_missing"),
            (json.dumps({"claims": [], "typ": 5}), "claims_not_object"),
            (json.dumps({"claims": {"iss": "x"}, "typ": 5}), "typ_invalid"),
            (json.dumps({"claims": {"iss": "x"}, "typ": "JOSE"}), "typ_not_allowed"),
            (json.dumps({"claims": {"iss": "x", "iat": 1}}), "iss_mismatch"),
            (json.dumps({"claims": {"iat": 1}}), "iat_forbidden"),
            (json.dumps({"claims": {"exp": "x"}}), "aud_missing"),
            (json.dumps({"claims": {"aud": [], "exp": "x"}}), "aud_invalid"),
            (json.dumps({"claims": {"aud": "api://x", "exp": "x"}}), "aud_not_allowed"),
            (json.dumps({"claims": {"aud": AUD, "exp": "x", "nbf": "x"}}), "exp_invalid"),
            (json.dumps({"claims": {"aud": AUD, "exp": now - 5, "jti": ""}}), "exp_in_past"),
            (json.dumps({"claims": {"aud": AUD, "exp": now + 7200, "nbf": "x"}}), "exp_too_far"),
            (json.dumps({"claims": {"aud": AUD, "nbf": "x", "jti": ""}}), "nbf_invalid"),
            (json.dumps({"claims": {"aud": AUD, "nbf": now + 5000, "jti": ""}}), "nbf_after_exp"),
        ]
        for body, code in pairs:
            self.refused(body, 400, code, "precedence: %r" % (body[:120],))

    def test_many_refusals_then_signs(self):
        # the daemon does not degrade after a burst of bad requests on many connections
        for i in range(50):
            self.refused(b'{"claims":{"aud":"api://orders","x":"\xff"}}', 400, "invalid_utf8")
            self.refused(padded_body(MAX_BODY + 1), 413, "body_too_large")
            self.refused(b"{", 415, "unsupported_media_type", ct="text/plain")
        self.assertStillSigns(self.d)


if __name__ == "__main__":
    harness.main()
