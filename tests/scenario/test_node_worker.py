#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""The Node.js worker library (worker-sdk/node) under the real tgrunnerd.

Runs the library's unit tests (node --test), then its examples as the
daemon's workers against the fake Bot API: 500 echoes over 20 chats come
back in per-chat order, a ctx.call('getMe') round trip, the token never
reaches a worker (environment, command line, frames), slots are really
concurrent, and the protocol conformance tool (if present) passes against
examples/conformance.js.  Skipped (77) without node >= 18 on PATH.
Run time: about 15 s on an idle machine, 30 s under load.
"""

import collections
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase, wait_until	# noqa: E402

NODE = shutil.which("node")
SDK = os.path.join(tgtest.SRCDIR, "worker-sdk", "node")
ECHO = os.path.join(SDK, "examples", "echo.js")
CONFORMANCE_WORKER = os.path.join(SDK, "examples", "conformance.js")
CONFORMANCE_TOOL = os.path.join(tgtest.SRCDIR, "tests", "conformance",
                                "tgrunner-conformance")
SECRET = "987654:NODE-SECRET-TOKEN-xyzzy"


def node_major():
    try:
        out = subprocess.run([NODE, "--version"], capture_output=True,
                             text=True, timeout=10).stdout
        return int(re.match(r"v(\d+)", out).group(1))
    except (OSError, ValueError, AttributeError, subprocess.SubprocessError):
        return 0


def node_cmd(script):
    return "%s %s" % (shlex.quote(NODE), shlex.quote(script))


def message(chat, text):
    return {"message": {"message_id": 1, "date": 1700000000,
                        "chat": {"id": chat, "type": "private"},
                        "from": {"id": chat, "is_bot": False,
                                 "first_name": "U"},
                        "text": text}}


class NodeWorker(ScenarioCase):

    def daemon(self, fake, script, workers=2, env=None, **kw):
        """tgrunnerd running `node script` workers; waits until every
        worker said hello."""
        d = self.start_daemon(fake, workers=workers,
                              worker_command=node_cmd(script),
                              worker_env=env or {}, **kw)
        wait_until(lambda: len(d.grep(r"worker=\d+ pid=\d+: hello slots="))
                   >= workers, 30, what="%d node workers' hello" % workers)
        return d

    def replies(self, fake, n, timeout=60.0):
        """Wait for n sendMessage calls at the fake; return them all."""
        try:
            return wait_until(lambda: (lambda c: len(c) >= n and c)(
                fake.calls(method="sendMessage")), timeout,
                what="%d sendMessage calls" % n)
        except AssertionError as e:
            raise AssertionError("%s (got %d)" % (
                e, len(fake.calls(method="sendMessage"))))

    def stop_clean(self, d):
        rc = d.stop()
        self.assertEqual(rc, 0, "daemon exit status %s\n%s"
                         % (rc, d.log_tail()))
        self.assertNoLeftovers(d)
        # each worker drained and exited 0 (a crash or a kill is logged
        # as "worker exited with status N / on signal N")
        self.assertEqual(d.grep(r"protocol error|worker exited (with|on)"),
                         [], d.log_tail())
        self.assertTrue(d.grep(r"worker=\d+ pid=\d+: exited$"),
                        d.log_tail())

    # -- the library's own tests ---------------------------------------------

    def test_1_unit_tests(self):
        t0 = time.monotonic()
        # test/vectors.test.js reads the protocol's test vectors
        p = subprocess.run([NODE, "--test", "test/"], cwd=SDK,
                           capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, TGRUNNER_VECTORS=os.path.join(
                               tgtest.SRCDIR, "proto", "vectors")))
        out = p.stdout + p.stderr
        counts = dict(re.findall(r"^# (tests|pass|fail|skipped) (\d+)$",
                                 out, re.M))
        sys.stderr.write("node --test: %s in %.1fs\n"
                         % (counts, time.monotonic() - t0))
        self.assertEqual(p.returncode, 0, out[-6000:])
        self.assertEqual(counts.get("fail"), "0", out[-6000:])
        self.assertEqual(counts.get("skipped"), "0", out[-6000:])
        self.assertGreaterEqual(int(counts.get("pass", 0)), 40, out[-3000:])

    # -- the examples under the real daemon ------------------------------

    def test_echo_500_in_chat_order(self):
        fake = self.start_fake()
        d = self.daemon(fake, ECHO, workers=2,
                        env={"ECHO_SLOTS": "8", "ECHO_SLEEP_MS": "0-5"})
        ids = self.generate(fake, 500, 20)
        calls = self.replies(fake, 500)
        self.wait_confirmed(fake, max(ids))
        self.stop_clean(d)
        calls = fake.calls(method="sendMessage")
        self.assertEqual(len(calls), 500, "duplicate replies")
        by_chat = collections.defaultdict(list)
        for c in sorted(calls, key=lambda c: c["seq"]):
            by_chat[c["params"]["chat_id"]].append(c["params"]["text"])
        self.assertEqual(len(by_chat), 20)
        for chat, texts in by_chat.items():
            want = ["seq %d" % i for i in range(1, len(texts) + 1)]
            self.assertEqual(texts, want, "chat %s out of order" % chat)
        sys.stderr.write("500 echoes over %d chats in per-chat order\n"
                         % len(by_chat))

    def test_call_getme_round_trip(self):
        fake = self.start_fake()
        d = self.daemon(fake, CONFORMANCE_WORKER, workers=1)
        before = len(fake.calls(method="getMe"))
        self.inject(fake, [message(31, "call"), message(32, "echo after")])
        calls = self.replies(fake, 2, 30)
        texts = {c["params"]["chat_id"]: c["params"]["text"] for c in calls}
        me = fake.bot("getMe")["result"]["username"]
        self.assertEqual(texts, {31: "me:" + me, 32: "after"})
        self.assertGreater(len(fake.calls(method="getMe")), before,
                           "the worker's getMe never reached the Bot API")
        self.stop_clean(d)

    def test_token_never_reaches_the_worker(self):
        fake = self.start_fake(token=SECRET)
        trace = os.path.join(self.tmp, "frames.trace")
        d = self.daemon(fake, CONFORMANCE_WORKER, workers=2,
                        env={"TGRUNNER_TRACE": trace, "TG_SLOTS": "4"})
        pids = d.worker_pids()
        self.assertTrue(pids, "no worker processes")
        secret_part = SECRET.split(":", 1)[1]
        for pid in pids:
            for what in ("environ", "cmdline"):
                try:
                    with open("/proc/%d/%s" % (pid, what), "rb") as f:
                        data = f.read()
                except OSError:
                    continue
                self.assertNotIn(secret_part.encode(), data,
                                 "token in a worker's %s" % what)
        self.inject(fake, [message(40 + i, t) for i, t in
                           enumerate(["call", "echo x", "call", "fail"])])
        self.replies(fake, 3, 30)
        self.stop_clean(d)
        with open(trace, encoding="utf-8") as f:
            frames = f.read()
        for kind in ("hello", "welcome", "update", "call", "result",
                     "done", "fail", "shutdown"):
            self.assertIn('"type":"%s"' % kind, frames,
                          "no %s frame traced" % kind)
        self.assertNotIn(secret_part, frames, "token in a frame")
        # the bot's id (the token's number) is public: getMe says it
        self.assertIn('"username":"fake_bot"', frames)

    def test_slots_are_concurrent(self):
        fake = self.start_fake()
        sleep_ms, slots, n = 200, 10, 40
        d = self.daemon(fake, ECHO, workers=1,
                        env={"ECHO_SLOTS": str(slots),
                             "ECHO_SLEEP_MS": str(sleep_ms)})
        # warm up: the first update pays for nothing but the round trip
        self.inject(fake, [message(1, "warm")])
        self.replies(fake, 1, 30)
        t0 = time.monotonic()
        self.inject(fake, [message(100 + i, "c%d" % i) for i in range(n)])
        self.replies(fake, n + 1, 60)
        elapsed = time.monotonic() - t0
        serial = n * sleep_ms / 1000.0
        ideal = serial / slots
        sys.stderr.write("%d updates of %d ms on %d slots: %.2fs "
                         "(serial %.1fs, ideal %.1fs)\n"
                         % (n, sleep_ms, slots, elapsed, serial, ideal))
        # wide margin: at least 2.5 times faster than one at a time
        self.assertLess(elapsed, serial / 2.5,
                        "slots do not run concurrently")
        self.stop_clean(d)

    # -- the protocol conformance tool ------------------------------------

    def test_conformance_tool(self):
        if not os.access(CONFORMANCE_TOOL, os.X_OK):
            self.skipTest("tests/conformance/tgrunner-conformance not "
                          "there yet: conformance not checked")
        env = {k: v for k, v in os.environ.items()
               if k not in ("TGRUNNER_FD", "TGRUNNER_SOCKET")}
        env.pop("TG_SLOTS", None)
        p = subprocess.run([CONFORMANCE_TOOL, "--", NODE,
                            CONFORMANCE_WORKER], capture_output=True,
                           text=True, timeout=300, env=env)
        sys.stderr.write(p.stdout[-3000:])
        self.assertEqual(p.returncode, 0,
                         "conformance failed:\n%s\n%s"
                         % (p.stdout[-6000:], p.stderr[-3000:]))
        self.assertNotRegex(p.stdout, r"(?m)^not ok")


if __name__ == "__main__":
    if NODE is None:
        sys.stderr.write("test_node_worker: node not on PATH: skipped\n")
        sys.exit(77)
    if node_major() < 18:
        sys.stderr.write("test_node_worker: node >= 18 needed: skipped\n")
        sys.exit(77)
    tgtest.main()
