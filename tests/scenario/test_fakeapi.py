#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""Tests of tgrunner-fakeapi itself: every behaviour the scenario tests and
benchmarks rely on.  Run with TG_BUILDDIR (directory holding the binary) and
PYTHONPATH=tests/lib; exit status 0 means every test passed."""

import collections
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

from fakeapi import FakeApi, FakeApiError, find_binary

TOKEN = "123456:TEST-TOKEN"


def msg(chat, text="hi"):
    return {"message": {"message_id": 1, "date": 0, "text": text,
                        "chat": {"id": chat, "type": "private"},
                        "from": {"id": chat, "is_bot": False,
                                 "first_name": "U"}}}


class Base(unittest.TestCase):
    def setUp(self):
        self.api = FakeApi()

    def tearDown(self):
        self.assertEqual(self.api.stop(), 0, "fakeapi did not exit cleanly")

    def raw(self, method, path, body=None, headers=None, timeout=10):
        """(status, headers dict, body bytes) over a fresh connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.api.port,
                                          timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def bot_path(self, method):
        return "/bot%s/%s" % (TOKEN, method)

    def updates(self, **params):
        res = self.api.bot("getUpdates", **params)
        self.assertTrue(res["ok"], res)
        return res["result"]

    def ids(self, **params):
        return [u["update_id"] for u in self.updates(**params)]

    def poll_in_thread(self, **params):
        """Start a getUpdates in a thread; returns (thread, result list)."""
        out = []
        t = threading.Thread(target=lambda: out.append(
            (time.monotonic(), self.api.bot("getUpdates", **params))))
        t.start()
        return t, out


class TestBasics(Base):
    def test_getme_and_token(self):
        res = self.api.bot("getMe")
        self.assertEqual(res["result"]["id"], 123456)
        self.assertTrue(res["result"]["is_bot"])
        status, _, body = self.raw("GET", "/botWRONG:TOKEN/getMe")
        self.assertEqual(status, 401)
        self.assertEqual(json.loads(body), {"ok": False, "error_code": 401,
                                            "description": "Unauthorized"})
        status, _, body = self.raw("GET", "/nothing/here")
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(body)["description"], "Not Found")
        status, _, _ = self.raw("GET", "/_ctl/nothing")
        self.assertEqual(status, 404)

    def test_method_names_case_insensitive(self):
        self.assertTrue(self.api.bot("GETME")["ok"])
        self.api.bot("SendMessage", chat_id=1, text="x")
        self.assertEqual(len(self.api.calls(method="sendMessage")), 1)
        self.assertEqual(self.api.stats()["calls"]["getMe"], 1)

    def test_other_methods_recorded_true(self):
        res = self.api.bot("answerCallbackQuery", callback_query_id="q1")
        self.assertEqual(res, {"ok": True, "result": True})
        calls = self.api.calls()
        self.assertEqual(calls[-1]["method"], "answerCallbackQuery")
        self.assertEqual(calls[-1]["params"], {"callback_query_id": "q1"})

    def test_send_message(self):
        r1 = self.api.bot("sendMessage", chat_id=42, text="a")["result"]
        r2 = self.api.bot("sendMessage", chat_id=42, text="b")["result"]
        r3 = self.api.bot("sendMessage", chat_id=-100, text="c")["result"]
        self.assertEqual((r1["message_id"], r2["message_id"]), (1, 2))
        self.assertEqual(r1["chat"], {"id": 42, "type": "private"})
        self.assertEqual(r3["chat"]["type"], "supergroup")
        self.assertEqual(r3["message_id"], 1)
        self.assertEqual(r2["text"], "b")
        self.assertTrue(r1["from"]["is_bot"])
        res = self.api.bot("sendMessage", text="x")
        self.assertEqual((res["error_code"], res["description"]),
                         (400, "Bad Request: chat_id is empty"))
        res = self.api.bot("sendMessage", chat_id=1)
        self.assertEqual(res["description"],
                         "Bad Request: message text is empty")

    def test_parameter_forms(self):
        first, last = self.api.inject([msg(1), msg(2), msg(3)])
        # GET query string
        status, _, body = self.raw(
            "GET", self.bot_path("getUpdates") + "?offset=%d" % (first + 1))
        self.assertEqual([u["update_id"] for u in json.loads(body)["result"]],
                         [first + 1, last])
        # form body; JSON-looking values are decoded
        status, _, body = self.raw(
            "POST", self.bot_path("getUpdates"),
            "offset=%d&limit=1&allowed_updates=%%5B%%22message%%22%%5D"
            % (first + 2),
            {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual([u["update_id"] for u in json.loads(body)["result"]],
                         [last])
        self.api.bot("sendMessage", chat_id=1, text="x")
        self.raw("POST", self.bot_path("sendMessage"),
                 "chat_id=7&text=hello+world&reply_markup=%7B%22a%22%3A1%7D",
                 {"Content-Type": "application/x-www-form-urlencoded"})
        call = self.api.calls(method="sendMessage")[-1]
        self.assertEqual(call["params"], {"chat_id": 7, "text": "hello world",
                                          "reply_markup": {"a": 1}})
        # JSON body, numbers as strings accepted
        self.assertEqual(self.ids(offset=str(last + 1)), [])
        self.assertEqual(self.api.stats()["confirmed_offset"], last + 1)

    def test_bad_bodies_are_400(self):
        cases = [
            ("application/json", b"{bad"),
            ("application/json", b"[1,2]"),
            ("application/x-www-form-urlencoded", b"a=%ff%fe"),
            ("application/x-www-form-urlencoded", b"novalue"),
        ]
        for ctype, body in cases:
            status, hdrs, raw = self.raw("POST", self.bot_path("sendMessage"),
                                         body, {"Content-Type": ctype})
            self.assertEqual(status, 400, body)
            res = json.loads(raw)
            self.assertEqual((res["ok"], res["error_code"]), (False, 400))
            self.assertTrue(res["description"].startswith("Bad Request"))
        for path, body in [("/_ctl/updates", b"{bad"),
                           ("/_ctl/updates", b"[1]"),
                           ("/_ctl/updates", b"[]"),
                           ("/_ctl/generate", b"{\"count\":-1}"),
                           ("/_ctl/generate", b"{\"count\":1,\"dist\":\"x\"}"),
                           ("/_ctl/fault", b"{\"kind\":\"nope\"}"),
                           ("/_ctl/fault", b"[]"),
                           ("/_ctl/restart_ids", b"{}"),
                           ("/_ctl/generate", b"\x00\xff")]:
            status, _, raw = self.raw("POST", path, body)
            self.assertEqual(status, 400, (path, body))
            self.assertFalse(json.loads(raw)["ok"])
        self.assertTrue(self.api.bot("getMe")["ok"])    # still alive
        self.assertEqual(self.api.stats()["available"], 0)


class TestPolling(Base):
    def test_long_poll_released_by_inject(self):
        t, out = self.poll_in_thread(timeout=20)
        self.api.wait_for(lambda: self.api.stats()["held"] == 1)
        t0 = time.monotonic()
        first, _ = self.api.inject(msg(5))
        t.join(10)
        self.assertFalse(t.is_alive())
        done, res = out[0]
        self.assertLess(done - t0, 2)
        self.assertEqual([u["update_id"] for u in res["result"]], [first])
        self.assertEqual(res["result"][0]["message"]["chat"]["id"], 5)
        self.assertEqual(self.api.stats()["held"], 0)

    def test_timeout_gives_empty_result(self):
        t0 = time.monotonic()
        self.assertEqual(self.updates(timeout=1), [])
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        t0 = time.monotonic()
        self.assertEqual(self.updates(timeout=0), [])
        self.assertLess(time.monotonic() - t0, 0.5)

    def test_offset_confirmation(self):
        first, last = self.api.inject([msg(1), msg(2), msg(3), msg(4)])
        self.assertEqual(first, 1000)
        self.assertEqual(self.ids(), [1000, 1001, 1002, 1003])
        self.assertEqual(self.ids(), [1000, 1001, 1002, 1003])  # re-sent
        self.assertEqual(self.ids(offset=1002), [1002, 1003])
        self.assertEqual(self.ids(offset=0), [1002, 1003])
        st = self.api.stats()
        self.assertEqual((st["confirmed_offset"], st["available"]), (1002, 2))
        self.assertEqual(st["served"], 4 + 4 + 2 + 2)
        self.assertEqual(self.ids(offset=last + 1), [])
        self.assertEqual(self.api.stats()["available"], 0)

    def test_negative_offset(self):
        self.api.inject([msg(i) for i in range(1, 6)])
        self.assertEqual(self.ids(offset=-2), [1003, 1004])
        self.assertEqual(self.ids(), [1003, 1004])  # the rest is forgotten
        self.assertEqual(self.ids(offset=-10), [1003, 1004])

    def test_limit_clamping(self):
        self.api.inject([msg(1)] * 150)
        self.assertEqual(len(self.ids(limit=0)), 1)
        self.assertEqual(len(self.ids(limit=-5)), 1)
        self.assertEqual(len(self.ids(limit=7)), 7)
        self.assertEqual(len(self.ids(limit=500)), 100)
        self.assertEqual(len(self.ids()), 100)
        self.assertEqual(self.ids(offset=1100), list(range(1100, 1150)))

    def test_allowed_updates(self):
        self.api.inject([msg(1), {"callback_query": {"id": "c"}},
                         {"message_reaction": {"chat": {"id": 1}}},
                         msg(2)])
        # Telegram's default leaves message_reaction out (and drops it)
        self.assertEqual(self.ids(), [1000, 1001, 1003])
        self.api.inject({"message_reaction": {"chat": {"id": 1}}})
        self.assertEqual(self.ids(allowed_updates=["callback_query"]),
                         [1001])
        self.assertEqual(self.ids(), [1001])       # remembered
        self.assertEqual(self.ids(offset=1002), [])
        self.assertEqual(self.ids(allowed_updates=[]), [])
        self.api.inject([{"message_reaction": {"chat": {"id": 2}}}, msg(3)])
        self.assertEqual(self.ids(allowed_updates=["message_reaction",
                                                   "message"]),
                         [1005, 1006])

    def test_conflict_with_second_poll(self):
        t, out = self.poll_in_thread(timeout=20)
        self.api.wait_for(lambda: self.api.stats()["held"] == 1)
        t2, out2 = self.poll_in_thread(timeout=20)
        t.join(10)
        res = out[0][1]
        self.assertEqual(res["error_code"], 409)
        self.assertEqual(res["description"],
                         "Conflict: terminated by other getUpdates request; "
                         "make sure that only one bot instance is running")
        self.api.wait_for(lambda: self.api.stats()["held"] == 1)
        first, _ = self.api.inject(msg(1))
        t2.join(10)
        self.assertEqual(out2[0][1]["result"][0]["update_id"], first)

    def test_webhook(self):
        self.api.inject([msg(1), msg(2)])
        t, out = self.poll_in_thread(offset=1002, timeout=20)
        self.api.wait_for(lambda: self.api.stats()["held"] == 1)
        self.assertTrue(self.api.bot("setWebhook",
                                     url="https://example.invalid/h")["ok"])
        t.join(10)
        self.assertEqual(out[0][1]["error_code"], 409)
        res = self.api.bot("getUpdates")
        self.assertEqual(res["error_code"], 409)
        self.assertEqual(res["description"],
                         "Conflict: can't use getUpdates method while "
                         "webhook is active; use deleteWebhook to delete "
                         "the webhook first")
        self.assertEqual(self.api.stats()["webhook"],
                         "https://example.invalid/h")
        info = self.api.bot("getWebhookInfo")["result"]
        self.assertEqual(info["url"], "https://example.invalid/h")
        self.api.inject(msg(3))
        self.assertTrue(self.api.bot("deleteWebhook")["ok"])
        self.assertEqual(self.ids(), [1002])
        self.api.bot("setWebhook", url="https://example.invalid/h")
        self.api.bot("deleteWebhook", drop_pending_updates=True)
        self.assertEqual(self.ids(), [])
        self.assertEqual(self.api.stats()["webhook"], "")

    def test_restart_ids(self):
        _, last = self.api.inject([msg(1), msg(2)])
        self.assertEqual(len(self.ids(offset=last + 1)), 0)
        self.api.restart_ids(10)
        first, last2 = self.api.inject([msg(1), msg(2)])
        self.assertEqual((first, last2), (10, 11))
        self.assertEqual(self.api.stats()["next_update_id"], 12)
        # a poller still holding the old offset gets the new ids
        self.assertEqual(self.ids(offset=last + 1), [10, 11])
        self.assertEqual(self.ids(offset=11), [11])
        self.assertEqual(self.api.stats()["confirmed_offset"], 11)
        self.assertEqual(self.ids(offset=12), [])
        self.api.restart_ids(500000)
        self.assertEqual(self.api.inject(msg(1)), (500000, 500000))
        self.assertEqual(self.ids(offset=12), [500000])


class TestFaults(Base):
    def test_5xx(self):
        self.api.inject(msg(1))
        self.api.fault("5xx", count=2, status=503)
        for _ in range(2):
            status, hdrs, body = self.raw("GET", self.bot_path("getUpdates"))
            self.assertEqual(status, 503)
            self.assertTrue(hdrs["Content-Type"].startswith("text/html"))
            self.assertIn(b"<html>", body)
        self.assertEqual(self.ids(), [1000])   # normal service resumes

    def test_429(self):
        self.api.fault("429", method="sendMessage", retry_after=7)
        res = self.api.bot("sendMessage", chat_id=1, text="x")
        self.assertEqual(res, {"ok": False, "error_code": 429,
                               "description":
                               "Too Many Requests: retry after 7",
                               "parameters": {"retry_after": 7}})
        self.assertEqual(self.api.calls(method="sendMessage"), [])
        self.assertTrue(self.api.bot("sendMessage", chat_id=1,
                                     text="x")["ok"])
        self.assertEqual(len(self.api.calls(method="sendMessage")), 1)

    def test_slow(self):
        self.api.inject(msg(1))
        self.api.fault("slow", delay_ms=400)
        t0 = time.monotonic()
        self.assertEqual(self.ids(), [1000])
        self.assertGreaterEqual(time.monotonic() - t0, 0.35)
        t0 = time.monotonic()
        self.assertEqual(self.ids(), [1000])
        self.assertLess(time.monotonic() - t0, 0.3)
        self.api.fault("slow", method="sendMessage", delay_ms=50)
        self.api.bot("sendMessage", chat_id=1, text="x")
        self.assertEqual(self.api.calls()[-1]["fault"], "slow")
        self.assertEqual(self.api.stats()["calls"]["sendMessage"], 1)

    def test_truncated_and_malformed(self):
        first, last = self.api.inject([msg(1), msg(2)])
        _, _, normal = self.raw("GET", self.bot_path("getUpdates"))
        self.api.fault("truncated")
        status, _, body = self.raw(
            "GET", self.bot_path("getUpdates") + "?offset=%d" % (last + 1))
        self.assertEqual(status, 200)
        self.assertEqual(body, normal[:len(normal) // 2])
        self.assertRaises(ValueError, json.loads, body)
        # offset of a faulted request is not applied
        self.assertEqual(self.api.stats()["available"], 2)
        self.api.fault("malformed", method="*")
        status, _, body = self.raw("GET", self.bot_path("getMe"))
        self.assertEqual(status, 200)
        self.assertRaises(ValueError, json.loads, body)
        self.assertEqual(self.ids(), [first, last])

    def test_reset(self):
        self.api.fault("reset", method="sendMessage")
        with self.assertRaises((http.client.HTTPException, OSError)):
            self.raw("POST", self.bot_path("sendMessage"),
                     b'{"chat_id":1,"text":"x"}',
                     {"Content-Type": "application/json"})
        self.assertTrue(self.api.bot("sendMessage", chat_id=1,
                                     text="x")["ok"])
        self.assertEqual(self.api.stats()["calls"]["sendMessage"], 2)

    def test_409_and_401(self):
        self.api.fault("409")
        self.api.fault("401")
        self.assertEqual(self.api.bot("getUpdates")["error_code"], 409)
        res = self.api.bot("getUpdates")
        self.assertEqual((res["error_code"], res["description"]),
                         (401, "Unauthorized"))
        self.assertEqual(self.updates(), [])

    def test_every_forever_and_clear(self):
        self.api.fault("5xx", method="*", count=-1, every=3)
        codes = [self.raw("GET", self.bot_path("getMe"))[0]
                 for _ in range(7)]
        self.assertEqual(codes, [200, 200, 502, 200, 200, 502, 200])
        self.api.clear_faults()
        codes = [self.raw("GET", self.bot_path("getMe"))[0]
                 for _ in range(3)]
        self.assertEqual(codes, [200, 200, 200])

    def test_faults_apply_in_order_per_method(self):
        self.api.fault("429", method="getUpdates")
        self.api.fault("5xx", method="sendMessage")
        self.api.fault("401", method="getUpdates")
        self.assertEqual(self.api.bot("getMe")["ok"], True)
        self.assertEqual(self.raw("GET", self.bot_path("sendMessage"))[0],
                         502)
        self.assertEqual(self.api.bot("getUpdates")["error_code"], 429)
        self.assertEqual(self.api.bot("getUpdates")["error_code"], 401)
        self.assertTrue(self.api.bot("getUpdates")["ok"])


class TestGenerate(Base):
    def test_rate_spreads_releases(self):
        t, out = self.poll_in_thread(timeout=20)
        self.api.wait_for(lambda: self.api.stats()["held"] == 1)
        first, last = self.api.generate(20, 2, rate=50)
        self.assertEqual(last - first, 19)
        t.join(10)
        self.assertEqual(out[0][1]["result"][0]["update_id"], first)
        st = self.api.stats()
        self.assertGreater(st["unreleased"], 0)
        self.api.wait_for(lambda: len(self.api.released()) == 20, 5)
        rel = self.api.released()
        self.assertEqual([r[0] for r in rel], list(range(first, last + 1)))
        span = rel[-1][1] - rel[0][1]
        self.assertGreater(span, 0.3)
        self.assertLess(span, 1.5)
        self.assertEqual(self.api.stats()["unreleased"], 0)
        self.assertEqual(self.ids(offset=first + 1),
                         list(range(first + 1, last + 1)))

    def test_hot_distribution(self):
        first, last = self.api.generate(1000, 5, dist="hot", hot_share=0.6,
                                        start_chat=2000)
        per_chat = collections.Counter()
        offset = 0
        while True:
            us = self.updates(offset=offset)
            if not us:
                break
            for u in us:
                per_chat[u["message"]["chat"]["id"]] += 1
            offset = us[-1]["update_id"] + 1
        self.assertEqual(sum(per_chat.values()), 1000)
        self.assertEqual(per_chat[2000], 600)
        self.assertEqual(set(per_chat), {2000, 2001, 2002, 2003, 2004})
        for chat in range(2001, 2005):
            self.assertGreater(per_chat[chat], 60)

    def test_uniform_and_seq_numbering(self):
        self.api.generate(300, 3)
        self.api.generate(30, 3)      # numbering continues per chat
        seqs = collections.defaultdict(list)
        offset = 0
        while True:
            us = self.updates(offset=offset)
            if not us:
                break
            for u in us:
                m = u["message"]
                self.assertEqual(m["from"]["id"], m["chat"]["id"])
                self.assertEqual(m["chat"]["type"], "private")
                seqs[m["chat"]["id"]].append(int(m["text"].split()[1]))
            offset = us[-1]["update_id"] + 1
        self.assertEqual(set(seqs), {1000, 1001, 1002})
        for chat, s in seqs.items():
            self.assertEqual(s, list(range(1, len(s) + 1)), chat)
            self.assertGreater(len(s), 60)

    def test_generate_is_deterministic(self):
        def chats():
            self.api.reset()
            self.api.generate(50, 7, seed=3)
            return [u["message"]["chat"]["id"] for u in self.updates()]
        self.assertEqual(chats(), chats())


class TestControl(Base):
    def test_calls_and_since(self):
        self.api.bot("sendMessage", chat_id=1, text="a")
        self.api.bot("getUpdates")
        self.api.bot("deleteMessage", chat_id=1, message_id=1)
        self.api.bot("sendMessage", chat_id=2, text="b")
        calls = self.api.calls()
        self.assertEqual([c["method"] for c in calls],
                         ["sendMessage", "deleteMessage", "sendMessage"])
        self.assertEqual([c["seq"] for c in calls], [1, 2, 3])
        self.assertIsInstance(calls[0]["t"], float)
        self.assertLess(abs(calls[0]["t"] - time.time()), 60)
        self.assertEqual([c["params"]["text"] for c in
                          self.api.calls(method="sendMessage")], ["a", "b"])
        self.assertEqual([c["seq"] for c in self.api.calls(since=1)], [2, 3])
        self.assertEqual(self.api.calls(method="sendMessage", since=1)[0]
                         ["params"]["chat_id"], 2)

    def test_stats_counters(self):
        self.api.inject([msg(1), msg(2)])
        self.api.generate(5, 1, rate=0.5)
        self.api.bot("getUpdates")
        self.api.bot("getUpdates", offset=1001)
        self.api.bot("sendMessage", chat_id=1, text="a")
        st = self.api.stats()
        self.assertEqual(st["next_update_id"], 1007)
        self.assertEqual(st["polls"], 2)
        self.assertEqual(st["served"], 3 + 2)    # 1000..1002, 1001..1002
        self.assertEqual(st["available"], 2)     # 1001, 1002 (1st generated)
        self.assertEqual(st["unreleased"], 4)
        self.assertEqual(st["confirmed_offset"], 1001)
        self.assertEqual(st["calls"], {"getUpdates": 2, "sendMessage": 1})
        self.assertEqual((st["held"], st["webhook"]), (0, ""))

    def test_files(self):
        """getFile and /file/bot<token>/<path>: content, generated bytes
        (deterministic, by size and seed), chunked answers, errors."""
        small = self.api.add_file("AgAD1", content="hello files")
        self.assertEqual(small["file"], {
            "file_id": "AgAD1", "file_unique_id": "uAgAD1",
            "file_size": 11, "file_path": "documents/file_0.bin"})
        self.assertEqual(small["sha256"],
                         hashlib.sha256(b"hello files").hexdigest())
        big = self.api.add_file("AgAD2", size=3 * 1024 * 1024 + 3, seed=9,
                                file_path="photos/f é.jpg")
        again = self.api.add_file("AgAD3", size=3 * 1024 * 1024 + 3,
                                  seed=9, chunked=True)
        self.assertEqual(big["sha256"], again["sha256"])
        res = self.api.bot("getFile", file_id="AgAD2")
        self.assertEqual(res, {"ok": True, "result": big["file"]})
        for f, chunked in ((small, False), (big, False), (again, True)):
            path = "/file/bot%s/%s" % (TOKEN, urllib.parse.quote(
                f["file"]["file_path"]))
            status, headers, body = self.raw("GET", path)
            self.assertEqual(status, 200)
            self.assertEqual(hashlib.sha256(body).hexdigest(), f["sha256"])
            self.assertEqual(headers.get("Content-Type"),
                             "application/octet-stream")
            self.assertEqual(headers.get("Transfer-Encoding") == "chunked",
                             chunked)
            self.assertEqual("Content-Length" in headers, not chunked)
        self.assertEqual(self.api.bot("getFile", file_id="nope"),
                         {"ok": False, "error_code": 400,
                          "description": "Bad Request: invalid file_id"})
        status, _, body = self.raw("GET", "/file/bot%s/documents/none"
                                   % TOKEN)
        self.assertEqual((status, json.loads(body)["description"]),
                         (404, "Not Found"))
        status, _, _ = self.raw("GET", "/file/bot1:WRONG/"
                                "documents/file_0.bin")
        self.assertEqual(status, 401)
        st = self.api.stats()
        self.assertEqual((st["file_requests"], st["unauthorized"]), (5, 1))
        with self.assertRaises(FakeApiError):
            self.api.add_file("AgAD1", content="again")
        with self.assertRaises(FakeApiError):
            self.api.add_file("X", content="a", size=3)
        with self.assertRaises(FakeApiError):
            self.api.add_file("Y", content="a",
                              file_path="documents/file_0.bin")
        self.api.reset()
        self.assertFalse(self.api.bot("getFile", file_id="AgAD1")["ok"])

    def test_requests_record_headers(self):
        """Calls record the X-Tgrunner-Update and User-Agent headers they
        came with; a wrong token is counted, never recorded as a call."""
        self.raw("POST", self.bot_path("sendMessage"),
                 json.dumps({"chat_id": 1, "text": "a"}),
                 {"Content-Type": "application/json",
                  "X-Tgrunner-Update": "4242", "User-Agent": "probe/1"})
        self.raw("POST", "/bot9:NOPE/sendMessage", "{}",
                 {"Content-Type": "application/json"})
        calls = self.api.calls()
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0]["update_header"], "4242")
        self.assertEqual(calls[0]["user_agent"], "probe/1")
        self.assertEqual(self.api.stats()["unauthorized"], 1)

    def test_reset(self):
        self.api.inject([msg(1)])
        self.api.bot("sendMessage", chat_id=1, text="a")
        self.api.fault("5xx", count=-1)
        self.api.reset()
        st = self.api.stats()
        self.assertEqual((st["available"], st["served"], st["polls"],
                          st["calls"]), (0, 0, 0, {}))
        self.assertEqual(self.api.calls(), [])
        self.assertEqual(self.api.released(), [])
        self.assertEqual(self.updates(), [])    # fault is gone too

    def test_fault_errors_raise(self):
        with self.assertRaises(FakeApiError):
            self.api.fault("bogus")


class TestRobustness(Base):
    def test_client_leaves_during_long_poll(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.api.port)
        conn.request("GET", self.bot_path("getUpdates") + "?timeout=30")
        self.api.wait_for(lambda: self.api.stats()["held"] == 1)
        conn.close()
        first, _ = self.api.inject(msg(1))     # answers a closed socket
        self.assertEqual(self.ids(), [first])

    def test_garbage_requests(self):
        import random
        import socket
        rnd = random.Random(7)
        junk = [b"GET / HTTP/1.1\r\n\r\n", b"\x00\xff" * 100,
                b"POST /_ctl/updates HTTP/1.1\r\nContent-Length: 5\r\n"
                b"\r\n[{}]]",
                b"GET /bot%s/getUpdates?offset=%%zz&limit=x HTTP/1.1\r\n\r\n"
                % TOKEN.encode(),
                b"POST /bot%s/sendMessage HTTP/1.1\r\nContent-Length: "
                b"99999999999\r\n\r\n" % TOKEN.encode(),
                b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\n\r\n"]
        junk += [bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 300)))
                 for _ in range(30)]
        for data in junk:
            with socket.create_connection(("127.0.0.1", self.api.port),
                                          timeout=5) as s:
                try:
                    s.sendall(data)
                    s.shutdown(socket.SHUT_WR)
                    s.recv(65536)
                except OSError:
                    pass
        for body in [b"[" * 5000, b'{"count":1e300,"chats":1}',
                     b'{"count":10,"chats":"x","rate":-1}',
                     b'{"count":5,"chats":3,"start_chat":-1}']:
            status, _, _ = self.raw("POST", "/_ctl/generate", body)
            self.assertEqual(status, 400, body)
        self.assertTrue(self.api.bot("getMe")["ok"])


class TestProcess(unittest.TestCase):
    def test_portfile_banner_sigterm(self):
        tmp = tempfile.mkdtemp(prefix="fakeapi-test-")
        portfile = os.path.join(tmp, "p")
        proc = subprocess.Popen([find_binary(), "-l", "127.0.0.1:0", "-p",
                                 portfile, "-t", "77:X", "-f", "5"],
                                stdout=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            with open(portfile) as f:
                port = int(f.read())
            self.assertEqual(line.strip(), "tgrunner-fakeapi listening on "
                             "http://127.0.0.1:%d" % port)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("POST", "/_ctl/updates", body=b"{}")
            self.assertEqual(json.loads(conn.getresponse().read())
                             ["first_id"], 5)
            conn.request("GET", "/bot77:X/getMe")
            self.assertEqual(json.loads(conn.getresponse().read())
                             ["result"]["id"], 77)
            conn.close()
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(10), 0)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            for f in os.listdir(tmp):
                os.unlink(os.path.join(tmp, f))
            os.rmdir(tmp)


if __name__ == "__main__":
    t0 = time.monotonic()
    prog = unittest.main(exit=False, verbosity=2)
    r = prog.result
    print("\ntest_fakeapi: %d run, %d failures, %d errors, %d skipped "
          "in %.1fs: %s" % (r.testsRun, len(r.failures), len(r.errors),
                             len(r.skipped), time.monotonic() - t0,
                             "PASS" if r.wasSuccessful() else "FAIL"))
    sys.exit(0 if r.wasSuccessful() else 1)
