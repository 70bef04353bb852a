#!/usr/bin/python3
"""Oversized request bodies (issue 12, "Bodies"): a Content-Length over the limit is refused
with 413 before the body is read, on the sign and the admin socket; a chunked body that never
ends is cut off at the limit with 413; and a client still sending its body receives the 413
instead of a reset (the daemon answers, shuts down writing, and drains briefly before it
closes)."""

import json
import os
import select
import socket
import subprocess
import tempfile
import time

import harness

SIGN = "/v1/issuers/main/sign"
MAX_BODY = 65536
BIG = 100 * 1000 * 1000


def connect_unix(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(harness.IO_TIMEOUT)
    s.connect(path)
    return s


def send_until_answer(s, head, chunk_source, limit=BIG, timeout=5.0):
    """Sends head, then chunks from chunk_source() until the server answers (or limit bytes of
    body went out). Returns (answer bytes, body bytes sent, seconds from the end of head to the
    first byte of the answer)."""
    s.sendall(head)
    s.setblocking(False)
    sent, t0, answer = 0, time.monotonic(), b""
    pending = b""
    while time.monotonic() - t0 < timeout:
        want_write = sent < limit
        r, w, _ = select.select([s], [s] if want_write else [], [], 0.05)
        if r:
            break
        if w:
            if not pending:
                pending = chunk_source()
            try:
                n = s.send(pending)
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += n
            pending = pending[n:]
    first = time.monotonic() - t0
    s.setblocking(True)
    s.settimeout(harness.IO_TIMEOUT)
    while True:
        try:
            b = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not b:
            break
        answer += b
    return answer, sent, first


class BodiesTest(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = harness.Daemon()
        cls.admin_sock = harness.add_admin_socket(cls.d).admin_sock
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def tearDown(self):
        self.assertStillSigns(self.d)

    def assert413(self, answer, what):
        self.assertTrue(answer, "%s: no answer at all" % what)
        self.assertError(harness._parse_response(answer), 413, "body_too_large", what)

    def huge_length(self, path, method, url):
        s = connect_unix(path)
        try:
            head = (b"%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % (method, url, BIG))
            answer, sent, first = send_until_answer(s, head, lambda: b"x" * 65536)
        finally:
            s.close()
        self.assert413(answer, url.decode())
        self.assertLess(first, 0.1, "the 413 took %.3fs" % first)
        self.assertLess(sent, 1000 * 1000, "%d body bytes went out before the 413" % sent)

    def test_huge_content_length_on_the_sign_socket(self):
        self.huge_length(self.d.sign_socket, b"POST", SIGN.encode())

    def test_huge_content_length_on_the_admin_socket(self):
        self.huge_length(self.admin_sock, b"POST", b"/v1/issuers/main/rotate")
        # nothing was rotated
        r = harness.unix_http(self.admin_sock, "GET", "/v1/status")
        self.assertEqual(r.status, 200, r)

    def test_endless_chunked_body_is_cut_off(self):
        for path, url in ((self.d.sign_socket, SIGN), (self.admin_sock,
                                                        "/v1/issuers/main/rotate")):
            with self.subTest(url=url):
                s = connect_unix(path)
                try:
                    head = (b"POST %s HTTP/1.1\r\nHost: localhost\r\n"
                            b"Content-Type: application/json\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n" % url.encode())
                    piece = b"1000\r\n" + b"x" * 4096 + b"\r\n"
                    answer, sent, first = send_until_answer(s, head, lambda: piece,
                                                            timeout=10.0)
                finally:
                    s.close()
                self.assert413(answer, url)
                self.assertLess(sent, 1000 * 1000, "%d bytes went out before the 413" % sent)

    def test_clients_still_sending_receive_the_413(self):
        """What curl did: 4 of 200 exited 55 (send failed: reset) with no status."""
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            f.write(json.dumps({"claims": {"aud": "api://orders",
                                           "pad": "x" * 70000}}).encode())
            f.flush()
            failures = []
            for i in range(200):
                r = subprocess.run(
                    ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket",
                     self.d.sign_socket, "-H", "Content-Type: application/json",
                     "-H", "Expect:", "--data-binary", "@" + f.name,
                     "http://localhost" + SIGN],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
                if r.returncode != 0 or r.stdout != "413":
                    failures.append((i, r.returncode, r.stdout, r.stderr.strip()))
        self.assertEqual(failures, [], "%d of 200 did not get a 413" % len(failures))


if __name__ == "__main__":
    harness.main()
