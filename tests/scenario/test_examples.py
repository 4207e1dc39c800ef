#!/usr/bin/env python3
"""The echo examples a new bot starts from (examples/echo.c, the Python
and the Node.js echo.py / echo.js), each under the real tgrunnerd against
the fake Bot API: /start gets a greeting with an inline keyboard, a button
press (callback_query) is answered with answerCallbackQuery and then its
message is edited, an edited message gets a reply to it, a text message is
echoed, a sticker gets nothing (and fails nothing).  The calls the bot
made are read back from the fake."""

import json
import os
import shlex
import subprocess
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase, build_path, wait_until	# noqa: E402

SRC = tgtest.SRCDIR
NODE = shutil.which("node")


def user(uid):
    return {"id": uid, "is_bot": False, "first_name": "U%d" % uid}


def message(chat, mid, text, kind="message"):
    m = {"message_id": mid, "date": 1700000000, "text": text,
         "chat": {"id": chat, "type": "private"}, "from": user(chat)}
    if kind == "edited_message":
        m["edit_date"] = 1700000100
    return {kind: m}


def sticker(chat, mid):
    return {"message": {
        "message_id": mid, "date": 1700000000, "from": user(chat),
        "chat": {"id": chat, "type": "private"},
        "sticker": {"file_id": "st%d" % mid, "file_unique_id": "u%d" % mid,
                    "type": "regular", "width": 512, "height": 512,
                    "is_animated": False, "is_video": False}}}


def button(chat, mid, qid, data):
    return {"callback_query": {
        "id": qid, "from": user(chat), "chat_instance": "ci%d" % chat,
        "data": data,
        "message": {"message_id": mid, "date": 1700000000,
                    "chat": {"id": chat, "type": "private"},
                    "from": {"id": 123456, "is_bot": True,
                             "first_name": "Bot"},
                    "text": "Hello! I echo what you write."}}}


class Examples(ScenarioCase):

    def run_example(self, command, echoed):
        fake = self.start_fake()
        d = self.start_daemon(fake, workers=1, worker_command=command,
                              worker_env={"ECHO_STATE_DIR":
                                          self.subdir("echo")})
        fake.inject([message(1, 10, "/start"),
                     button(2, 20, "q2", "pressed"),
                     message(3, 30, "typo", "edited_message"),
                     message(4, 40, "hello there"),
                     sticker(5, 50)])

        def calls():
            c = fake.calls()
            return c if len([x for x in c if x["method"] != "getMe"]) >= 5 \
                else None
        try:
            got = wait_until(calls, 30, what="the example's 5 calls")
        except AssertionError:
            raise AssertionError("%s\n%s" % (fake.calls(), d.log_tail()))
        # all five handled (the sticker too, which makes no call)
        sock = d.conf["control_socket"]

        def done():
            p = subprocess.run([build_path("tgrunnerctl"), "-s", sock,
                                "--json", "status"], capture_output=True,
                               text=True, timeout=10)
            return p.returncode == 0 and \
                json.loads(p.stdout)["updates"]["done"] == 5
        wait_until(done, 30, what="5 updates done")
        got = [c for c in fake.calls() if c["method"] not in ("getMe",)]
        by_chat = {}
        for c in sorted(got, key=lambda c: c["seq"]):
            p = c["params"]
            chat = p.get("chat_id")
            if c["method"] == "answerCallbackQuery":
                chat = 2
            by_chat.setdefault(chat, []).append((c["method"], p))

        # /start: a greeting with buttons that send callback data
        (method, p), = by_chat[1]
        self.assertEqual(method, "sendMessage")
        self.assertIn("Hello", p["text"])
        rows = p["reply_markup"]["inline_keyboard"]
        self.assertTrue(all(b.get("callback_data") for r in rows for b in r))

        # a button: answered first, then its message edited
        self.assertEqual([m for m, _ in by_chat[2]],
                         ["answerCallbackQuery", "editMessageText"])
        self.assertEqual(by_chat[2][0][1]["callback_query_id"], "q2")
        edit = by_chat[2][1][1]
        self.assertEqual((edit["chat_id"], edit["message_id"]), (2, 20))
        self.assertIn("pressed", edit["text"])

        # an edited message: a reply to it
        (method, p), = by_chat[3]
        self.assertEqual(method, "sendMessage")
        self.assertEqual(p["text"], "edited: typo")
        self.assertEqual(p["reply_parameters"]["message_id"], 30)

        # a text message: echoed
        (method, p), = by_chat[4]
        self.assertEqual((method, p["text"]), ("sendMessage", echoed))

        # a sticker (no text, no caption): nothing
        self.assertNotIn(5, by_chat)
        self.assertEqual(len(got), 5, got)
        self.assertEqual(d.stop(), 0)
        self.assertEqual(d.dead_letters(), [])

    def test_c_echo(self):
        self.run_example(shlex.quote(build_path("examples/echo-worker")),
                         "echo #1: hello there")

    def test_python_echo(self):
        sdk = os.path.join(SRC, "worker-sdk", "python")
        self.run_example("env PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=%s %s %s" % (
            shlex.quote(sdk), shlex.quote(sys.executable),
            shlex.quote(os.path.join(sdk, "examples", "echo.py"))),
            "hello there")

    def test_node_echo(self):
        if NODE is None:
            self.skipTest("node is not installed")
        self.run_example("%s %s" % (shlex.quote(NODE), shlex.quote(
            os.path.join(SRC, "worker-sdk", "node", "examples", "echo.js"))),
            "hello there")


if __name__ == "__main__":
    tgtest.main()
