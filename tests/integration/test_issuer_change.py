#!/usr/bin/python3
"""A changed `iss` or `algorithm` is a rotation, never a loss (SPEC §6, docs/design.md "Custody",
invariant C4): after a reload with another iss and algorithm, the keys already published stay in
the JWKS with their own `alg`, the old active key keeps signing as what it is (its own iss and
algorithm) until a new key, pre-published for `prepublish`, takes over; the old pending key is
withdrawn (never signs); nothing is destroyed because the configuration changed. A relying party
that refreshes its JWKS every max-age verifies every token the daemon issues, and a token signed
before the change verifies with every JWKS served until it expires.

A removed issuer's keys are orphans: kept in the token and reported, never destroyed by a
reload (keyrotate purge: test_keyrotate.py)."""

import json
import os
import signal
import time

import jwt

import harness

PREPUBLISH = 3
OLD = {"iss": "https://login.example.test/old", "algorithm": "ES256", "rotation-period": "30s",
       "prepublish": "%ds" % PREPUBLISH, "token-ttl": "5s", "max-token-ttl": "5s",
       "audiences": "api://x", "allow": "*"}
NEW = dict(OLD, iss="https://login.example.test/new", algorithm="ES384")
CLAIMS = {"sub": "u", "aud": "api://x"}


class Verifier:
    """A relying party that caches the JWKS for max-age (1 s) and verifies with PyJWT."""

    def __init__(self, d):
        self.d, self.jwks, self.fetched = d, None, 0.0

    def keys(self):
        if time.time() - self.fetched >= 1.0:
            self.jwks, self.fetched = self.d.jwks("main"), time.time()
        return self.jwks

    def verify(self, token, iss, jwks=None):
        kid = jwt.get_unverified_header(token)["kid"]
        jwk = [k for k in (jwks or self.keys())["keys"] if k["kid"] == kid]
        if not jwk:
            raise AssertionError("kid %s is not in the relying party's JWKS" % kid)
        key = jwt.PyJWK(jwk[0])
        return jwt.decode(token, key.key, algorithms=[jwk[0]["alg"]], audience="api://x",
                          issuer=iss)


class IssuerChangeTest(harness.TestCase):
    def setUp(self):
        self.d = harness.Daemon(issuers={"main": dict(OLD), "other": dict(OLD, iss=
                                "https://login.example.test/other")}, jwks_max_age="1s")
        self.addCleanup(self.d.close)
        self.admin = os.path.join(self.d.workdir, "admin.sock")
        self.d.extra_conf = "[admin]\nsocket = %s\n" % self.admin
        self.d.write_config()
        self.d.start()

    def reload(self, issuers):
        self.d.issuers = issuers
        self.d.write_config()
        before = self.d.log().count("reload: done")
        self.d.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while self.d.log().count("reload: done") == before:
            self.assertLess(time.time(), deadline, "no 'reload: done':\n" + self.d.log()[-3000:])
            time.sleep(0.05)

    def admin_get(self, path):
        r = harness.unix_http(self.admin, "GET", path)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def objects(self):
        return sorted((o["class"], o.get("id"), o.get("label")) for o in self.d.probe()
                      if o["class"] in ("private_key", "public_key"))

    def test_iss_and_algorithm_change_is_a_rotation(self):
        rp = Verifier(self.d)
        first = self.assertSigned(self.d.sign("main", CLAIMS))
        old_jwks = self.d.jwks("main")
        self.assertEqual([k["alg"] for k in old_jwks["keys"]], ["ES256", "ES256"])
        active, pending = first["kid"], [k["kid"] for k in old_jwks["keys"]
                                         if k["kid"] != first["kid"]][0]
        rp.verify(first["token"], OLD["iss"])
        key_objects = self.objects()

        self.reload({"main": dict(NEW), "other": self.d.issuers["other"]})
        changed_at = time.time()
        jwks = self.d.jwks("main")
        algs = {k["kid"]: k["alg"] for k in jwks["keys"]}
        # Nothing left the JWKS; each key is published with its own algorithm; one new key.
        self.assertEqual(algs[active], "ES256", jwks)
        self.assertEqual(algs[pending], "ES256", jwks)
        new = [kid for kid, alg in algs.items() if alg == "ES384"]
        self.assertEqual(len(new), 1, jwks)
        self.assertEqual(len(algs), 3, jwks)
        # Nothing was destroyed by the change.
        self.assertTrue(set(key_objects) <= set(self.objects()),
                        "a key object disappeared at the reload")
        rows = {k["kid"]: k for k in self.admin_get("/v1/keys?issuer=main")["keys"]}
        self.assertIn("withdrawn_at", rows[pending], rows)
        self.assertEqual(rows[new[0]]["state"], "pending", rows)
        self.assertGreaterEqual(rows[new[0]]["activates_at"] - rows[new[0]]["created_at"],
                                PREPUBLISH, rows[new[0]])

        # Until the new key takes over, the old active key signs as what it is.
        seen_new = None
        while time.time() < changed_at + PREPUBLISH + 4:
            body = self.assertSigned(self.d.sign("main", CLAIMS))
            if body["kid"] == active:
                self.assertEqual(body["alg"], "ES256", body)
                claims = rp.verify(body["token"], OLD["iss"])
            else:
                self.assertEqual(body["kid"], new[0], "the withdrawn key signed: %r" % body)
                self.assertEqual(body["alg"], "ES384", body)
                claims = rp.verify(body["token"], NEW["iss"])
                seen_new = seen_new or time.time()
            self.assertNotEqual(body["kid"], pending)
            # The token signed before the change still verifies with what is served now, and
            # its key stays published after it expired (SPEC §6: + max-token-ttl + skew).
            served = self.d.jwks("main")
            if time.time() < first["exp"] - 0.5:
                rp.verify(first["token"], OLD["iss"], served)
            self.assertIn(active, [k["kid"] for k in served["keys"]])
            self.assertIn(claims["iss"], (OLD["iss"], NEW["iss"]))
            time.sleep(0.2)
        self.assertIsNotNone(seen_new, "the new key never took over")
        self.assertGreaterEqual(seen_new - changed_at, PREPUBLISH - 1.2,
                                "the new key signed before it was published for prepublish")
        # A request that names the old iss is now refused: the new key signs only its own.
        r = self.d.sign("main", dict(CLAIMS, iss=OLD["iss"]))
        self.assertError(r, 400, "iss_mismatch")
        self.assertNoSanitizerReport(self.d)

    def test_removed_issuer_keys_are_orphans_not_destroyed(self):
        kids = [k["kid"] for k in self.d.jwks("other")["keys"]]
        key_objects = self.objects()
        self.reload({"main": self.d.issuers["main"]})
        self.assertEqual(self.d.http("GET", "/other/.well-known/jwks.json").status, 404)
        self.assertEqual(set(key_objects), set(self.objects()), "a reload destroyed a key")
        status = self.admin_get("/v1/status")
        self.assertEqual(status["orphans"], [{"issuer": "other", "keys": len(kids)}], status)
        self.assertEqual(status["level"], "warning", status)
        rows = [k for k in self.admin_get("/v1/keys")["keys"] if k.get("orphan")]
        self.assertEqual(sorted(k["kid"] for k in rows), sorted(kids), rows)
        self.d.restart()
        self.assertEqual(set(key_objects), set(self.objects()), "a restart destroyed a key")
        self.assertStillSigns(self.d, "main", CLAIMS)


if __name__ == "__main__":
    harness.main()
