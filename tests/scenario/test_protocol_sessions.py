#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""The session rules of the worker protocol against the real daemon.

Every proto/vectors/sessions/*.session is played by this test as an
external worker (the `listen` socket) against tgrunnerd and the fake Bot
API, each with a fresh daemon: the test sends the worker's lines and checks
the daemon's frames, its log and whether it keeps or drops the connection
(the format is in proto/vectors/README).  Every daemon frame must also pass
the daemon's own decoder (tests/conformance/tgrunner-framecheck).

Also here, because they need spawned workers: what the log says about a
worker whose hello is refused (refused, with the reason; back-off; the
give-up message names it), and that the updates of a worker that was cut
off are not reported as timed out afterwards.  About 60 s.
"""

import glob
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase			# noqa: E402

SESSIONS = os.path.join(tgtest.SRCDIR, "proto", "vectors", "sessions")
FRAMECHECK = tgtest.build_path(os.path.join("tests", "conformance",
                                            "tgrunner-framecheck"))
FRAME_TIMEOUT = 20.0		# s for an expected daemon frame
CLOSE_TIMEOUT = 10.0		# s for the daemon to drop the connection


class SessionError(AssertionError):
    pass


class FrameCheck:
    """tgrunner-framecheck as a co-process: proto_decode's verdict."""

    def __init__(self):
        self.p = subprocess.Popen([FRAMECHECK], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE)

    def judge(self, direction, line):
        self.p.stdin.write(b"%s %d\n" % (direction.encode(), len(line)) +
                           line)
        self.p.stdin.flush()
        return self.p.stdout.readline().decode().rstrip("\n")

    def close(self):
        self.p.stdin.close()
        self.p.stdout.close()
        self.p.wait()


def _same(pat, got):
    """got has every member of pat with an equal value (objects compared
    the same way, everything else exactly, true is not 1)."""
    if isinstance(pat, dict):
        return isinstance(got, dict) and all(
            k in got and _same(v, got[k]) for k, v in pat.items())
    return type(pat) is type(got) and pat == got


class Conn:
    """One connection to the daemon's listen socket, as a worker."""

    def __init__(self, path, check):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.buf = b""
        self.eof = False
        self.broken = False		# a send failed: the daemon hung up
        self.check = check

    def send(self, data):
        try:
            self.s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.broken = True

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.s.settimeout(left)
        try:
            data = self.s.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
        self.buf += data
        return True

    def frame(self, timeout, what):
        """The next daemon frame, decoded and judged, or SessionError."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.eof:
                raise SessionError("connection closed while waiting for "
                                   "%s" % what)
            if not self._fill(deadline):
                raise SessionError("no frame within %.0f s, waiting for %s"
                                   % (timeout, what))
        line, self.buf = self.buf.split(b"\n", 1)
        verdict = self.check.judge("d2w", line)
        if not verdict.startswith("ok "):
            raise SessionError("the daemon sent a frame its own decoder "
                               "refuses (%s): %r" % (verdict, line[:300]))
        return json.loads(line)

    def wait_closed(self, timeout):
        deadline = time.monotonic() + timeout
        while not self.eof:
            if b"\n" in self.buf:
                line = self.buf.split(b"\n", 1)[0]
                raise SessionError("expected the connection to close, got "
                                   "%r" % line[:300])
            if not self._fill(deadline):
                raise SessionError("the connection is still open %.0f s "
                                   "later" % timeout)
        if self.buf:
            raise SessionError("expected the connection to close, got %r"
                               % self.buf[:300])

    def close(self):
        self.s.close()


def parse_session(path):
    """(config dict, number of updates, [(lineno, directive, arg)])."""
    config, nupdates, steps = {}, 0, []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw[:-1] if raw.endswith("\n") else raw
            if not line.strip() or line.startswith("#"):
                continue
            # the worker's lines are sent exactly, spaces and all
            m = re.match(r"(>|>crlf|>pad \d+)(?: (.*))?\Z", line)
            if m:
                steps.append((lineno, m.group(1), m.group(2) or ""))
                continue
            word, _, arg = line.partition(" ")
            if word == "config":
                for kv in arg.split():
                    k, _, v = kv.partition("=")
                    config[k] = v
            elif word == "updates":
                nupdates = int(arg)
            elif word in ("<", "log", "closed", "open", "connect"):
                steps.append((lineno, word, arg))
            else:
                raise ValueError("%s:%d: unknown directive %r"
                                 % (path, lineno, word))
    return config, nupdates, steps


def message(chat):
    return {"message": {"message_id": 1, "date": 1700000000,
                        "chat": {"id": chat, "type": "private"},
                        "from": {"id": chat, "is_bot": False,
                                 "first_name": "u"},
                        "text": "session"}}


def pad(template, total):
    """template with its one "@" replaced by x's: total bytes with LF."""
    head, tail = template.encode().split(b"@")
    return head + b"x" * (total - 1 - len(head) - len(tail)) + tail + b"\n"


class Sessions(ScenarioCase):

    needs = ScenarioCase.needs + ("tests/conformance/tgrunner-framecheck",)

    def setUp(self):
        super().setUp()
        self.check = FrameCheck()
        self.addCleanup(self.check.close)

    def play(self, path):
        config, nupdates, steps = parse_session(path)
        name = os.path.basename(path)
        fake = self.start_fake()
        sock = os.path.join(self.subdir(name), "workers.sock")
        conf = dict(workers=0, listen=sock, hello_timeout="5s")
        conf.update(config)
        d = self.start_daemon(fake, name=name, **conf)
        ids = self.inject(fake, [message(1000 + i) for i in
                                 range(nupdates)]) if nupdates else []

        def subst(text):
            return re.sub(r"\$(\d+)", lambda m: str(ids[int(m.group(1)) - 1]),
                          text)

        conn = Conn(sock, self.check)
        try:
            for lineno, word, arg in steps:
                where = "%s:%d" % (name, lineno)
                try:
                    conn = self.step(d, conn, sock, word, subst(arg))
                except (SessionError, AssertionError) as e:
                    raise AssertionError("%s: %s: %s\n%s" % (
                        where, word, e, d.log_tail())) from None
        finally:
            conn.close()
        self.assertTrue(d.running(), d.log_tail())
        self.assertEqual(d.stop(), 0, d.log_tail())

    def step(self, d, conn, sock, word, arg):
        if word == ">":
            conn.send(arg.encode() + b"\n")
        elif word == ">crlf":
            conn.send(arg.encode() + b"\r\n")
        elif word.startswith(">pad "):
            conn.send(pad(arg, int(word.split()[1])))
        elif word == "<":
            want = json.loads(arg)
            got = conn.frame(FRAME_TIMEOUT, arg)
            if not _same(want, got):
                raise SessionError("got %s" % json.dumps(got)[:300])
        elif word == "log":
            d.wait_log(arg, timeout=FRAME_TIMEOUT)
        elif word == "closed":
            conn.wait_closed(CLOSE_TIMEOUT)
        elif word == "open":
            if conn.broken:
                raise SessionError("the daemon hung up")
            conn.send(b'{"type":"call","id":0,"ref":"open?",'
                      b'"method":"getMe"}\n')
            got = conn.frame(FRAME_TIMEOUT, "the result of a call "
                             "(is the connection still open?)")
            if not _same({"type": "result", "ref": "open?", "ok": True},
                         got):
                raise SessionError("got %s" % json.dumps(got)[:300])
        elif word == "connect":
            conn.close()
            conn = Conn(sock, self.check)
        return conn

    def test_sessions(self):
        paths = sorted(glob.glob(os.path.join(SESSIONS, "*.session")))
        self.assertGreaterEqual(len(paths), 15, SESSIONS)
        for path in paths:
            with self.subTest(session=os.path.basename(path)):
                self.play(path)

    # -- what the log says about spawned workers --------------------------

    def python_command(self, name, code):
        """A worker_command running code, written to tmp/name."""
        script = os.path.join(self.tmp, name)
        with open(script, "w") as f:
            f.write(code)
        return "%s %s" % (shlex.quote(sys.executable), shlex.quote(script))

    def test_refused_hello_is_logged_as_refused(self):
        """slots 0 in hello: logged as a refused hello with the reason,
        respawned with back-off, and the give-up line says what the
        workers did (about 13 s of back-off)."""
        fake = self.start_fake()
        cmd = self.python_command(
            "bad-hello.py", "import socket, time\n"
            "s = socket.socket(fileno=3)\n"
            "s.sendall(b'{\"type\":\"hello\",\"protocol\":1,\"slots\":0}"
            "\\n')\n"
            "time.sleep(30)\n")
        t0 = time.monotonic()
        d = self.start_daemon(fake, workers=1, wait=False,
                              worker_command=cmd)
        d.wait_log(r"worker=1 pid=\d+: hello refused: \"slots\" out of "
                   r"range; disconnecting")
        d.wait_log(r"worker=1 pid=\d+: worker exited on signal 9 after "
                   r"hello refused: \"slots\" out of range")
        d.wait_log(r"workers' hello refused: \"slots\" out of range \(1 "
                   r"times in a row\); respawning with back-off")
        m = d.wait_log(r"workers' hello refused: \"slots\" out of range "
                       r"\(8 times in a row\); not starting workers any "
                       r"more: fix worker_command", timeout=60)
        took = time.monotonic() - t0
        self.assertEqual(d.grep(r"exit before hello"), [], d.log_tail())
        # back-off: spawns 3 to 8 waited 100, 200, ... 3200 ms
        starts = d.grep(r"worker=\d+ pid=\d+: started")
        self.assertEqual(len(starts), 8, d.log_tail())
        self.assertGreater(took, 6.3, "no back-off")
        sys.stderr.write("gave up: %s\n" % m.group(0))
        self.assertEqual(d.stop(), 0, d.log_tail())

    def test_cut_off_worker_updates_are_not_timeouts(self):
        """A worker that closes its socket but lives on (ignoring SIGTERM)
        holds its update until it is gone: that update is not cancelled
        or reported as timed out meanwhile, and runs again afterwards."""
        fake = self.start_fake()
        flag = os.path.join(self.tmp, "cut-off-once")
        cmd = self.python_command(
            "cut-off.py", "import json, os, signal, socket, sys, time\n"
            "flag = %r\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "s = socket.socket(fileno=3)\n"
            "s.sendall(b'{\"type\":\"hello\",\"protocol\":1,\"slots\":1}"
            "\\n')\n"
            "r = s.makefile('rb')\n"
            "r.readline()\n"
            "u = json.loads(r.readline())\n"
            "if not os.path.exists(flag):\n"
            "    open(flag, 'w').close()\n"
            "    s.close(); r.close()\n"
            "    time.sleep(60)\n"
            "s.sendall(b'{\"type\":\"done\",\"id\":%%d}\\n' %% u['id'])\n"
            "time.sleep(60)\n" % flag)
        d = self.start_daemon(fake, workers=1, update_timeout="1s",
                              kill_grace="3s", worker_command=cmd)
        [uid] = self.inject(fake, [message(7)])
        d.wait_log(r"update=%d attempt=1: worker exited on signal 9; "
                   r"retrying" % uid, timeout=30)
        tgtest.wait_until(lambda: fake.stats().get("confirmed_offset", 0)
                          > uid, 30, what="update %d done" % uid)
        self.assertEqual(d.grep(r"update=%d attempt=1 timed out|"
                                r"update=%d not answered" % (uid, uid)),
                         [], d.log_tail())


if __name__ == "__main__":
    tgtest.main()
