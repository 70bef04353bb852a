#!/usr/bin/python3
"""Files the daemon opens or changes, when someone else put something at their paths (issue 12,
"Files"):

- The PIN file must be a regular file named by its own path: a FIFO there (which would block an
  open() for reading until some writer came), a symbolic link or a directory stops the start at
  once, with a message naming the path and what is there.

Environment (tests/integration/meson.build): TOKENSIGND, P11PROBE, SOFTHSM_MODULE."""

import os
import subprocess
import time

import harness

WAIT_EXIT = 10.0


class PinFile(harness.TestCase):
    def daemon(self):
        d = harness.Daemon()
        self.addCleanup(d.close)
        d.provision()
        return d

    def refused(self, d, *words):
        """The daemon exits promptly, status 1 (not the wrong-PIN status: the token was not
        asked), naming the PIN file and words, never the PIN."""
        t0 = time.monotonic()
        d.spawn()
        try:
            rc = d.proc.wait(WAIT_EXIT)
        except subprocess.TimeoutExpired:
            d.kill()
            self.fail("tokensignd still starting %gs later; log:\n%s" % (WAIT_EXIT, d.log()))
        d.kill()
        log = d.log()
        self.assertEqual(rc, 1, log)
        self.assertLess(time.monotonic() - t0, WAIT_EXIT)
        self.assertIn(d.pin_file, log)
        for w in words:
            self.assertIn(w, log)
        self.assertNotIn(d.pin, log)
        self.assertNotIn("READY=1", log)
        return log

    def test_fifo_does_not_block_the_start(self):
        d = self.daemon()
        os.unlink(d.pin_file)
        os.mkfifo(d.pin_file, 0o600)
        self.refused(d, "FIFO", "not a regular file")

    def test_symlink_is_refused(self):
        d = self.daemon()
        real = os.path.join(d.workdir, "real-pin")
        os.rename(d.pin_file, real)
        os.symlink(real, d.pin_file)
        self.refused(d, "symbolic link")

    def test_directory_is_refused(self):
        d = self.daemon()
        os.unlink(d.pin_file)
        os.mkdir(d.pin_file, 0o700)
        self.refused(d, "directory", "not a regular file")

    def test_regular_file_still_works(self):
        d = self.daemon()
        d.start()
        self.assertStillSigns(d)


if __name__ == "__main__":
    harness.main()
