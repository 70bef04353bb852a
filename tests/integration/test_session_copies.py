#!/usr/bin/python3
"""[hsm] session-copies = yes: each signing helper (tokensign-hsm --serve, one per sign worker;
the keeper passes it --session-copies) signs with a session copy of the key (C_CopyObject,
CKA_TOKEN false) instead of the token object. Tokens must verify exactly as before, the token
must never hold more than its key pairs (a copy is a session object, invisible to other
processes), and a revoked key must stop signing at once although helpers hold copies of it."""

import concurrent.futures
import os
import sys
import time

import harness
import tokencheck

ISS = harness.DEFAULT_ISSUER["iss"]


class SessionCopiesTest(harness.TestCase):
    def setUp(self):
        self.d = harness.CopiesDaemon()
        self.d.admin_socket = os.path.join(self.d.workdir, "admin.sock")
        self.d.extra_conf = "[admin]\nsocket = %s\nmode = 0600\n" % self.d.admin_socket
        self.d.write_config()
        self.addCleanup(self.d.close)
        self.d.start()

    def sign_many(self, n=40, connections=8):
        with concurrent.futures.ThreadPoolExecutor(connections) as ex:
            return list(ex.map(lambda i: self.d.sign("main", {"aud": "api://orders", "i": i}),
                               range(n)))

    def verified_kids(self, results):
        jwks = self.d.jwks("main")
        kids = set()
        for r in results:
            token = self.assertSigned(r)["token"]
            tokencheck.verify_pyjwt(token, jwks, ISS, "api://orders")
            kids.add(r.json()["kid"])
        return kids

    def token_key_objects(self):
        return [o for o in self.d.probe() if o.get("class") in ("private_key", "public_key")]

    def keys(self):
        return tokencheck.admin_json(self.d, "GET", "/v1/keys?issuer=main")["keys"]

    def test_tokens_verify_and_the_token_holds_only_the_pairs(self):
        objects = len(self.token_key_objects())
        kids = self.verified_kids(self.sign_many())
        self.assertEqual(len(kids), 1)
        # Every worker made its copies; none of them is a token object.
        self.assertEqual(len(self.token_key_objects()), objects)
        self.assertNotIn("did not copy", self.d.log())

    def reads_per_signature(self, d, n=50):
        """The read system calls (syscr) of d's signing helpers per signature, over n
        signatures. The module, and so SoftHSM's reads of the token's files, lives in the
        helpers, not in tokensignd. Each helper first signs once, so that its first-use lookup
        of the key (records, attributes) and its copy stay out of the count."""
        served = d.helper_stat("voluntary_ctxt_switches")
        for _ in range(20):
            now = d.helper_stat("voluntary_ctxt_switches")
            if all(now[pid] > served[pid] for pid in now):
                break
            # Concurrent connections reach every sign worker, and so every helper.
            with concurrent.futures.ThreadPoolExecutor(8) as ex:
                for r in ex.map(lambda i: d.sign("main", {"aud": "api://orders"}), range(16)):
                    self.assertSigned(r)
        else:
            self.fail("a signing helper never signed: %r" % d.helpers())
        before = d.helper_stat("syscr")
        for _ in range(n):
            self.assertSigned(d.sign("main", {"aud": "api://orders"}))
        after = d.helper_stat("syscr")
        self.assertEqual(sorted(after), sorted(before), "a signing helper was restarted")
        return sum(after[pid] - before[pid] for pid in after) / n

    def test_the_key_file_is_not_read_per_signature(self):
        # SoftHSM reads a token key's object file on each signature (2 reads); a session copy
        # lives in memory. /proc/PID/io counts the signing helpers' read system calls, those
        # of the protocol included (how many depends on how a frame is read), so the same
        # count in a daemon without copies is the measure: with copies, the key file's two
        # reads per signature are gone, and only the protocol's remain.
        plain = harness.Daemon()
        self.addCleanup(plain.close)
        harness.start_or_close(plain)
        without = self.reads_per_signature(plain)
        plain.close()
        with_copies = self.reads_per_signature(self.d)
        sys.stderr.write("signing helpers' reads per signature: %.2f without copies, %.2f "
                         "with\n" % (without, with_copies))
        self.assertGreaterEqual(without, 2, "the count does not see the key file's reads")
        self.assertLess(with_copies, without - 1.5, "the key file is still read")

    def test_revoked_key_stops_signing_at_once(self):
        before = self.verified_kids(self.sign_many())  # every worker holds a copy now
        (active,) = before
        ids_before = {o["id"] for o in self.token_key_objects()}
        while time.time() < [k for k in self.keys() if k["state"] == "active"][0][
                "activates_at"] + 1:
            time.sleep(0.05)  # a switch in the key's first second waits a second
        ans = tokencheck.admin_json(self.d, "POST",
                                    "/v1/issuers/main/keys/%s/revoke" % active, {})
        self.assertEqual(ans["revoked_kid"], active)
        after = self.verified_kids(self.sign_many())
        self.assertEqual(after, {ans["active_kid"]})
        self.assertNotIn(active, [k["kid"] for k in self.d.jwks("main")["keys"]])
        # One pair is gone from the token (seen by another process), a new pending one came.
        ids_after = {o["id"] for o in self.token_key_objects()}
        self.assertEqual(len(ids_before - ids_after), 1, (ids_before, ids_after))

    def test_restart_keeps_signing(self):
        kids = self.verified_kids(self.sign_many(8, 4))
        self.d.restart()
        self.assertEqual(self.verified_kids(self.sign_many(8, 4)), kids)


if __name__ == "__main__":
    harness.main()
