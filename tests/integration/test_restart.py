#!/usr/bin/python3
"""The daemon is stateless apart from the token (SPEC §1, §6): after a restart - clean or
SIGKILL - it serves the same keys, the same JWKS bytes and ETag, and makes no new key. Two
instances on one token serve byte-identical JWKS (SPEC §5)."""

import signal

import jwt

import harness

ISSUERS = {"main": dict(harness.DEFAULT_ISSUER),
           "other": {"iss": "https://other.example.test", "allow": "*"}}


def key_objects(objs):
    """What identifies the token's key material: (class, label, id) of every key and record."""
    return sorted((o["class"], o.get("label"), o.get("id")) for o in objs)


class RestartTest(harness.TestCase):
    def setUp(self):
        self.d = harness.Daemon(issuers=ISSUERS)
        self.addCleanup(self.d.close)
        self.d.start()

    def snapshot(self):
        out = {}
        for name in ISSUERS:
            r = self.d.http("GET", "/%s/.well-known/jwks.json" % name)
            self.assertEqual(r.status, 200, r)
            out[name] = (r.body, r.headers.get("etag"))
            self.assertTrue(out[name][1], r)
        return out

    def sign(self, name="main"):
        return self.assertSigned(self.d.sign(name, {"aud": "api://orders", "sub": "r"}))

    def verify_live(self, token, name="main"):
        key = jwt.PyJWKClient(self.d.jwks_url(name), cache_keys=False) \
            .get_signing_key_from_jwt(token)
        return jwt.decode(token, key.key, algorithms=["ES256"], audience="api://orders",
                          issuer=ISSUERS[name]["iss"])

    def check_same_after(self, before_objs, before_jwks, tokens):
        self.assertEqual(self.snapshot(), before_jwks, "JWKS bytes and ETag after restart")
        after_objs = self.d.probe()
        self.assertEqual(key_objects(after_objs), key_objects(before_objs),
                         "no key made or lost by the restart")
        self.assertEqual(len([o for o in after_objs if o["class"] == "private_key"]),
                         harness.KEYS_AT_START * len(ISSUERS))
        # records are untouched (not rewritten with new times)
        self.assertEqual(sorted(o["value"] for o in after_objs if o["class"] == "data"),
                         sorted(o["value"] for o in before_objs if o["class"] == "data"))
        for name, a in tokens.items():
            self.verify_live(a["token"], name)
            b = self.sign(name)
            self.assertEqual(b["kid"], a["kid"], "same signing key after restart")
            self.verify_live(b["token"], name)

    def test_clean_restart(self):
        tokens = {name: self.sign(name) for name in ISSUERS}
        jwks = self.snapshot()
        objs = self.d.probe()
        self.assertEqual(self.d.stop(), 0, "exit status after SIGTERM; stderr:\n" + self.d.log())
        self.d.start()
        self.check_same_after(objs, jwks, tokens)
        # and once more
        self.d.restart()
        self.check_same_after(objs, jwks, tokens)

    def test_restart_after_sigkill(self):
        tokens = {name: self.sign(name) for name in ISSUERS}
        jwks = self.snapshot()
        objs = self.d.probe()
        self.d.proc.send_signal(signal.SIGKILL)
        self.d.proc.wait()
        self.d.kill()
        # the stale socket file of the killed daemon is still there; the new one must cope
        self.d.start()
        self.check_same_after(objs, jwks, tokens)

    def test_readyz_after_restart(self):
        self.d.restart()
        r = self.d.unix_request("GET", "/readyz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"status": "ready"})


class TwoInstancesTest(harness.TestCase):
    """A second daemon (own sockets, own port) on the same token: same keys, same bytes."""

    def test_two_instances_one_token(self):
        with harness.Daemon(issuers=ISSUERS) as d1:
            a1 = self.assertSigned(d1.sign("main", {"aud": "api://orders"}))
            objs = d1.probe()
            d1.stop()  # SoftHSM's file store is not meant for concurrent writers: start in turn
            d2 = harness.Daemon(issuers=ISSUERS, share_token_of=d1)
            self.addCleanup(d2.close)
            d2.start()
            d1.start()
            for name in ISSUERS:
                r1 = d1.http("GET", "/%s/.well-known/jwks.json" % name)
                r2 = d2.http("GET", "/%s/.well-known/jwks.json" % name)
                self.assertEqual((r1.status, r2.status), (200, 200))
                self.assertEqual(r1.body, r2.body, name)
                self.assertEqual(r1.headers["etag"], r2.headers["etag"], name)
                self.assertEqual(r1.headers.get("cache-control"),
                                 r2.headers.get("cache-control"))
            a2 = self.assertSigned(d2.sign("main", {"aud": "api://orders"}))
            self.assertEqual(a2["kid"], a1["kid"])
            # the token of one instance verifies with the JWKS of the other
            k = jwt.PyJWKClient(d1.jwks_url("main"), cache_keys=False) \
                .get_signing_key_from_jwt(a2["token"])
            jwt.decode(a2["token"], k.key, algorithms=["ES256"], audience="api://orders")
            self.assertEqual(key_objects(d1.probe()), key_objects(objs),
                             "the second instance made no key")
            self.assertStillSigns(d1)
            self.assertStillSigns(d2)


if __name__ == "__main__":
    harness.main()
