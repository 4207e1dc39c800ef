#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""Bots written for grammY, Telegraf and python-telegram-bot as real
workers of tgrunnerd, against the fake Bot API (issue #14, part two).

Each example bot runs under the daemon, its HTTP client pointed at the
daemon's Bot API endpoint (worker_api_listen) with the credential from its
environment.  Checked: every reply arrives, in per-chat order (a session
counter or a ConversationHandler across several chats at once, one worker
with many slots), every call a handler made belonged to its update (the
endpoint's count of calls in no update stays 0), the inline keyboard's
callback queries are answered (answerCallbackQuery) and edited; no worker
process holds the bot token (its environment, and a scan of its readable
memory, the same scan finding the token in the daemon), no request from a
worker reached the Bot API (only the daemon's, without a framework's
User-Agent, and no wrong token); a file downloaded through the endpoint by
the Python and Node.js libraries has the right SHA-256.

grammY and Telegraf: see tests/lib/botfw.py (npm ci, skipped only without
the registry); python-telegram-bot 13: python3-python-telegram-bot.
"""

import collections
import json
import os
import shlex
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from botfw import (NODE, SDK_NODE, SDK_PY, callback,  # noqa: E402
                   message, node_modules, python_with_ptb)
from tgtest import ScenarioCase, build_path, wait_until	# noqa: E402

SECRET = "Ws7-NEVER-IN-A-WORKER-q81Zt"
TOKEN = "123456:" + SECRET
CHATS = 8
COUNTS = 4
FRAMEWORK_AGENTS = ("node-fetch", "Python Telegram Bot", "aiohttp")


def region_has(pid, needle):
    """Does any readable mapping of pid hold needle?  None if its memory
    cannot be read at all (the test is the worker's ancestor, so the same
    uid may, unless ptrace is locked down).  Mappings over 512 MiB (a
    sanitizer's shadow, reserved, not used) and those the kernel refuses
    (guard pages, [vvar]) are skipped; everything a process writes a
    string into (heap, stack, data, anonymous maps) is read, in pieces."""
    try:
        with open("/proc/%d/maps" % pid) as f:
            maps = f.read().splitlines()
        mem = open("/proc/%d/mem" % pid, "rb", 0)
    except OSError:
        return None
    read_any = False
    chunk = 16 << 20
    with mem:
        for line in maps:
            addr, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            lo, hi = (int(x, 16) for x in addr.split("-"))
            if hi - lo > 512 * 1024 * 1024:
                continue
            tail = b""
            for at in range(lo, hi, chunk):
                try:
                    mem.seek(at)
                    data = mem.read(min(chunk, hi - at))
                except (OSError, ValueError, OverflowError):
                    break
                read_any = True
                if needle in tail + data:
                    return True
                tail = data[-len(needle):]
    return False if read_any else None


class Frameworks(ScenarioCase):

    def daemon(self, fake, cmd, env):
        d = self.start_daemon(fake, workers=1, worker_command=cmd,
                              worker_env=env, update_timeout="60s")
        # the default worker_api_listen: logged at start, before any worker
        self.assertTrue(d.grep(r"worker API on http://127\.0\.0\.1:\d+"),
                        d.log_tail())
        wait_until(lambda: d.grep(r"worker=\d+ pid=\d+: hello slots="), 90,
                   what="the bot worker's hello")
        return d

    def status(self, d):
        out = subprocess.run([build_path("tgrunnerctl"), "-s",
                              d.conf["control_socket"], "--json", "status"],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        return json.loads(out.stdout)

    def assert_calls_in_updates(self, d, at_least):
        """Every call through the endpoint belonged to its update: with
        many updates held at once, the X-Tgrunner-Update header the
        adapters send is what names it."""
        api = self.status(d)["worker_api"]
        self.assertGreaterEqual(api["calls"], at_least, api)
        self.assertEqual(api["calls_no_update"], 0, api)
        self.assertEqual(api["unauthorized"], 0, api)

    def assert_token_kept(self, d, fake):
        pids = d.worker_pids()
        self.assertTrue(pids, "no worker process")
        # the scan finds the token where it is
        self.assertIs(region_has(d.pid, SECRET.encode()), True,
                      "the memory scan does not find the token in the "
                      "daemon")
        scanned = 0
        for pid in pids:
            try:
                with open("/proc/%d/environ" % pid, "rb") as f:
                    env = f.read()
            except OSError:
                continue		# exited meanwhile
            self.assertFalse(SECRET.encode() in env, "token in the "
                             "environment of worker %d" % pid)
            self.assertIn(b"TGRUNNER_API_TOKEN=123456:w", env)
            found = region_has(pid, SECRET.encode())
            self.assertIsNot(found, True,
                             "token in the memory of worker %d" % pid)
            scanned += found is not None
        self.assertGreater(scanned, 0, "no worker's memory could be read")
        calls = fake.calls()
        self.assertTrue(calls)
        for c in calls:
            ua = c.get("user_agent", "")
            self.assertFalse(any(a in ua for a in FRAMEWORK_AGENTS),
                             "a worker called the Bot API itself: %r" % c)
        self.assertEqual(fake.stats()["unauthorized"], 0)

    def replies(self, fake, method, n, timeout=90):
        return wait_until(lambda: (lambda c: len(c) >= n and c)(
            fake.calls(method=method)), timeout,
            what="%d %s calls" % (n, method))

    def counters_in_order(self, fake, cmd="/count"):
        """COUNTS /count in CHATS chats, all injected at once: the
        replies of each chat say 1, 2, ... in order."""
        ups = [message(1000 + c, cmd, mid=k + 2) for k in range(COUNTS)
               for c in range(CHATS)]
        self.inject(fake, ups)
        calls = self.replies(fake, "sendMessage", CHATS * COUNTS)
        by_chat = collections.defaultdict(list)
        for c in sorted(calls, key=lambda c: c["seq"]):
            by_chat[int(c["params"]["chat_id"])].append(c["params"]["text"])
        for chat, texts in by_chat.items():
            self.assertEqual(texts, ["count %d" % i for i in
                                     range(1, COUNTS + 1)],
                             "chat %d out of order" % chat)
        self.assertEqual(len(by_chat), CHATS)

    def keyboard(self, fake):
        """/start in CHATS chats, then the button in each: every callback
        query answered, every message edited."""
        self.inject(fake, [message(2000 + c, "/start") for c in range(CHATS)])
        self.replies(fake, "sendMessage", CHATS)
        self.inject(fake, [callback(2000 + c, "yes", "cq%d" % c)
                           for c in range(CHATS)])
        answers = self.replies(fake, "answerCallbackQuery", CHATS)
        self.assertEqual(sorted(a["params"]["callback_query_id"]
                                for a in answers),
                         sorted("cq%d" % c for c in range(CHATS)))
        edits = self.replies(fake, "editMessageText", CHATS)
        self.assertEqual({e["params"]["text"] for e in edits},
                         {"You said: yes"})

    def stop_clean(self, d):
        self.assertEqual(d.stop(), 0, d.log_tail())
        self.assertNoLeftovers(d)


class Grammy(Frameworks):

    def setUp(self):
        super().setUp()
        self.env = {"NODE_PATH": node_modules()}

    def test_grammy_session_keyboard(self):
        fake = self.start_fake(token=TOKEN)
        d = self.daemon(fake, "%s %s" % (shlex.quote(NODE), shlex.quote(
            os.path.join(SDK_NODE, "examples", "grammy-bot.js"))), self.env)
        self.counters_in_order(fake)
        self.keyboard(fake)
        self.assert_calls_in_updates(d, CHATS * COUNTS + 3 * CHATS)
        self.assert_token_kept(d, fake)
        self.stop_clean(d)


class Telegraf(Frameworks):

    def setUp(self):
        super().setUp()
        self.env = {"NODE_PATH": node_modules()}

    def test_telegraf_commands(self):
        fake = self.start_fake(token=TOKEN)
        d = self.daemon(fake, "%s %s" % (shlex.quote(NODE), shlex.quote(
            os.path.join(SDK_NODE, "examples", "telegraf-bot.js"))),
            self.env)
        self.counters_in_order(fake)
        self.keyboard(fake)
        self.assert_calls_in_updates(d, CHATS * COUNTS + 3 * CHATS)
        self.assert_token_kept(d, fake)
        self.stop_clean(d)


class Ptb(Frameworks):

    def setUp(self):
        super().setUp()
        self.py = python_with_ptb()
        if self.py is None:
            self.skipTest("python-telegram-bot 13 is not installed")

    def test_ptb_conversation(self):
        fake = self.start_fake(token=TOKEN)
        d = self.daemon(fake, "env PYTHONDONTWRITEBYTECODE=1 "
                        "PYTHONWARNINGS=ignore PYTHONPATH=%s %s %s" % (
                            shlex.quote(SDK_PY), shlex.quote(self.py),
                            shlex.quote(os.path.join(SDK_PY, "examples",
                                                     "ptb_bot.py"))), {})
        # the conversation in CHATS chats at once, step by step
        steps = ["/order", "M", "Bob"]
        want = ["Which size? (S, M or L)", "Your name?",
                "Order: size M for Bob"]
        self.inject(fake, [message(3000 + c, t, mid=i + 2)
                           for i, t in enumerate(steps)
                           for c in range(CHATS)])
        calls = self.replies(fake, "sendMessage", CHATS * len(steps))
        by_chat = collections.defaultdict(list)
        for c in sorted(calls, key=lambda c: c["seq"]):
            by_chat[int(c["params"]["chat_id"])].append(c["params"]["text"])
        self.assertEqual(len(by_chat), CHATS)
        for chat, texts in by_chat.items():
            self.assertEqual(texts, want, "chat %d" % chat)
        self.keyboard(fake)
        self.assert_calls_in_updates(d, CHATS * len(steps) + 3 * CHATS)
        self.assert_token_kept(d, fake)
        self.stop_clean(d)


class Downloads(Frameworks):

    def check(self, cmd, env):
        fake = self.start_fake(token=TOKEN)
        f = fake.add_file("BQACAgIAAx", size=5 * 1024 * 1024 + 3, seed=8)
        d = self.daemon(fake, cmd, env)
        self.inject(fake, [message(4000, "dl BQACAgIAAx")])
        calls = self.replies(fake, "sendMessage", 1)
        self.assertEqual(calls[0]["params"]["text"], "%d %s" % (
            f["file"]["file_size"], f["sha256"]))
        self.assertEqual(fake.stats()["file_requests"], 1)
        self.assert_token_kept(d, fake)
        self.stop_clean(d)

    def test_python_download(self):
        self.check("env PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=%s %s %s" % (
            shlex.quote(SDK_PY), shlex.quote(sys.executable),
            shlex.quote(os.path.join(tgtest.SRCDIR, "tests", "workers",
                                     "download_worker.py"))), {})

    def test_node_download(self):
        if NODE is None:
            self.skipTest("node not installed")
        self.check("%s %s" % (shlex.quote(NODE), shlex.quote(os.path.join(
            tgtest.SRCDIR, "tests", "workers", "download_worker.js"))),
            {"TG_SRCDIR": tgtest.SRCDIR})


if __name__ == "__main__":
    tgtest.main()
