#!/usr/bin/python3
"""The whole-request deadline (issue 12, "Deadlines"), scaled down: with request-timeout 3s,
slowloris connections that send one header byte every half second, and so never fall idle,
are closed by the daemon within a few seconds on the JWKS port and the sign socket, while
signing goes on; a keep-alive client that completes its requests is not disturbed."""

import socket
import time

import harness

TIMEOUT = 3
SLOW = 60  # connections per listener


class DeadlineDaemon(harness.Daemon):
    def config_text(self):
        lines = super().config_text().split("\n")
        lines.insert(lines.index("[sign]") + 1, "request-timeout = %ds" % TIMEOUT)
        lines.insert(lines.index("[jwks]") + 1, "request-timeout = %ds" % TIMEOUT)
        lines.insert(lines.index("[jwks]") + 1, "max-connections-per-address = 200")
        return "\n".join(lines)


class DeadlineTest(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = DeadlineDaemon()
        harness.start_or_close(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def slow_clients(self):
        conns = []
        for _ in range(SLOW):
            s = socket.create_connection(("127.0.0.1", self.d.jwks_port), timeout=2)
            s.sendall(b"GET /main/.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            conns.append(s)
        for _ in range(SLOW):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect(self.d.sign_socket)
            s.sendall(b"POST /v1/issuers/main/sign HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            conns.append(s)
        return conns

    def test_slowloris_is_cut_off(self):
        conns = self.slow_clients()
        start = time.monotonic()
        closed_at = {}
        try:
            while len(closed_at) < len(conns) and time.monotonic() - start < 4 * TIMEOUT:
                for i, s in enumerate(conns):
                    if i in closed_at:
                        continue
                    try:
                        s.sendall(b"a")  # one byte: never idle
                        s.setblocking(False)
                        if s.recv(1024) == b"":
                            closed_at[i] = time.monotonic() - start
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed_at[i] = time.monotonic() - start
                    finally:
                        s.setblocking(True)
                # signing is unaffected meanwhile
                self.assertSigned(self.d.sign("main", dict(harness.VALID_CLAIMS)))
                time.sleep(0.5)
        finally:
            for s in conns:
                s.close()
        self.assertEqual(len(closed_at), len(conns),
                         "%d of %d slow connections still open after %ds"
                         % (len(conns) - len(closed_at), len(conns), 4 * TIMEOUT))
        self.assertLessEqual(max(closed_at.values()), TIMEOUT + 2.5, closed_at)
        self.assertStillSigns(self.d)

    def test_keep_alive_requests_are_not_cut(self):
        """Each request completes well inside the deadline; the connection lives longer."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(self.d.sign_socket)
        try:
            start = time.monotonic()
            while time.monotonic() - start < TIMEOUT + 2:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while not data.endswith(b"}"):
                    b = s.recv(4096)
                    self.assertTrue(b, "the daemon closed a keep-alive connection")
                    data += b
                self.assertIn(b" 200 ", data.split(b"\r\n")[0])
                time.sleep(0.5)
        finally:
            s.close()


if __name__ == "__main__":
    harness.main()
