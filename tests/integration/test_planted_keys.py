#!/usr/bin/python3
"""Key objects that someone with the PIN put in the token under the id of one of our keys (SPEC
§6, docs/design.md "Custody"): at the next start the daemon loads all keys in one pass, and that
pass must keep every check of a lookup by id. A pair with a second private object claiming its id
is quarantined (kept, never used or published); a private key with an unsafe attribute in place
of ours is foreign (never used, published or destroyed). Both are said in the log, the key
leaves the JWKS, and the issuer goes on signing with its other key. (Objects made without the PIN
are public and never disturb our keys: test_custody.py.)"""

import json
import subprocess

import harness

ISSUERS = {"main": dict(harness.DEFAULT_ISSUER)}
CLAIMS = {"sub": "planted", "aud": "api://orders"}


class PlantedKeysTest(harness.TestCase):
    def setUp(self):
        self.d = harness.Daemon(issuers=ISSUERS)
        self.addCleanup(self.d.close)
        self.d.start()
        self.active = self.assertSigned(self.d.sign("main", CLAIMS))["kid"]
        kids = [k["kid"] for k in self.d.jwks("main")["keys"]]
        self.assertEqual(len(kids), harness.KEYS_AT_START, kids)
        self.pending = [k for k in kids if k != self.active][0]
        records = [o for o in self.d.probe() if o["class"] == "data"]
        ids = {json.loads(o["value"])["kid"]: json.loads(o["value"])["id"] for o in records}
        self.pending_id = ids[self.pending]
        self.d.stop()

    def pkcs11_tool(self, *args):
        r = subprocess.run(["pkcs11-tool", "--module", self.d.module, "--token-label",
                            self.d.token_label, "--login", "--pin", self.d.pin] + list(args),
                           env=self.d.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        self.assertEqual(r.returncode, 0, r.stdout)

    def keypairgen(self, label, *extra):
        self.pkcs11_tool("--keypairgen", "--key-type", "EC:prime256v1", "--id", self.pending_id,
                         "--label", label, "--usage-sign", "--sensitive", *extra)

    def private_keys(self):
        return [o for o in self.d.probe()
                if o["class"] == "private_key" and o["id"] == self.pending_id]

    def check_left_out(self, line):
        """After a restart, the log has line about the pending key, which is not in the JWKS,
        and the active key still signs."""
        log_before = len(self.d.log())
        self.d.start()
        log = self.d.log()[log_before:]
        self.assertIn(line, log)
        kids = [k["kid"] for k in self.d.jwks("main")["keys"]]
        self.assertNotIn(self.pending, kids)
        self.assertIn(self.active, kids)
        for _ in range(3):
            self.assertEqual(self.assertSigned(self.d.sign("main", CLAIMS))["kid"], self.active)

    def test_duplicate_id_is_not_used(self):
        # Under another label: a search by CKA_ID would see it too, so the one-pass index must.
        self.keypairgen("someone-else")
        self.assertEqual(len(self.private_keys()), 2)
        self.check_left_out("issuer main: key %s is kept in quarantine (it never signs, and "
                            "stays in the JWKS only if it was there): key pair: 2 private-key and 1 public-key objects "
                            "visible only after login carry this id" % self.pending)

    def test_extractable_private_key_is_not_used(self):
        for t in ("privkey", "pubkey"):
            self.pkcs11_tool("--delete-object", "--type", t, "--id", self.pending_id)
        self.keypairgen("tokensign:main", "--extractable")
        planted = self.private_keys()
        self.assertEqual(len(planted), 1, planted)
        first_unsafe = [a for a in ("token", "private", "sensitive", "sign")
                        if planted[0][a] is not True]
        self.assertEqual(first_unsafe, [], planted)
        self.assertIs(planted[0]["extractable"], True, planted)
        self.check_left_out("private key, label 'tokensign:main', id %s: private key has "
                            "CKA_EXTRACTABLE true; it must never be used" % self.pending_id)


if __name__ == "__main__":
    harness.main()
