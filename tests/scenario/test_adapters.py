#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""The framework adapters and downloads of the worker libraries, against a
stand-in for the daemon's Bot API endpoint.

The test plays the daemon's side of the protocol (tests/lib/fakedaemon.py)
and tgrunner-fakeapi plays the endpoint: the welcome names the fake as
api_root, with the fake's token as the worker's credential, so the bots'
own HTTP clients talk to it.  Checked for each framework's example bot
(worker-sdk/node/examples/grammy-bot.js and telegraf-bot.js,
worker-sdk/python/examples/ptb_bot.py): commands, an inline keyboard and
its callback query (answerCallbackQuery, editMessageText), a session
counter or a ConversationHandler, a handler that throws (fail, retry),
and that every request a handler makes carries the X-Tgrunner-Update
header of its own update, also with many updates in flight at once.
Downloads: ctx.download() of the Python and Node.js libraries (getFile as
a call frame, the file from the endpoint), checked by SHA-256.

grammY and Telegraf come from the npm registry: the test installs the
versions pinned in tests/adapters/package-lock.json with `npm ci` into the
build tree (once; later runs reuse them) and skips those two only when npm
cannot reach the registry.  python-telegram-bot 13 is Debian's
python3-python-telegram-bot (tests/install-deps.sh); without it its tests
are skipped.  Run time: about 20 s, plus the first npm ci.
"""

import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from botfw import (NODE, SDK_NODE, SDK_PY, callback,  # noqa: E402
                   message, node_modules, python_with_ptb)
from fakeapi import FakeApi			# noqa: E402
from fakedaemon import WorkerPeer		# noqa: E402

CRED = "123456:w1-0123456789abcdef0123456789abcdef"


class Stand:
    """A fake endpoint and a worker running argv against it."""

    def __init__(self, case, argv, env):
        self.fake = FakeApi(token=CRED)
        case.addCleanup(self.fake.stop)
        e = {"TGRUNNER_API_ROOT": self.fake.url,
             "TGRUNNER_API_TOKEN": CRED, "TG_SRCDIR": tgtest.SRCDIR}
        e.update(env)
        self.peer = WorkerPeer(argv, env=e, calls=self.call)
        case.addCleanup(self.peer.close)
        self.hello = self.peer.handshake(api_root=self.fake.url,
                                         api_token=CRED)
        self.next_id = 1000

    def call(self, method, params):
        """A call frame, answered as the daemon would: by the Bot API."""
        return self.fake.bot(method, **params)

    def run(self, update, chat):
        self.next_id += 1
        self.peer.update(self.next_id, update, ["chat:%d" % chat])
        return self.next_id, self.peer.answer(self.next_id)

    def calls(self, since=0):
        return self.fake.calls(since=since)


class AdapterCase:
    """What every adapter's example bot must do; subclasses say how to run
    it and what its answers look like."""

    argv = None
    env = {}
    fail_error = None	# regex of the fail's error

    def stand(self):
        return Stand(self, self.argv(), self.env_for())

    def env_for(self):
        return dict(self.env)

    def texts(self, calls):
        return [(c["method"], c["params"].get("text")) for c in calls]

    def test_1_bot_through_the_endpoint(self):
        s = self.stand()
        # /start: a greeting with an inline keyboard
        uid, ans = s.run(message(5, "/start"), 5)
        self.assertEqual(ans, {"type": "done", "id": uid})
        c = s.calls()
        self.assertEqual(len(c), 1, c)
        self.assertEqual(c[0]["method"], "sendMessage")
        self.assertEqual(c[0]["params"]["text"],
                         "Hello! Do you like tgrunner?")
        markup = c[0]["params"]["reply_markup"]
        if isinstance(markup, str):		# PTB sends it as JSON text
            markup = json.loads(markup)
        self.assertEqual([b["callback_data"] for b in
                          markup["inline_keyboard"][0]], ["yes", "no"])
        self.assertEqual(c[0]["update_header"], str(uid))
        # the button: answerCallbackQuery, then the message edited
        seq = c[-1]["seq"]
        uid, ans = s.run(callback(5, "yes", "cq-1"), 5)
        self.assertEqual(ans["type"], "done", ans)
        c = s.calls(since=seq)
        self.assertEqual([x["method"] for x in c],
                         ["answerCallbackQuery", "editMessageText"])
        self.assertEqual(c[0]["params"]["callback_query_id"], "cq-1")
        self.assertEqual(c[0]["params"]["text"], "Thanks!")
        self.assertEqual(c[1]["params"]["text"], "You said: yes")
        self.assertEqual({x["update_header"] for x in c}, {str(uid)})
        # state kept across updates of the chat
        seq = c[-1]["seq"]
        for n in (1, 2, 3):
            uid, ans = s.run(message(5, "/count"), 5)
            self.assertEqual(ans["type"], "done", ans)
        self.assertEqual([x["params"]["text"] for x in s.calls(since=seq)],
                         ["count 1", "count 2", "count 3"])
        # a handler that throws: fail, retry
        uid, ans = s.run(message(5, "/fail"), 5)
        self.assertEqual(ans["type"], "fail", ans)
        self.assertTrue(ans["retry"])
        self.assertRegex(ans["error"], "this command always fails")
        # no other token was ever tried
        self.assertEqual(s.fake.stats()["unauthorized"], 0)
        self.assertEqual(s.peer.shutdown(), 0, s.peer.stderr()[-3000:])

    many_text = "hello"		# a message the bot answers in every chat
    many_reply = "echo: hello"

    def test_2_headers_with_many_updates_in_flight(self):
        """As many updates of as many chats as the worker has slots,
        handed over at once: each reply names the update it was made for."""
        s = self.stand()
        ids = {}
        for chat in range(100, 100 + s.hello["slots"]):
            s.next_id += 1
            ids[chat] = s.next_id
            s.peer.update(s.next_id, message(chat, self.many_text),
                          ["chat:%d" % chat])
        for uid in ids.values():
            self.assertEqual(s.peer.answer(uid)["type"], "done")
        calls = s.calls()
        self.assertEqual(len(calls), len(ids))
        for c in calls:
            chat = int(c["params"]["chat_id"])
            self.assertEqual(c["params"]["text"], self.many_reply)
            self.assertEqual(c["update_header"], str(ids[chat]),
                             "the reply to chat %d named another update"
                             % chat)
        self.assertEqual(s.peer.shutdown(), 0)


class GrammyAdapter(AdapterCase, unittest.TestCase):

    def argv(self):
        return [NODE, os.path.join(SDK_NODE, "examples", "grammy-bot.js")]

    def env_for(self):
        return {"NODE_PATH": node_modules()}


class TelegrafAdapter(AdapterCase, unittest.TestCase):

    def argv(self):
        return [NODE, os.path.join(SDK_NODE, "examples", "telegraf-bot.js")]

    def env_for(self):
        return {"NODE_PATH": node_modules()}

    def test_3_help_command(self):
        s = self.stand()
        uid, ans = s.run(message(9, "/help"), 9)
        self.assertEqual(ans["type"], "done")
        self.assertEqual([c["params"]["text"] for c in s.calls()],
                         ["Send /start, /count or any text."])


class PtbAdapter(AdapterCase, unittest.TestCase):
    PY = None

    @classmethod
    def setUpClass(cls):
        cls.PY = python_with_ptb()
        if cls.PY is None:
            raise unittest.SkipTest("python-telegram-bot 13 is not "
                                    "installed (apt-get install "
                                    "python3-python-telegram-bot)")

    def argv(self):
        return [self.PY, os.path.join(SDK_PY, "examples", "ptb_bot.py")]

    def env_for(self):
        return {"PYTHONPATH": SDK_PY, "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONWARNINGS": "ignore"}

    many_text = "/count"	# the PTB example has no echo
    many_reply = "count 1"

    def test_3_conversation_and_run_async(self):
        s = self.stand()
        for text in ("/order", "M", "Bob", "/order", "/cancel", "/slow"):
            uid, ans = s.run(message(6, text), 6)
            self.assertEqual(ans["type"], "done", ans)
            # run_async or not, the reply is made before the answer
            self.assertEqual(s.calls()[-1]["update_header"], str(uid))
        self.assertEqual([c["params"]["text"] for c in s.calls()], [
            "Which size? (S, M or L)", "Your name?",
            "Order: size M for Bob", "Which size? (S, M or L)",
            "Cancelled.", "slow done"])
        self.assertEqual(s.peer.shutdown(), 0)


class Downloads:
    """ctx.download() of a library, by its test worker."""

    def worker(self):
        raise NotImplementedError

    def test_download(self):
        s = Stand(self, *self.worker())
        files = {
            "small": s.fake.add_file("small", content="hello, file"),
            "big": s.fake.add_file("big", size=3 * 1024 * 1024 + 1, seed=3),
            "chunked": s.fake.add_file("chunked", size=200000, seed=4,
                                       chunked=True),
            "odd": s.fake.add_file("odd", size=10, seed=5,
                                   file_path="photos/a b/\u00e9.jpg"),
        }
        for fid, f in files.items():
            uid, ans = s.run(message(3, "dl " + fid), 3)
            want = "%d %s" % (f["file"]["file_size"], f["sha256"])
            self.assertEqual(ans["calls"][0]["params"]["text"], want, fid)
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        path = os.path.join(tmp, "got.bin")
        uid, ans = s.run(message(3, "dlpath big " + path), 3)
        self.assertEqual(ans["calls"][0]["params"]["text"], "%d %s" % (
            files["big"]["file"]["file_size"], files["big"]["sha256"]))
        # bounded: known from Content-Length, and found on the way
        for fid in ("big", "chunked"):
            uid, ans = s.run(message(3, "dl %s 1000" % fid), 3)
            self.assertRegex(ans["calls"][0]["params"]["text"],
                             r"^error \w+: .*1000")
        # the Bot API's error
        uid, ans = s.run(message(3, "dl nope"), 3)
        self.assertRegex(ans["calls"][0]["params"]["text"],
                         r"^error ApiError: .*invalid file_id")
        # the getFile calls went as call frames, for their update
        gets = [f for f in s.peer.frames if f.get("type") == "call"]
        self.assertTrue(gets and all(f["method"] == "getFile" and f["id"] > 0
                                     for f in gets))
        self.assertEqual(s.fake.stats()["unauthorized"], 0)
        self.assertEqual(s.peer.shutdown(), 0)


class PythonDownloads(Downloads, unittest.TestCase):

    def worker(self):
        return ([sys.executable, os.path.join(tgtest.SRCDIR, "tests",
                                              "workers",
                                              "download_worker.py")],
                {"PYTHONPATH": SDK_PY, "PYTHONDONTWRITEBYTECODE": "1"})


class NodeDownloads(Downloads, unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if NODE is None:
            raise unittest.SkipTest("node not installed")

    def worker(self):
        return ([NODE, os.path.join(tgtest.SRCDIR, "tests", "workers",
                                    "download_worker.js")], {})


if __name__ == "__main__":
    tgtest.main()
