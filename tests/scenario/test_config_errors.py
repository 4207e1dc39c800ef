#!/usr/bin/env python3
"""Configuration errors, as an operator meets them: every error class names
`file:line:` and exits with status 78 (EX_CONFIG), both through
`tgrunnerd -n -c FILE` (ExecStartPre) and through a normal start; the token
file's problems exit 78 without echoing its content; `-n` accepts a valid
file ("configuration OK"), `-n -v` prints the effective configuration in a
form that reads back, and the installed example file passes `-n`.

No fake Bot API is needed: every start here must fail before any network
traffic (api_url points to a closed loopback port anyway).  About 10 s
(3 s of it the known-bug test of a NUL byte in the token file).
"""

import os
import re
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase			# noqa: E402

EX_CONFIG = 78
RUN_TIMEOUT = 10	# a normal start that does not fail would hang: kill it


class ConfigErrors(ScenarioCase):

    needs = ("tgrunnerd",)

    def setUp(self):
        super().setUp()
        self.token_path = os.path.join(self.tmp, "token")
        with open(self.token_path, "w") as f:
            f.write(tgtest.DEFAULT_TOKEN + "\n")
        os.chmod(self.token_path, 0o600)
        self.state = os.path.join(self.tmp, "state")
        self.base = [
            "# tgrunner.conf written by test_config_errors.py",
            "api_url = http://127.0.0.1:9",
            "token_file = %s" % self.token_path,
            "state_dir = %s" % self.state,
            "worker_command = /bin/true",
        ]

    # -- helpers -------------------------------------------------------------

    def write(self, lines, name="tgrunner.conf"):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def run_daemon(self, args, timeout=RUN_TIMEOUT):
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "CREDENTIALS_DIRECTORY",
                            "WATCHDOG_USEC", "WATCHDOG_PID")}
        try:
            p = subprocess.run([tgtest.daemon_path()] + args,
                               stdin=subprocess.DEVNULL, capture_output=True,
                               env=env, cwd=self.tmp, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            self.fail("tgrunnerd %s did not exit within %ds (it started?)\n"
                      "stderr: %s" % (" ".join(args), timeout,
                                      (e.stderr or b"").decode("utf-8",
                                                               "replace")))
        return (p.returncode, p.stdout.decode("utf-8", "replace"),
                p.stderr.decode("utf-8", "replace"))

    def assertConfigError(self, lines, line, msg_rx, start_too=True):
        """Both -n and a normal start exit 78 with `path:line: msg` on
        stderr (line None: `path: msg`).  Returns the message."""
        path = self.write(lines)
        prefix = "%s:%d: " % (path, line) if line is not None \
            else "%s: " % path
        modes = [["-n", "-c", path]]
        if start_too:
            modes.append(["-c", path])
        for args in modes:
            rc, out, err = self.run_daemon(args)
            what = "tgrunnerd %s\nfile:\n%s\nstderr: %r" % (
                " ".join(args), "\n".join(lines), err)
            self.assertEqual(rc, EX_CONFIG, what)
            self.assertNotIn("configuration OK", out, what)
            first = err.splitlines()[0] if err else ""
            self.assertTrue(first.startswith(prefix),
                            "expected %r at the start of stderr\n%s"
                            % (prefix, what))
            self.assertRegex(first[len(prefix):], msg_rx, what)
            # no state was created by a start that failed on its config
            self.assertFalse(os.path.exists(self.state), what)
        return first[len(prefix):]

    def bad(self, extra, msg_rx):
        """One bad line appended to the valid base."""
        lines = self.base + list(extra)
        return self.assertConfigError(lines, len(self.base) + len(extra),
                                      msg_rx)

    # -- the happy paths -----------------------------------------------------

    def test_valid_file_ok(self):
        path = self.write(self.base + ["workers = 3"])
        rc, out, err = self.run_daemon(["-n", "-c", path])
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "%s: configuration OK\n" % path)
        self.assertEqual(err, "")

    def test_verbose_prints_effective_config(self):
        path = self.write(self.base + [
            "workers = 7",
            "session_key = chat,user",
            "allowed_updates = [\"message\", \"callback_query\"]",
            "update_timeout = 90s",
            "max_attempts = 5"])
        rc, out, err = self.run_daemon(["-n", "-v", "-c", path])
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.endswith("%s: configuration OK\n" % path), out)
        conf = {}
        for l in out.splitlines():
            m = re.match(r"(\w+) =(?: (.*))?$", l)
            if m:
                conf[m.group(1)] = m.group(2) or ""
        # what the file says, normalised
        self.assertEqual(conf.get("workers"), "7", out)
        self.assertEqual(conf.get("session_key"), "chat, user", out)
        self.assertEqual(conf.get("allowed_updates"),
                         "message, callback_query", out)
        self.assertEqual(conf.get("update_timeout"), "90s", out)
        self.assertEqual(conf.get("max_attempts"), "5", out)
        self.assertEqual(conf.get("token_file"), self.token_path, out)
        # defaults for what it does not say; every option is listed
        self.assertEqual(conf.get("max_pending"), "10000", out)
        self.assertEqual(conf.get("journal_fsync"), "batch", out)
        self.assertTrue(conf.get("control_socket", "").endswith(
            "/tgrunner/control.sock"), out)
        self.assertGreaterEqual(len(conf), 25, out)
        # the token itself is never printed
        self.assertNotIn(tgtest.DEFAULT_TOKEN.split(":")[1], out + err)
        # it reads back to the same effective configuration
        body = [l for l in out.splitlines() if "configuration OK" not in l]
        again = self.write(body, "effective.conf")
        rc2, out2, err2 = self.run_daemon(["-n", "-v", "-c", again])
        self.assertEqual(rc2, 0, err2)
        strip = lambda t: [l for l in t.splitlines()		# noqa: E731
                           if not l.startswith("#") and "configuration OK"
                           not in l]
        self.assertEqual(strip(out2), strip(out))

    def test_installed_example_passes(self):
        example = os.path.join(tgtest.SRCDIR, "examples", "tgrunner.conf")
        rc, out, err = self.run_daemon(["-n", "-c", example])
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "%s: configuration OK\n" % example)

    # -- one test per error class -------------------------------------------

    def test_unknown_option_did_you_mean(self):
        self.bad(["worker_comand = /bin/true"],
                 r"^unknown option 'worker_comand' \(did you mean "
                 r"'worker_command'\?\)$")
        self.bad(["max_atempts = 3"],
                 r"did you mean 'max_attempts'\?")

    def test_unknown_option_without_suggestion(self):
        msg = self.bad(["frobnicate = 1"], r"^unknown option 'frobnicate'$")
        self.assertNotIn("did you mean", msg)

    def test_bad_integer(self):
        self.bad(["workers = four"],
                 r"^workers: expected an integer between 0 and 1024, "
                 r"got 'four'$")
        self.bad(["max_pending = 10k"], r"^max_pending: expected an integer")
        self.bad(["workers = 3.5"], r"^workers: expected an integer")

    def test_out_of_range(self):
        self.bad(["workers = 5000"],
                 r"^workers: expected an integer between 0 and 1024, "
                 r"got '5000'$")
        self.bad(["max_attempts = 0"],
                 r"^max_attempts: expected an integer between 1 and 100")
        self.bad(["update_timeout = 25h"],
                 r"^update_timeout: expected a duration between 100ms and "
                 r"24h")
        self.bad(["workers = 99999999999999999999999"],
                 r"^workers: expected an integer")

    def test_bad_duration(self):
        self.bad(["update_timeout = 10 parsecs"],
                 r"^update_timeout: expected a duration between 100ms and "
                 r"24h \(units ms, s, m, h\), got '10 parsecs'$")
        self.bad(["kill_grace = -1s"], r"^kill_grace: expected a duration")
        self.bad(["poll_timeout = 1500ms"],
                 r"^poll_timeout: expected whole seconds, got '1500ms'$")

    def test_bad_bool(self):
        self.bad(["delete_webhook = maybe"],
                 r"^delete_webhook: expected yes or no .*got 'maybe'$")

    def test_bad_enum(self):
        self.bad(["journal_fsync = sometimes"],
                 r"^journal_fsync: expected one of always, batch, off, got "
                 r"'sometimes'$")
        self.bad(["log_level = verbose"],
                 r"^log_level: expected one of err, warn, notice, info, "
                 r"debug, got 'verbose'$")
        self.bad(["session_key = chat, thread"], r"^session_key: expected")

    def test_duplicate_option(self):
        lines = self.base + ["workers = 2", "# a comment", "workers = 4"]
        n = len(self.base)
        self.assertConfigError(lines, n + 3,
                               r"^workers: duplicate option \(first set on "
                               r"line %d\)$" % (n + 1))

    def test_section_line(self):
        lines = self.base[:2] + ["[tgrunner]"] + self.base[2:]
        self.assertConfigError(lines, 3, r"^sections are not supported")

    def test_colon_syntax(self):
        self.bad(["workers: 4"], r"^expected 'option = value'$")

    def test_bad_value_is_quoted_bounded_and_printable(self):
        msg = self.bad(["workers = \x1b[31m" + "9" * 200],
                       r"^workers: expected an integer")
        self.assertNotIn("\x1b", msg)
        self.assertLess(len(msg), 200, msg)

    def test_missing_file(self):
        path = os.path.join(self.tmp, "nope.conf")
        for args in (["-n", "-c", path], ["-c", path]):
            rc, out, err = self.run_daemon(args)
            self.assertEqual(rc, EX_CONFIG, err)
            self.assertEqual(err.splitlines()[0],
                             "%s: cannot open: No such file or directory"
                             % path)

    def test_endless_file(self):
        """-c /dev/zero: a clear error at once, not memory growing until
        the kernel kills the daemon (a line is never read past its bound,
        a file never past 1 MiB)."""
        for args in (["-n", "-c", "/dev/zero"], ["-c", "/dev/zero"]):
            rc, out, err = self.run_daemon(args, timeout=10)
            self.assertEqual(rc, EX_CONFIG, err)
            self.assertEqual(err.splitlines()[0],
                             "/dev/zero:1: NUL byte in line")
        lines = self.base + ["# %s" % ("x" * 70)] * 16000
        path = self.write(lines)
        rc, out, err = self.run_daemon(["-n", "-c", path], timeout=10)
        self.assertEqual(rc, EX_CONFIG, err)
        self.assertRegex(err.splitlines()[0], r"^%s:\d+: the file is larger "
                         r"than 1048576 bytes: not a configuration file$"
                         % re.escape(path))

    def test_obsolete_option_warns(self):
        """worker_token_env is gone: a file that sets it still loads, and
        the warning names the line."""
        path = self.write(self.base + ["worker_token_env = yes"])
        rc, out, err = self.run_daemon(["-n", "-c", path])
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "%s: configuration OK\n" % path)
        self.assertRegex(err, r"^%s:%d: worker_token_env: obsolete and "
                         r"ignored: workers never get the bot token"
                         % (re.escape(path), len(self.base) + 1))

    def test_cross_option(self):
        lines = self.base + ["backoff_max = 2s", "log_level = info",
                             "backoff_min = 5s"]
        n = len(self.base)
        # named on the line of the option set later in the file
        self.assertConfigError(lines, n + 3,
                               r"^backoff_min \(5s\) must not exceed "
                               r"backoff_max \(2s\)$")
        lines = [l for l in self.base if not l.startswith("worker_command")]
        lines += ["workers = 3"]
        self.assertConfigError(lines, len(lines),
                               r"^worker_command is required when "
                               r"workers > 0 \(workers = 3\)$")

    # -- the token file: only a normal start reads it --------------------------

    def test_missing_token_file(self):
        missing = os.path.join(self.tmp, "no-token")
        lines = [l for l in self.base if not l.startswith("token_file")]
        path = self.write(lines + ["token_file = %s" % missing])
        rc, out, err = self.run_daemon(["-c", path])
        self.assertEqual(rc, EX_CONFIG, err)
        self.assertIn("token file %s: No such file or directory" % missing,
                      err)
        self.assertFalse(os.path.exists(self.state), err)

    def test_no_token_configured(self):
        lines = [l for l in self.base if not l.startswith("token_file")]
        path = self.write(lines)
        rc, out, err = self.run_daemon(["-c", path])
        self.assertEqual(rc, EX_CONFIG, err)
        self.assertIn("no bot token", err)

    def test_garbage_token_not_echoed(self):
        secret = "SeCrEtPaRt"
        for content in ("123456:%s with-a-blank\n" % secret,
                        "%s\n" % secret,
                        "bot123456:%s\n" % secret,
                        "\n"):
            with self.subTest(content=content):
                shutil.rmtree(self.state, True)
                with open(self.token_path, "w") as f:
                    f.write(content)
                path = self.write(self.base)
                rc, out, err = self.run_daemon(["-c", path])
                self.assertEqual(rc, EX_CONFIG, err)
                self.assertIn("token file %s: does not hold a bot token"
                              % self.token_path, err)
                self.assertNotIn(secret, out + err)
                self.assertNotIn("123456", out + err)
                self.assertFalse(os.path.exists(self.state), err)

    def test_token_with_nul_byte(self):
        """A NUL byte in the token file is refused, not cut at (regression:
        token_load() used strlen() on what it read)."""
        with open(self.token_path, "wb") as f:
            f.write(b"123456:SeCrEtPaRt\x00 garbage\n")
        path = self.write(self.base)
        rc, out, err = self.run_daemon(["-c", path])
        self.assertEqual(rc, EX_CONFIG, err)
        self.assertNotIn("SeCrEtPaRt", out + err)

    def test_check_does_not_need_the_token(self):
        """-n checks the file, not the token (documented behaviour: the
        token may only be readable by the service)."""
        lines = [l for l in self.base if not l.startswith("token_file")]
        path = self.write(lines + ["token_file = /nonexistent/token"])
        rc, out, err = self.run_daemon(["-n", "-c", path])
        self.assertEqual(rc, 0, err)


if __name__ == "__main__":
    tgtest.main()
