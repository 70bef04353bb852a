#!/usr/bin/python3
"""Who may sign (SPEC §3 `allow`, §4 SO_PEERCRED/SO_PEERGROUPS): requests made by processes
running as other uids/gids over the real socket."""

import errno
import json
import os
import stat

import harness

AUD = "api://orders"
NOBODY = 65534
NOGROUP = 65534


class CallerTest(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = harness.Daemon(issuers={
            "rootonly": {"allow": "uid:0"},
            "open": {"allow": "*"},
            "nogroup": {"allow": "gid:%d" % NOGROUP},
            "byname": {"allow": "user:nobody"},
            "several": {"allow": "uid:4242, gid:4343"},
        }, sign_mode="0666")
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def tearDown(self):
        self.assertStillSigns(self.d, "open", {"aud": AUD})

    def sign(self, issuer, uid=None, gid=None, groups=None, claims=None):
        kw = {}
        if uid is not None:
            kw = {"as_uid": uid, "as_gid": gid, "as_groups": groups}
        return self.d.sign(issuer, claims or {"aud": AUD, "sub": "caller"}, **kw)

    def test_socket_mode(self):
        self.assertEqual(stat.S_IMODE(os.stat(self.d.sign_socket).st_mode), 0o666)

    def test_nobody(self):
        self.assertError(self.sign("rootonly", NOBODY), 403, "forbidden", "nobody on uid:0")
        self.assertSigned(self.sign("open", NOBODY), "nobody on *")
        self.assertSigned(self.sign("nogroup", NOBODY, NOGROUP), "nobody (gid 65534) on gid:65534")
        self.assertSigned(self.sign("byname", NOBODY), "nobody on user:nobody")

    def test_root(self):
        self.assertSigned(self.sign("rootonly"), "root on uid:0")
        self.assertSigned(self.sign("open"), "root on *")
        # the allow list is not "root may do anything"
        self.assertError(self.sign("nogroup", 0, 0, []), 403, "forbidden", "root on gid:65534")
        self.assertError(self.sign("byname", 0, 0, []), 403, "forbidden", "root on user:nobody")

    def test_groups(self):
        # primary gid only
        self.assertSigned(self.sign("nogroup", 1234, NOGROUP, []), "primary gid matches")
        # supplementary group only (SO_PEERGROUPS)
        self.assertSigned(self.sign("nogroup", 1234, 1234, [5, NOGROUP]),
                          "supplementary gid matches")
        # neither
        self.assertError(self.sign("nogroup", 1234, 1234, [5, 6]), 403, "forbidden",
                         "no matching gid")
        # uid: and gid: entries in one list
        self.assertSigned(self.sign("several", 4242, 1, []), "uid:4242 matches")
        self.assertSigned(self.sign("several", 1, 4343, []), "gid:4343 matches (primary)")
        self.assertSigned(self.sign("several", 1, 1, [4343]), "gid:4343 matches (supplementary)")
        self.assertError(self.sign("several", 4343, 4242, []), 403, "forbidden",
                         "uid and gid numbers swapped")
        self.assertError(self.sign("several", NOBODY, NOGROUP, []), 403, "forbidden")

    def test_many_supplementary_groups(self):
        # Linux allows up to 65536 supplementary groups (NGROUPS_MAX); directory-joined hosts
        # often put users in hundreds. SPEC §3: `*` admits every caller, `uid:` looks only at
        # the uid, and `group:`/`gid:` match the primary and *every* supplementary group.
        many = list(range(70001, 70001 + 300))
        self.assertSigned(self.sign("open", NOBODY, NOGROUP, many),
                          "allow = * with 300 supplementary groups")
        self.assertSigned(self.sign("nogroup", 1234, 1234, many + [NOGROUP]),
                          "gid:65534 as the 301st supplementary group")
        self.assertSigned(self.sign("nogroup", 1234, NOGROUP, many),
                          "gid:65534 as the primary group, with 300 supplementary groups")
        self.assertSigned(self.sign("rootonly", 0, 0, many),
                          "uid:0 with 300 supplementary groups")
        self.assertError(self.sign("nogroup", 1234, 1234, many), 403, "forbidden",
                         "300 groups, none of them 65534")

    def test_identity_comes_from_the_socket_not_the_request(self):
        # nothing in the request can claim another identity
        r = self.d.unix_request("POST", "/v1/issuers/rootonly/sign",
                                {"claims": {"aud": AUD, "sub": "0", "uid": 0}},
                                headers={"X-Forwarded-User": "root", "X-Uid": "0",
                                         "Authorization": "Basic cm9vdDo="},
                                as_uid=NOBODY)
        self.assertError(r, 403, "forbidden")

    def test_forbidden_learns_nothing(self):
        # the 403 answer is the same whatever the body: no hint of the issuer's policy
        a = self.assertError(self.sign("rootonly", NOBODY, claims={"aud": AUD}), 403,
                             "forbidden")
        b = self.assertError(self.sign("rootonly", NOBODY, claims={"iat": 5}), 403, "forbidden")
        self.assertEqual(a, b)

    def test_token_signed_for_nobody_verifies(self):
        r = self.assertSigned(self.sign("open", NOBODY))
        jwks = self.d.jwks("open")
        key = [k for k in jwks["keys"] if k["kid"] == r["kid"]]
        self.assertEqual(len(key), 1)
        self.assertTrue(harness.verify_es256(r["token"], key[0]))
        p = json.loads(harness.split_jws(r["token"])[1])
        self.assertEqual(p["iss"], "https://login.example.test/open")

    def test_read_only_paths_for_nobody(self):
        # the socket's other paths are not restricted by allow
        r = self.d.unix_request("GET", "/healthz", as_uid=NOBODY)
        self.assertEqual(r.status, 200, r)


class SocketModeTest(harness.TestCase):
    """With the default mode 0660 (owner root:root) nobody cannot even connect."""

    def test_0660_refuses_others_at_connect(self):
        with harness.Daemon(issuers={"open": {"allow": "*"}}, sign_mode="0660") as d:
            st = os.stat(d.sign_socket)
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
            self.assertEqual(st.st_uid, 0)
            with self.assertRaises(PermissionError) as cm:
                d.sign("open", {"aud": AUD}, as_uid=NOBODY)
            self.assertEqual(cm.exception.errno, errno.EACCES)
            # root still can
            self.assertStillSigns(d, "open", {"aud": AUD})


if __name__ == "__main__":
    harness.main()
