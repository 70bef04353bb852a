#!/usr/bin/python3
"""POST /v1/issuers/NAME/sign-batch (SPEC §4, docs/api.md "Signing in batches"): each item
judged and audited exactly as a single sign, in order; the request-level rules refuse the batch
as a whole; every token verified on its own by PyJWT and jwcrypto against the live JWKS; a
killed signing helper under a stream of batches gives 200s and 503s, never half an answer; and
the helper's SIGN_BATCH op driven as a compromised front process would drive it."""

import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time

import jwt
from jwcrypto import jwk as jjwk
from jwcrypto import jws as jjws

import harness
# Modules, not names: a test class imported by name would run here too.
import test_audit
import test_privsep
from test_privsep import EX_PROTOCOL, ES256, VERSION, b, frame, read_answer, signing_input

records = test_audit.records

ISS = harness.DEFAULT_ISSUER["iss"]
CLAIMS = {"sub": "user-42", "aud": "api://orders"}
NOBODY = 65534
MAX_ITEMS = 64  # daemon/http/policy.h POLICY_MAX_BATCH
OP_SIGN_BATCH = 17  # daemon/proto/proto.h
PROTO_MAX_INPUT = 96 * 1024


def batch_path(issuer="main"):
    return "/v1/issuers/%s/sign-batch" % issuer


def item(claims, typ=None, **extra):
    out = {"claims": claims}
    if typ is not None:
        out["typ"] = typ
    out.update(extra)
    return out


class BatchTest(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.port = harness.free_port()
        locked = dict(harness.DEFAULT_ISSUER, iss="https://login.example.test/locked",
                      allow="uid:0")
        cls.d = harness.Daemon(issuers={"main": harness.DEFAULT_ISSUER, "locked": locked},
                               sign_mode="0666",
                               extra_conf="[metrics]\nlisten = 127.0.0.1:%d\n" % cls.port)
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def tearDown(self):
        self.assertStillSigns(self.d)

    def batch(self, requests, issuer="main", **kw):
        return self.d.unix_request("POST", batch_path(issuer), {"requests": requests}, **kw)

    def results(self, r, n):
        """The results of a 200 batch answer of n items."""
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get("content-type", "").split(";")[0], "application/json")
        body = r.json()
        self.assertEqual(list(body), ["results"], r)
        self.assertEqual(len(body["results"]), n, r)
        return body["results"]

    def assertToken(self, res, ctx=None):
        self.assertEqual(sorted(res), ["alg", "exp", "iat", "kid", "token"], (ctx, res))
        return res

    def verify(self, res, aud="api://orders", typ="JWT"):
        """The token on its own, by PyJWT (key from the JWKS by kid) and jwcrypto."""
        token = res["token"]
        client = jwt.PyJWKClient(self.d.jwks_url("main"), cache_keys=False)
        key = client.get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key.key, algorithms=["ES256"], audience=aud, issuer=ISS,
                            options={"require": ["exp", "iat", "iss", "aud", "jti"]})
        header = jwt.get_unverified_header(token)
        self.assertEqual(header, {"alg": "ES256", "kid": res["kid"], "typ": typ})
        self.assertEqual((claims["iat"], claims["exp"]), (res["iat"], res["exp"]))
        keys = jjwk.JWKSet.from_json(json.dumps(self.d.jwks("main")))
        obj = jjws.JWS()
        obj.deserialize(token)
        obj.verify(keys.get_key(res["kid"]), alg="ES256")
        self.assertEqual(json.loads(obj.payload), claims)
        return claims

    # -- items --

    def test_mixed_items_answered_in_order_as_single_signs(self):
        now = int(time.time())
        requests = [
            item(dict(CLAIMS, scope="a")),
            item({"sub": "x", "aud": "api://nope"}),                   # aud_not_allowed
            item(dict(CLAIMS, exp=now + 7200)),                        # exp_too_far (1h max)
            item(dict(CLAIMS, iss="https://evil.example/")),           # iss_mismatch
            item(CLAIMS, typ="id+jwt"),                                # typ_not_allowed
            item(["not", "an", "object"]),                             # claims_not_object
            item(dict(CLAIMS, iat=now)),                               # iat_forbidden
            item({"sub": "x"}),                                        # aud_missing
            item(CLAIMS, alg="none"),                                  # header_parameter
            item(CLAIMS, extra=1),                                     # unknown_member
            {"typ": "JWT"},                                            # claims_missing
            item(dict(CLAIMS, jti="")),                                # jti_invalid
            item(dict(CLAIMS, aud="api://billing", scope="b"), typ="at+jwt"),
        ]
        codes = [None, "aud_not_allowed", "exp_too_far", "iss_mismatch", "typ_not_allowed",
                 "claims_not_object", "iat_forbidden", "aud_missing", "header_parameter",
                 "unknown_member", "claims_missing", "jti_invalid", None]
        results = self.results(self.batch(requests), len(requests))
        for i, (req, code, res) in enumerate(zip(requests, codes, results)):
            single = self.d.unix_request("POST", "/v1/issuers/main/sign", req)
            if code is None:
                self.assertToken(res, i)
                self.assertSigned(single)
                continue
            # exactly the single sign's error body for the same request
            self.assertEqual(res, {"error": code, "message": res["message"]}, i)
            self.assertEqual(single.status, 400, (i, single))
            self.assertEqual(res, single.json(), i)
        self.assertEqual(self.verify(results[0])["scope"], "a")
        self.assertEqual(self.verify(results[-1], aud="api://billing", typ="at+jwt")["scope"],
                         "b")

    def test_refusals_byte_for_byte_the_single_signs(self):
        """h15-cost: items are passed on and answers written without jansson's dumps: the
        answer of refused items is exactly the single signs' error bodies, joined; an item
        nested deeper than the daemon's own JSON writer goes (64 levels) is judged all the
        same."""
        deep = "x"
        for _ in range(100):
            deep = [deep]
        requests = [
            item(dict(CLAIMS, aud='api://"quoted"\\ \u00e9\u2028\n\x01')),  # escaped in message
            item(dict(CLAIMS, nested=deep)),                                  # too_deep
            item({"sub": "x"}),                                               # aud_missing
        ]
        r = self.batch(requests)
        self.assertEqual(r.status, 200, r)
        singles = [self.d.unix_request("POST", "/v1/issuers/main/sign", req) for req in requests]
        self.assertEqual([x.status for x in singles], [400, 400, 400], singles)
        self.assertEqual([x.json()["error"] for x in singles],
                         ["aud_not_allowed", "too_deep", "aud_missing"])
        self.assertEqual(r.body, b'{"results":[' + b",".join(x.body for x in singles) + b"]}")

    def test_64_items_signed_each_verifies_alone(self):
        requests = [item(dict(CLAIMS, n=i)) for i in range(MAX_ITEMS)]
        results = self.results(self.batch(requests), MAX_ITEMS)
        jtis = set()
        for i, res in enumerate(results):
            claims = self.verify(self.assertToken(res, i))
            self.assertEqual(claims["n"], i, "in order")
            jtis.add(claims["jti"])
        self.assertEqual(len(jtis), MAX_ITEMS, "a jti of its own each")

    def test_request_level_refusals(self):
        cases = {
            "65 items": ({"requests": [item(CLAIMS)] * (MAX_ITEMS + 1)}, "requests_too_many"),
            "0 items": ({"requests": []}, "requests_empty"),
            "not an array": ({"requests": item(CLAIMS)}, "requests_not_array"),
            "no requests": ({"claims": CLAIMS}, "unknown_member"),
            "requests missing": ({}, "requests_missing"),
            "an item not an object": ({"requests": [item(CLAIMS), [item(CLAIMS)]]},
                                      "request_not_object"),
            "an unknown top-level member": ({"requests": [item(CLAIMS)], "x": 1},
                                            "unknown_member"),
            "a body not an object": ([item(CLAIMS)], "body_not_object"),
        }
        for what, (body, code) in cases.items():
            with self.subTest(what):
                r = self.d.unix_request("POST", batch_path(), body)
                self.assertError(r, 400, code, what)
        raw = {
            b'{"requests": [': "invalid_json",
            b'{"requests": [{"claims": {"a": 1, "a": 2}}]}': "duplicate_member",
            b'{"requests": [{"claims": {"a": "\xff"}}]}': "invalid_utf8",
        }
        for body, code in raw.items():
            r = self.d.unix_request("POST", batch_path(), body,
                                    headers={"Content-Type": "application/json"})
            self.assertError(r, 400, code, repr(body))

    def test_http_level_refusals_as_single_sign(self):
        self.assertError(self.d.unix_request("GET", batch_path()), 405, "method_not_allowed")
        self.assertError(self.batch([item(CLAIMS)], issuer="nope"), 404, "unknown_issuer")
        self.assertError(self.d.unix_request("POST", "/v1/issuers/main/sign-batch/x", {}), 404,
                         "not_found")
        r = self.d.unix_request("POST", batch_path(), json.dumps({"requests": [item(CLAIMS)]}),
                                headers={"Content-Type": "text/plain"})
        self.assertError(r, 415, "unsupported_media_type")
        r = self.d.unix_request("POST", batch_path(), headers={
            "Content-Type": "application/json", "Content-Length": str(256 * 1024 + 1)})
        self.assertError(r, 413, "body_too_large")

    def test_body_cap_256k_and_an_item_over_64k(self):
        # 160 KiB of batch: over the single sign's 64 KiB, within the batch's 256 KiB.
        pad = "p" * (20 * 1024)
        requests = [item(dict(CLAIMS, pad=pad, n=i)) for i in range(8)]
        results = self.results(self.batch(requests), 8)
        for res in results:
            self.assertEqual(self.verify(self.assertToken(res))["pad"], pad)
        # An item a single sign would refuse for its size is that item's refusal alone.
        big = item(dict(CLAIMS, pad="p" * (65 * 1024)))
        results = self.results(self.batch([item(CLAIMS), big]), 2)
        self.assertToken(results[0])
        self.assertEqual(results[1]["error"], "body_too_large")
        self.assertError(self.d.unix_request("POST", "/v1/issuers/main/sign", big), 413,
                         "body_too_large")
        # Just over 256 KiB, sent whole (chunked): refused as a body.
        body = json.dumps({"requests": [item(dict(CLAIMS, pad="p" * (33 * 1024)))] * 8})
        self.assertGreater(len(body), 256 * 1024)
        r = self.d.unix_request("POST", batch_path(), body,
                                headers={"Content-Type": "application/json"})
        self.assertError(r, 413, "body_too_large")

    def test_caller_not_allowed_gets_one_refusal(self):
        before = len(records(self.d.log()))
        r = self.batch([item(CLAIMS)] * 5, issuer="locked", as_uid=NOBODY)
        self.assertError(r, 403, "forbidden")
        time.sleep(0.2)
        recs = records(self.d.log())[before:]
        self.assertEqual([(x["event"], x["reason"], x["issuer"]) for x in recs],
                         [("refused", "forbidden", "locked")], recs)
        # the same caller may use main (allow *)
        self.assertToken(self.results(self.batch([item(CLAIMS)], as_uid=NOBODY), 1)[0])

    def test_one_audit_record_per_item(self):
        """Records are written as decisions are made: a policy refusal before the tokens of its
        batch (which are recorded only once the helper has signed)."""
        requests = [item(dict(CLAIMS, jti="b-%d" % i)) for i in range(5)]
        requests[2] = item({"aud": "api://nope", "jti": "b-2"})
        before = len(records(self.d.log()))
        results = self.results(self.batch(requests), 5)
        time.sleep(0.2)
        recs = records(self.d.log())[before:]
        self.assertEqual([(x["event"], x.get("jti"), x["result"]) for x in recs],
                         [("refused", "b-2", "refused"), ("signed", "b-0", "granted"),
                          ("signed", "b-1", "granted"), ("signed", "b-3", "granted"),
                          ("signed", "b-4", "granted")], recs)
        self.assertEqual(recs[0]["reason"], "aud_not_allowed")
        by_jti = {rec["jti"]: rec for rec in recs}
        for i, res in enumerate(results):
            if "kid" in res:
                rec = by_jti["b-%d" % i]
                self.assertEqual((rec["kid"], rec["exp"]), (res["kid"], res["exp"]))

    def test_metrics_count_each_item(self):
        def scrape():
            text = harness.tcp_http("127.0.0.1", self.port, "GET", "/metrics").body.decode()
            out = {}
            for line in text.splitlines():
                if line.startswith("tokensign_sign_") and 'issuer="main"' in line:
                    name, value = line.rsplit(" ", 1)
                    out[name] = float(value)
            return out

        before = scrape()
        self.results(self.batch([item(CLAIMS), item({"aud": "api://nope"}), item(CLAIMS)]), 3)
        after = scrape()

        def moved(name):
            return after.get(name, 0) - before.get(name, 0)

        self.assertEqual(moved('tokensign_sign_requests_total{issuer="main",result="granted"}'),
                         2)
        self.assertEqual(
            moved('tokensign_sign_requests_total{issuer="main",result="aud_not_allowed"}'), 1)
        # the latency histogram: one observation per batch
        self.assertEqual(moved('tokensign_sign_duration_seconds_count{issuer="main"}'), 1)

    def test_killed_helper_under_a_stream_of_batches(self):
        results, stop = [], threading.Event()

        def batcher():
            while not stop.is_set():
                r = self.batch([item(dict(CLAIMS, n=i)) for i in range(8)])
                results.append((time.monotonic(), r.status, r.body))

        threads = [threading.Thread(target=batcher) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            victims = self.d.helpers()["sign"]
            killed_at = time.monotonic()
            os.kill(victims[0], signal.SIGKILL)
            time.sleep(1.5)
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertNotIn(victims[0], self.d.helpers()["sign"])
        statuses = set()
        for _, status, body in results:
            a = json.loads(body)
            statuses.add(status)
            if status == 200:
                self.assertEqual(len(a["results"]), 8)
                for i, res in enumerate(a["results"]):
                    self.assertToken(res, (i, a))
            else:
                self.assertEqual((status, a["error"]), (503, "hsm_unavailable"), a)
        self.assertTrue(any(t > killed_at and s == 200 for t, s, _ in results), statuses)
        self.assertRegex(self.d.log(), r"token helper %d \(signing\) (died|hung up)" % victims[0])


class BatchAuditRequired(harness.TestCase):
    """[sign] audit = required: an item whose record cannot be written is that item's
    audit_unavailable, never a token; refusals stay what they are."""

    def test_pipe_closed(self):
        d = test_audit.PipeDaemon()
        d.config_text = lambda: harness.Daemon.config_text(d).replace(
            "[sign]\n", "[sign]\naudit = required\n")
        d.write_config()
        self.addCleanup(d.close)
        d.start()
        r = d.unix_request("POST", batch_path(), {"requests": [item(CLAIMS)]})
        self.assertEqual(r.status, 200, r)
        self.assertIn("token", r.json()["results"][0])
        d.cut()
        r = d.unix_request("POST", batch_path(),
                           {"requests": [item(CLAIMS), item({"sub": "x"}), item(CLAIMS)]})
        self.assertEqual(r.status, 200, r)
        self.assertNotIn(b'"token"', r.body)
        self.assertEqual([x["error"] for x in r.json()["results"]],
                         ["audit_unavailable", "aud_missing", "audit_unavailable"])
        self.assertIsNone(d.proc.poll(), "the daemon lives on")


def batch_request(key_id, alg, inputs, count=None):
    body = struct.pack("<BB", VERSION, OP_SIGN_BATCH) + b(key_id) + struct.pack("<B", alg)
    body += struct.pack("<I", len(inputs) if count is None else count)
    for x in inputs:
        body += b(x)
    return frame(body)


def batch_results(rest):
    """[(result, error, sig)] of a SIGN_BATCH answer's fields."""
    (n,) = struct.unpack("<I", rest[:4])
    off, out = 4, []
    for _ in range(n):
        res, elen = struct.unpack("<iI", rest[off:off + 8])
        off += 8
        err = rest[off:off + elen].decode()
        off += elen
        sig = b""
        if res == 0:
            (slen,) = struct.unpack("<I", rest[off:off + 4])
            sig = rest[off + 4:off + 4 + slen]
            off += 4 + slen
        out.append((res, err, sig))
    assert off == len(rest), (off, len(rest))
    return out


class HelperBatchProtocol(harness.TestCase):
    """SIGN_BATCH as a compromised front would send it: the guard judges each input alone; a
    batch outside the protocol's caps makes the helper exit."""

    @classmethod
    def setUpClass(cls):
        cls.d = harness.Daemon()
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    # A helper of our own on the daemon's token, and the active key's facts from its record.
    helper = test_privsep.PrivsepTest.helper
    key = test_privsep.PrivsepTest.key
    jwk = test_privsep.PrivsepTest.jwk

    def test_each_input_guarded_alone(self):
        rec = self.key()
        key_id = bytes.fromhex(rec["id"])
        p, s = self.helper()
        now = int(time.time())
        header = {"alg": "ES256", "kid": rec["kid"], "typ": "JWT"}
        good = {"iss": rec["iss"], "aud": "x", "iat": now, "exp": now + 60}
        inputs = [signing_input(header, good),
                  signing_input(header, dict(good, iss="https://login.example.test/other")),
                  signing_input(header, dict(good, exp=now + rec["max_token_ttl"] + 1)),
                  signing_input(dict(header, kid="A" * 43), good),
                  b"tokensign: a proof's prefix",
                  signing_input(header, dict(good, sub="last"))]
        s.sendall(batch_request(key_id, ES256, inputs))
        result, err, rest = read_answer(s, OP_SIGN_BATCH)
        self.assertEqual((result, err), (0, ""))
        got = batch_results(rest)
        self.assertEqual([g[0] for g in got], [0, -1, -1, -1, -1, 0], got)  # -EPERM
        for res, err, sig in got[1:5]:
            self.assertIn("signature refused", err)
        for i in (0, 5):
            token = inputs[i].decode() + "." + harness.b64url_encode(got[i][2])
            self.assertTrue(harness.verify_es256(token, self.jwk(rec["kid"])), i)
        # A key it does not have: the whole batch's failure, no items.
        s.sendall(batch_request(os.urandom(16), ES256, inputs[:1]))
        result, err, rest = read_answer(s, OP_SIGN_BATCH)
        self.assertLess(result, 0)
        self.assertEqual(rest, b"")
        self.assertIsNone(p.poll(), "refusals are answers, not exits")

    def test_helper_exits_on_a_batch_outside_the_protocol(self):
        key_id = b"\x01" * 16
        cases = {
            "65 inputs": batch_request(key_id, ES256, [b"a.b"] * 65),
            "0 inputs": batch_request(key_id, ES256, []),
            "a count over the inputs sent": batch_request(key_id, ES256, [b"a.b"], count=2),
            "an input over the cap": batch_request(key_id, ES256,
                                                   [b"a.b", b"a" * (PROTO_MAX_INPUT + 1)]),
            "a batch frame over 512 KiB": batch_request(key_id, ES256,
                                                        [b"a" * (90 * 1024)] * 6),
            "an unknown alg": batch_request(key_id, 77, [b"a.b"]),
        }
        # trailing bytes: a frame whose body holds one byte more than its one input
        body = batch_request(key_id, ES256, [b"a.b"])[4:] + b"\x00"
        cases["trailing bytes"] = frame(body)
        for what, data in cases.items():
            p, s = self.helper()
            try:
                s.sendall(data)
            except OSError:
                pass  # the helper may exit before it has read a large frame whole
            try:
                status = p.wait(10)
            except subprocess.TimeoutExpired:
                status = "still running"
            self.assertEqual(status, EX_PROTOCOL, what)


if __name__ == "__main__":
    harness.main()
