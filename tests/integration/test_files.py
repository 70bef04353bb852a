#!/usr/bin/python3
"""Files the daemon opens or changes, when someone else put something at their paths (issue 12,
"Files"):

- The PIN file must be a regular file named by its own path: a FIFO there (which would block an
  open() for reading until some writer came), a symbolic link or a directory stops the start at
  once, with a message naming the path and what is there.
- On reload the mode and group of a socket the daemon bound go to that socket file only: a
  symbolic link, or another file, now at the socket's path is left as it is, and the log says
  why. A real socket still gets the new mode.
- A socket file the daemon cannot give its configured group (chown(2) refused: not a member of
  the group, or tokensignd.service's system call filter without its socket units) stops the
  start with a message naming the socket and the way out.
- JOURNAL_STREAM counts only when its DEVICE:INODE are those of stderr: forged (or inherited
  by a process whose stderr goes elsewhere), log lines and audit records stay plain lines on
  stderr, where whoever started the daemon collects them.

Environment (tests/integration/meson.build): TOKENSIGND, P11PROBE, SOFTHSM_MODULE."""

import json
import os
import shutil
import signal
import stat
import subprocess
import time

import harness

WAIT_EXIT = 10.0
WAIT_LOG = 30.0


def start_refused(test, d):
    """Starts d, which must exit within WAIT_EXIT with status 1 before READY=1; its log."""
    d.spawn()
    try:
        rc = d.proc.wait(WAIT_EXIT)
    except subprocess.TimeoutExpired:
        d.kill()
        test.fail("tokensignd still starting %gs later; log:\n%s" % (WAIT_EXIT, d.log()))
    d.kill()
    log = d.log()
    test.assertEqual(rc, 1, log)
    test.assertNotIn("READY=1", log)
    return log


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
        log = start_refused(self, d)
        self.assertLess(time.monotonic() - t0, WAIT_EXIT)
        self.assertIn(d.pin_file, log)
        for w in words:
            self.assertIn(w, log)
        self.assertNotIn(d.pin, log)
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


def wait_log(d, text, after=0):
    """Waits until text is in the daemon's log past offset after; returns the log."""
    deadline = time.monotonic() + WAIT_LOG
    while time.monotonic() < deadline:
        log = d.log()
        if text in log[after:]:
            return log
        time.sleep(0.05)
    raise AssertionError("no %r in the log within %gs:\n%s" % (text, WAIT_LOG, d.log()))


class SocketAttrs(harness.TestCase):
    def setUp(self):
        self.d = harness.Daemon(sign_mode="0660")
        self.addCleanup(self.d.close)
        self.d.start()

    def reload(self, mode):
        self.d.sign_mode = mode
        self.d.write_config()
        before = len(self.d.log())
        self.d.proc.send_signal(signal.SIGHUP)
        return wait_log(self.d, "reload: done", before)[before:]

    def victim(self):
        path = os.path.join(self.d.workdir, "victim")
        with open(path, "w") as f:
            f.write("secret\n")
        os.chmod(path, 0o600)
        return path

    def mode(self, path, follow=True):
        st = os.stat(path) if follow else os.lstat(path)
        return stat.S_IMODE(st.st_mode)

    def test_mode_change_applies_to_the_socket(self):
        self.assertEqual(self.mode(self.d.sign_socket), 0o660)
        self.reload("0600")
        self.assertTrue(stat.S_ISSOCK(os.lstat(self.d.sign_socket).st_mode))
        self.assertEqual(self.mode(self.d.sign_socket), 0o600)
        self.assertStillSigns(self.d)

    def test_symlink_at_the_socket_path_is_not_followed(self):
        victim = self.victim()
        os.unlink(self.d.sign_socket)
        os.symlink(victim, self.d.sign_socket)
        log = self.reload("0666")
        self.assertEqual(self.mode(victim), 0o600, "the reload chmod-ed the link's target")
        self.assertIn("cannot set mode or group of %s" % self.d.sign_socket, log)
        self.assertIn("symbolic link", log)
        self.assertTrue(os.path.islink(self.d.sign_socket))

    def test_other_file_at_the_socket_path_is_left_alone(self):
        os.unlink(self.d.sign_socket)
        victim = self.d.sign_socket
        with open(victim, "w") as f:
            f.write("not a socket\n")
        os.chmod(victim, 0o600)
        log = self.reload("0666")
        self.assertEqual(self.mode(victim), 0o600)
        self.assertIn("not a socket", log)


class GroupDaemon(harness.Daemon):
    """The sign socket has a group: nogroup, which every Debian system has."""

    def config_text(self):
        return super().config_text().replace("mode = %s\n" % self.sign_mode,
                                             "mode = %s\ngroup = nogroup\n" % self.sign_mode, 1)


class ChownRefusedDaemon(GroupDaemon):
    """strace makes every fchownat(2) fail with EPERM, as the packaged unit's system call
    filter does without own-sockets-drop-in.conf.example."""

    def spawn(self):
        wrapper = os.path.join(self.workdir, "refuse-chown")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec %s -f -qq -o /dev/null -e trace=fchownat "
                    "-e inject=fchownat:error=EPERM -- %s \"$@\"\n"
                    % (shutil.which("strace"), harness.tokensignd_path()))
        os.chmod(wrapper, 0o755)
        self.binary = wrapper
        return super().spawn()


class SocketGroup(harness.TestCase):
    def test_group_refused_stops_the_start_and_names_the_way_out(self):
        if not shutil.which("strace"):
            self.skipTest("strace not installed")
        d = ChownRefusedDaemon()
        self.addCleanup(d.close)
        log = start_refused(self, d)
        self.assertIn("cannot listen on %s: not permitted to give it its group" % d.sign_socket,
                      log)
        self.assertIn("own-sockets-drop-in.conf.example", log)

    def test_group_given_when_permitted(self):
        d = GroupDaemon()
        self.addCleanup(d.close)
        d.start()
        self.assertEqual(os.stat(d.sign_socket).st_gid, 65534)
        self.assertStillSigns(d)


class JournalStream(harness.TestCase):
    def daemon(self, value):
        d = harness.Daemon()
        self.addCleanup(d.close)
        if callable(value):
            # the log file exists before the start: its inode is what stderr will be
            open(d.log_path, "ab").close()
            st = os.stat(d.log_path)
            value = value(st)
        d.env["JOURNAL_STREAM"] = value
        return d

    def check_plain(self, d):
        d.start()
        self.assertStillSigns(d)
        d.stop()
        lines = d.log().splitlines()
        self.assertIn("tokensignd: notice: ready: 1 issuer(s)", lines)
        self.assertFalse([l for l in lines if l.startswith("<")], "journal-style lines")
        signed = [json.loads(l) for l in lines if l.startswith('{"event":"signed"')]
        self.assertEqual(len(signed), 1, "the audit record went elsewhere:\n" + d.log())
        self.assertEqual(signed[0]["issuer"], "main")

    def test_forged_stream_is_ignored(self):
        self.check_plain(self.daemon("1:1"))

    def test_stream_of_another_file_is_ignored(self):
        # an inherited JOURNAL_STREAM: a real device and inode, but not stderr's
        self.check_plain(self.daemon(lambda st: "%d:%d" % (st.st_dev, st.st_ino + 1)))

    def test_garbage_is_ignored(self):
        self.check_plain(self.daemon("journal"))

    def test_stream_that_is_stderr_is_the_journal(self):
        d = self.daemon(lambda st: "%d:%d" % (st.st_dev, st.st_ino))
        d.start()
        d.stop()
        self.assertIn("<5>ready: 1 issuer(s)", d.log().splitlines())


if __name__ == "__main__":
    harness.main()
