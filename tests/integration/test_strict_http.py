#!/usr/bin/python3
"""Request smuggling shapes on every listener (issue 12, strict parsing): each gets a 400 with
the API's JSON error, the sign socket issues no token for any of them, and a method a path does
not take gets 405 with Allow. libmicrohttpd 0.9.75 accepts all of these by itself; the daemon
checks the raw target and every header in the access handler's first call."""

import json
import os
import socket

import harness

SIGN = "/v1/issuers/main/sign"
JWKS = "/main/.well-known/jwks.json"
BODY = json.dumps({"claims": dict(harness.VALID_CLAIMS)}).encode()


def chunked(data):
    return b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n"


def shapes(method, target, body):
    """name -> raw request bytes. Each would be a valid request (a token, on the sign socket)
    if the server ignored the fault it carries, or read it the way a front end might not."""
    n = len(body)
    head = b"%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" % (method, target)
    ct = b"Content-Type: application/json\r\n"
    return {
        "conflicting content-length":
            head + ct + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (n, n + 5)
            + body + b"XXXXX",
        "repeated content-length":
            head + ct + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (n, n) + body,
        "content-length with chunked":
            head + ct + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % (n + 5)
            + chunked(body),
        "bare CR hides a coding":
            head + ct + b"X-Pad: a\rTransfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n" % n
            + body,
        "control byte in a header value":
            head + ct + b"X-Pad: a\x01b\r\nContent-Length: %d\r\n\r\n" % n + body,
        "DEL in a header value":
            head + ct + b"X-Pad: a\x7fb\r\nContent-Length: %d\r\n\r\n" % n + body,
        "unknown coding":
            head + ct + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + chunked(body),
        "repeated host":
            head + ct + b"Host: other\r\nContent-Length: %d\r\n\r\n" % n + body,
        "%00 in the target":
            b"%s %s%%00 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" % (method, target)
            + ct + b"Content-Length: %d\r\n\r\n" % n + body,
        "%0a in the target":
            b"%s %s%%0a HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" % (method, target)
            + ct + b"Content-Length: %d\r\n\r\n" % n + body,
        "NUL in the target":
            b"%s %s\x00x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" % (method, target)
            + ct + b"Content-Length: %d\r\n\r\n" % n + body,
        "NUL then a version in the target":
            b"%s %s\x00HTTP/1.1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            % (method, target) + ct + b"Content-Length: %d\r\n\r\n" % n + body,
        "control byte in the target":
            b"%s %s\x01 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" % (method, target)
            + ct + b"Content-Length: %d\r\n\r\n" % n + body,
        "broken escape in the target":
            b"%s %s%%g1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" % (method, target)
            + ct + b"Content-Length: %d\r\n\r\n" % n + body,
        "method not a token":
            b"P(ST %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" % target
            + ct + b"Content-Length: %d\r\n\r\n" % n + body,
    }


def exchange(connect, raw):
    """Sends raw, then reads everything until the server closes."""
    s = connect()
    try:
        s.settimeout(harness.IO_TIMEOUT)
        s.sendall(raw)
        out = b""
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            out += b
        return out
    finally:
        s.close()


class StrictHttpTest(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = harness.Daemon()
        cls.admin_sock = harness.add_admin_socket(cls.d).admin_sock
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def unix(self, path):
        def connect():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            return s
        return connect

    def tcp(self):
        return socket.create_connection(("127.0.0.1", self.d.jwks_port),
                                        timeout=harness.IO_TIMEOUT)

    def signed_count(self):
        return self.d.log().count('{"event":"signed"')

    def assertRefused(self, raw_answer, name):
        """One answer, a 400 in the API's error form; nothing after it."""
        self.assertEqual(raw_answer.count(b"HTTP/1."), 1, "%s: %r" % (name, raw_answer))
        r = harness._parse_response(raw_answer)
        self.assertError(r, 400, "bad_request", name)
        self.assertNotIn(b'"token"', raw_answer, name)

    def test_sign_socket_refuses_each_shape_and_signs_nothing(self):
        # the body is good: without the fault each of these would sign
        self.assertStillSigns(self.d)
        before = self.signed_count()
        for name, raw in shapes(b"POST", SIGN.encode(), BODY).items():
            with self.subTest(shape=name):
                self.assertRefused(exchange(self.unix(self.d.sign_socket), raw), name)
        self.assertEqual(self.signed_count(), before, "a smuggling shape issued a token")
        self.assertStillSigns(self.d)

    def test_jwks_port_refuses_each_shape(self):
        for name, raw in shapes(b"GET", JWKS.encode(), b"").items():
            with self.subTest(shape=name):
                self.assertRefused(exchange(self.tcp, raw), name)
        self.assertEqual(self.d.http("GET", JWKS).status, 200)

    def test_admin_socket_refuses_each_shape(self):
        for name, raw in shapes(b"GET", b"/v1/status", b"").items():
            with self.subTest(shape=name):
                self.assertRefused(exchange(self.unix(self.admin_sock), raw), name)
        r = harness.unix_http(self.admin_sock, "GET", "/v1/status")
        self.assertEqual(r.status, 200, r)

    def test_wrong_methods_get_405_with_allow(self):
        cases = [
            (lambda m: self.d.unix_request(m, SIGN, body=BODY), ["GET", "PUT", "DELETE", "PATCH"],
             "POST"),
            (lambda m: self.d.http(m, JWKS), ["POST", "PUT", "DELETE", "OPTIONS"], "GET, HEAD"),
            (lambda m: harness.unix_http(self.admin_sock, m, "/v1/issuers/main/rotate"),
             ["GET", "PUT", "DELETE", "PATCH"], "POST"),
        ]
        for send, methods, allow in cases:
            for m in methods:
                with self.subTest(method=m, allow=allow):
                    r = send(m)
                    self.assertError(r, 405, "method_not_allowed")
                    self.assertEqual(r.headers.get("allow"), allow)

    def test_admin_verbs_do_nothing_for_another_method(self):
        # issue 12: rotate and revoke answered GET with 405 but were carried out for PUT,
        # DELETE and PATCH. Each now gets 405 and the keys stay exactly as they were.
        def keys():
            r = harness.unix_http(self.admin_sock, "GET", "/v1/keys")
            self.assertEqual(r.status, 200, r)
            return r.json()["keys"]

        before = keys()
        kid = before[0]["kid"]
        for path in ("/v1/issuers/main/rotate", "/v1/issuers/main/keys/%s/revoke" % kid):
            for m in ("PUT", "DELETE", "PATCH"):
                with self.subTest(path=path, method=m):
                    r = harness.unix_http(self.admin_sock, m, path, body={"now": True})
                    self.assertError(r, 405, "method_not_allowed")
                    self.assertEqual(r.headers.get("allow"), "POST")
        self.assertEqual(keys(), before)

    def test_ordinary_requests_still_pass(self):
        # escapes of printable characters, a query, tabs and obs-text in values are fine
        r = self.d.http("GET", "/m%61in/.well-known/jwks.json", headers={
            "X-Note": "a\tb \xe9"})
        self.assertEqual(r.status, 200, r)
        # a chunked body alone is fine (the coding name is case-insensitive)
        raw = (b"POST %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
               b"Content-Type: application/json\r\nTransfer-Encoding: Chunked\r\n\r\n"
               % SIGN.encode()) + chunked(BODY)
        self.assertSigned(harness._parse_response(
            exchange(self.unix(self.d.sign_socket), raw)))


if __name__ == "__main__":
    harness.main()
