#!/usr/bin/python3
"""What the daemon leaves in the PKCS#11 token (SPEC §6), read back with p11probe: the key
attributes, the record objects, and that they agree with the JWKS the daemon serves."""

import json
import time

import harness

P256_OID_DER = "06082a8648ce3d030107"  # id-ecPublicKey curve prime256v1
CKK_EC = 3
RECORD_MEMBERS = {"v", "issuer", "iss", "kid", "alg", "id", "created_at", "activates_at"}
ISSUERS = {"main": dict(harness.DEFAULT_ISSUER),
           "second": {"iss": "https://second.example.test", "allow": "*"}}


def ec_point_xy(hexpoint):
    """(x, y) bytes of a CKA_EC_POINT: DER OCTET STRING of an uncompressed point (or the raw
    point, as some modules return)."""
    b = bytes.fromhex(hexpoint)
    if b[0] == 0x04 and len(b) == 67 and b[1] == 0x41 and b[2] == 0x04:
        b = b[2:]
    if b[0] != 0x04 or len(b) != 65:
        raise ValueError("not an uncompressed P-256 point: " + hexpoint)
    return b[1:33], b[33:]


class KeysInTokenTest(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.started = int(time.time())
        cls.d = harness.Daemon(issuers=ISSUERS)
        try:
            cls.d.start()
            cls.first = {name: cls.d.sign(name, {"aud": "api://orders"}) for name in ISSUERS}
            cls.objs = cls.d.probe()
        except BaseException:
            cls.d.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def tearDown(self):
        for name in ISSUERS:
            self.assertStillSigns(self.d, name, {"aud": "api://orders"})

    def of_class(self, cls):
        return [o for o in self.objs if o["class"] == cls]

    def test_private_key_attributes(self):
        privs = self.of_class("private_key")
        self.assertEqual(len(privs), harness.KEYS_AT_START * len(ISSUERS), self.objs)
        for k in privs:
            ctx = json.dumps(k)
            self.assertEqual(k["key_type"], CKK_EC, ctx)
            for attr in ("token", "private", "sensitive", "never_extractable",
                         "always_sensitive", "local", "sign"):
                self.assertIs(k[attr], True, "%s must be true: %s" % (attr, ctx))
            for attr in ("extractable", "decrypt", "unwrap", "derive"):
                self.assertIs(k[attr], False, "%s must be false: %s" % (attr, ctx))
            self.assertEqual(k["value_rv"], "CKR_ATTRIBUTE_SENSITIVE", ctx)
            self.assertRegex(k["id"] or "", r"^[0-9a-f]{32}$", "CKA_ID is 16 bytes: " + ctx)
            self.assertIn(k["label"], ["tokensign:" + n for n in ISSUERS], ctx)
        self.assertEqual(len({k["id"] for k in privs}), len(privs), "CKA_IDs are unique")

    def test_public_keys_pair_with_private_keys(self):
        privs = {k["id"]: k for k in self.of_class("private_key")}
        pubs = self.of_class("public_key")
        self.assertEqual(sorted(p["id"] for p in pubs), sorted(privs))
        for p in pubs:
            self.assertEqual(p["label"], privs[p["id"]]["label"])
            self.assertEqual(p["key_type"], CKK_EC)
            self.assertEqual(p["ec_params"], P256_OID_DER)
            ec_point_xy(p["ec_point"])

    def test_records(self):
        pubs = {p["id"]: p for p in self.of_class("public_key")}
        data = self.of_class("data")
        self.assertEqual(len(data), harness.KEYS_AT_START * len(ISSUERS), self.objs)
        for rec in data:
            ctx = json.dumps(rec)
            self.assertEqual(rec["application"], "tokensign", ctx)
            self.assertIs(rec["token"], True, ctx)
            v = json.loads(rec["value"])
            missing = RECORD_MEMBERS - set(v)
            self.assertFalse(missing, "record lacks %s: %s" % (missing, ctx))
            self.assertIn(v["issuer"], ISSUERS, ctx)
            self.assertEqual(rec["label"], "tokensign:%s:%s" % (v["issuer"], v["kid"]), ctx)
            self.assertEqual(v["iss"], ISSUERS[v["issuer"]]["iss"], ctx)
            self.assertEqual(v["alg"], "ES256", ctx)
            self.assertIsInstance(v["v"], int, ctx)
            self.assertIn(v["id"], pubs, "record names a key pair that is not there: " + ctx)
            self.assertEqual(pubs[v["id"]]["label"], "tokensign:" + v["issuer"], ctx)
            # the kid is the thumbprint of the public key in the token
            x, y = ec_point_xy(pubs[v["id"]]["ec_point"])
            jwk = {"kty": "EC", "crv": "P-256", "x": harness.b64url_encode(x),
                   "y": harness.b64url_encode(y)}
            self.assertEqual(v["kid"], harness.jwk_thumbprint(jwk), ctx)
            for t in ("created_at", "activates_at"):
                self.assertIsInstance(v[t], int, ctx)
            self.assertTrue(self.started - 5 <= v["created_at"] <= int(time.time()) + 5, ctx)
            self.assertLessEqual(v["created_at"], v["activates_at"], ctx)
        self.assertEqual(len({r["label"] for r in data}), len(data), "one record per key")

    def test_records_agree_with_jwks(self):
        recs = [json.loads(r["value"]) for r in self.of_class("data")]
        pubs = {p["id"]: p for p in self.of_class("public_key")}
        for name in ISSUERS:
            mine = [r for r in recs if r["issuer"] == name]
            self.assertEqual(len(mine), harness.KEYS_AT_START)
            jwks = self.d.jwks(name)
            self.assertEqual([k["kid"] for k in jwks["keys"]],
                             [r["kid"] for r in sorted(mine, key=lambda r: (r["activates_at"],
                                                                            r["kid"]))],
                             "JWKS = the issuer's records, ordered by activates_at then kid")
            for k in jwks["keys"]:
                rec = [r for r in mine if r["kid"] == k["kid"]][0]
                x, y = ec_point_xy(pubs[rec["id"]]["ec_point"])
                self.assertEqual((k["x"], k["y"]),
                                 (harness.b64url_encode(x), harness.b64url_encode(y)))
            # the signing key is one of them, active now
            a = self.first[name].json()
            rec = [r for r in mine if r["kid"] == a["kid"]]
            self.assertEqual(len(rec), 1, "signing kid %s has no record" % a["kid"])
            self.assertLessEqual(rec[0]["activates_at"], a["iat"])

    def test_signature_made_by_the_token_key(self):
        pubs = {p["id"]: p for p in self.of_class("public_key")}
        recs = {json.loads(r["value"])["kid"]: json.loads(r["value"])
                for r in self.of_class("data")}
        for name in ISSUERS:
            a = self.assertSigned(self.d.sign(name, {"aud": "api://orders"}))
            x, y = ec_point_xy(pubs[recs[a["kid"]]["id"]]["ec_point"])
            jwk = {"kty": "EC", "crv": "P-256", "x": harness.b64url_encode(x),
                   "y": harness.b64url_encode(y)}
            self.assertTrue(harness.verify_es256(a["token"], jwk))
            # and not by the other issuer's key
            other = [r for r in recs.values() if r["issuer"] != name][0]
            ox, oy = ec_point_xy(pubs[other["id"]]["ec_point"])
            self.assertFalse(harness.verify_es256(a["token"], {
                "x": harness.b64url_encode(ox), "y": harness.b64url_encode(oy)}))

    def test_nothing_else_in_token(self):
        counts = {}
        for o in self.objs:
            counts[o["class"]] = counts.get(o["class"], 0) + 1
        n = harness.KEYS_AT_START * len(ISSUERS)
        self.assertEqual(counts, {"private_key": n, "public_key": n, "data": n}, self.objs)


if __name__ == "__main__":
    harness.main()
