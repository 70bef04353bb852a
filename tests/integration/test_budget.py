#!/usr/bin/python3
"""The descriptor budget (issue 12, "Resource budget"), scaled down: the daemon runs with
RLIMIT_NOFILE 512 and is flooded with more idle connections than that, on the JWKS port (from
one address) and the sign socket. The connection caps, derived from the limit, keep a reserve
for the token: during the flood another address still gets the JWKS, and once the flood is
gone every signature succeeds (no "token unreachable") and the JWKS is unchanged, without a
restart."""

import os
import re
import resource
import socket
import time

import harness

NOFILE = 512
JWKS = "/main/.well-known/jwks.json"


def raise_our_limit(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def open_many(make, n):
    """Up to n connections; those refused (closed at once or not accepted) are counted too."""
    conns = []
    for _ in range(n):
        s = None
        try:
            s = make()
            conns.append(s)
        except OSError:
            pass
    return conns


class BudgetTest(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        raise_our_limit(8192)
        cls.d = harness.Daemon()
        cls.d.nofile = NOFILE
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def flood_tcp(self, n):
        def make():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.settimeout(2)
                s.bind(("127.0.0.2", 0))  # the flood's address; the test's own requests use .1
                s.connect(("127.0.0.1", self.d.jwks_port))
            except OSError:
                s.close()
                raise
            return s
        return open_many(make, n)

    def flood_unix(self, n):
        def make():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(2)
                s.connect(self.d.sign_socket)
            except OSError:
                s.close()
                raise
            return s
        return open_many(make, n)

    def test_flood_leaves_the_token_its_descriptors(self):
        before = self.d.http("GET", JWKS)
        self.assertEqual(before.status, 200, before)
        self.assertTrue(before.json()["keys"])
        flood = self.flood_tcp(1000) + self.flood_unix(600)
        try:
            time.sleep(0.5)
            # another address still gets the JWKS, unchanged
            for _ in range(20):
                r = self.d.http("GET", JWKS)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.headers["etag"], before.headers["etag"])
                self.assertEqual(r.body, before.body)
        finally:
            for s in flood:
                s.close()
        time.sleep(0.5)
        for i in range(50):
            self.assertSigned(self.d.sign("main", dict(harness.VALID_CLAIMS)),
                              "signature %d after the flood" % i)
        r = self.d.unix_request("GET", "/readyz")
        self.assertEqual(r.status, 200, r)
        r = self.d.http("GET", JWKS)
        self.assertEqual((r.status, r.body), (200, before.body), r)
        log = self.d.log()
        if os.environ.get("HARNESS_VERBOSE"):
            print(log)
        self.assertNotIn("Too many open files", log)
        self.assertNotIn("token unreachable", log)
        # refusals at a cap are not logged one by one
        self.assertLess(len(re.findall("connection", log, re.I)), 20, log[-3000:])
        self.assertStillSigns(self.d)

    def test_caps_are_announced(self):
        self.assertRegex(self.d.log(), r"descriptors: %d; connections at most: sign \d+, "
                                       r"admin \d+, jwks \d+ per listener \(\d+ per address\)"
                         % NOFILE)


if __name__ == "__main__":
    harness.main()
