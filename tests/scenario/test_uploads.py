#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""File uploads through the daemon: @file references under upload_dir and
inline @data reach the fake Bot API as multipart/form-data with the right
bytes (SHA-256 computed by the fake), nested file objects become
attach://, a 429 resends the whole file, calls without files stay JSON,
and every unsafe or bad file object is refused with a clear 400
"tgrunner: ..." result while the daemon keeps running.

The worker is this file run with --worker: each update's text is a JSON
{"method", "params"} to send as a `call` (or, with "attach": true, as a
call attached to `done`); it appends {"id", "result"} to $UPLOAD_RESULTS.
About 10 s."""

import base64
import hashlib
import json
import os
import shlex
import signal
import socket
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))


def worker_main():
    """A one-slot worker speaking the protocol directly."""
    sock = socket.socket(fileno=int(os.environ["TGRUNNER_FD"]))
    rfile = sock.makefile("rb")
    out = os.environ["UPLOAD_RESULTS"]

    def send(obj):
        sock.sendall(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    def record(uid, res):
        with open(out, "a") as f:
            f.write(json.dumps({"id": uid, "result": res}) + "\n")

    send({"type": "hello", "protocol": 1, "slots": 1, "name": "uploads"})
    json.loads(rfile.readline())
    for line in rfile:
        msg = json.loads(line)
        if msg["type"] == "shutdown":
            break
        if msg["type"] != "update":
            continue
        uid = msg["id"]
        req = json.loads(msg["update"]["message"]["text"])
        if req.get("attach"):
            send({"type": "done", "id": uid, "calls": [
                {"method": req["method"], "params": req["params"]}]})
            record(uid, {"attached": True})
            continue
        send({"type": "call", "id": uid, "ref": uid,
              "method": req["method"], "params": req["params"]})
        for rline in rfile:
            res = json.loads(rline)
            if res["type"] == "result" and res["ref"] == uid:
                break
        record(uid, res)
        send({"type": "done", "id": uid})


def sdk_worker_main():
    """The Python SDK's helpers under a real worker."""
    from tgrunner_worker import ApiError, Worker, upload_bytes, upload_file

    w = Worker(slots=2)

    @w.handler
    async def on_update(ctx):
        res = {}
        r = await ctx.call("sendDocument", chat_id=ctx.chat_id,
                           document=upload_file("a/b/c.png", "sdk.png"))
        res["document"] = r
        try:
            await ctx.call("sendPhoto", chat_id=ctx.chat_id,
                           photo=upload_file("link.txt"))
        except ApiError as e:
            res["refused"] = [e.error_code, e.description]
        ctx.add_call("sendMediaGroup", chat_id=ctx.chat_id, media=[
            {"type": "photo", "media": upload_file("photo.jpg")},
            {"type": "document", "media": upload_bytes(
                b"sdk bytes", "s.txt", "text/plain")}])
        with open(os.environ["UPLOAD_RESULTS"], "a") as f:
            f.write(json.dumps({"id": ctx.id, "result": res}) + "\n")

    w.run()


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    worker_main()
    sys.exit(0)
if __name__ == "__main__" and sys.argv[1:] == ["--sdk-worker"]:
    sdk_worker_main()
    sys.exit(0)

import tgtest					# noqa: E402
from tgtest import ScenarioCase, wait_until	# noqa: E402

MAX_SIZE = 64 * 1024
SDK = os.path.join(tgtest.SRCDIR, "worker-sdk", "python")


def sha(b):
    return hashlib.sha256(b).hexdigest()


class Uploads(ScenarioCase):

    def setUp(self):
        super().setUp()
        self.fake = self.start_fake()
        self.up = self.subdir("up")
        self.outside = self.subdir("outside")
        self.results = os.path.join(self.tmp, "results.jsonl")
        self.chat = 1000
        self.files = {}
        self.put("photo.jpg", os.urandom(200 * 1000 // 4))
        self.put("a/b/c.png", os.urandom(3000))
        self.put("thumb.jpg", b"thumbnail bytes")
        self.put("max.bin", os.urandom(MAX_SIZE))
        self.put("big.bin", os.urandom(MAX_SIZE + 1))
        self.put("empty.txt", b"")
        with open(os.path.join(self.outside, "secret.txt"), "w") as f:
            f.write("not for workers\n")
        os.symlink(os.path.join(self.outside, "secret.txt"),
                   os.path.join(self.up, "link.txt"))
        os.symlink(self.outside, os.path.join(self.up, "linkdir"))
        # a symlink to a file inside upload_dir is refused as well
        os.symlink("photo.jpg", os.path.join(self.up, "inner-link.jpg"))
        os.mkfifo(os.path.join(self.up, "fifo"))
        os.mkdir(os.path.join(self.up, "dir"))

    def put(self, rel, data):
        path = os.path.join(self.up, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        self.files[rel] = data

    def daemon(self, upload_dir=True, mode="--worker", **kw):
        cmd = "%s %s %s" % (shlex.quote(sys.executable),
                            shlex.quote(os.path.abspath(__file__)), mode)
        if upload_dir:
            kw.setdefault("upload_dir", self.up)
        kw.setdefault("upload_max_size", "%dk" % (MAX_SIZE // 1024))
        env = {"UPLOAD_RESULTS": self.results, "PYTHONPATH": SDK}
        return self.start_daemon(self.fake, workers=2, worker_command=cmd,
                                 worker_env=env, **kw)

    def results_by_id(self):
        try:
            with open(self.results) as f:
                return {r["id"]: r["result"] for r in map(json.loads, f)}
        except FileNotFoundError:
            return {}

    def call(self, method, params, attach=False):
        """Have the worker make the call; returns its result frame."""
        self.chat += 1
        text = json.dumps({"method": method, "params": params,
                           "attach": attach})
        uid, = self.inject(self.fake, [{"message": {
            "message_id": 1, "date": 1700000000, "text": text,
            "chat": {"id": self.chat, "type": "private"}}}])
        return wait_until(lambda: self.results_by_id().get(uid), 20,
                          what="the result of update %d" % uid)

    def last_call(self, method):
        calls = self.fake.calls(method=method)
        self.assertTrue(calls, "no %s reached the fake" % method)
        return calls[-1]

    def assertFile(self, rec, field, rel, filename=None, ctype=None):
        f = rec["files"][field]
        data = self.files[rel]
        self.assertEqual(f["size"], len(data))
        self.assertEqual(f["sha256"], sha(data))
        self.assertEqual(f["filename"], filename or os.path.basename(rel))
        if ctype is not None:
            self.assertEqual(f["content_type"], ctype)

    def assertRefused(self, res, why):
        self.assertFalse(res["ok"], res)
        self.assertEqual(res["error_code"], 400, res)
        self.assertTrue(res["description"].startswith("tgrunner: "), res)
        self.assertIn(why, res["description"])

    # --- tests -----------------------------------------------------------

    def test_file_reference(self):
        self.daemon()
        res = self.call("sendPhoto", {
            "chat_id": 5, "caption": "a caption", "show_caption_above_media":
            True, "reply_markup": {"inline_keyboard": [[{"text": "b",
                                                          "callback_data": "x"}]]},
            "photo": {"@file": "photo.jpg"}})
        self.assertTrue(res["ok"], res)
        rec = self.last_call("sendPhoto")
        self.assertTrue(rec.get("multipart"))
        self.assertEqual(rec["params"], {
            "chat_id": 5, "caption": "a caption",
            "show_caption_above_media": True,
            "reply_markup": {"inline_keyboard": [[{"text": "b",
                                                   "callback_data": "x"}]]}})
        self.assertFile(rec, "photo", "photo.jpg")
        # nested path, filename and content type given, exactly the limit
        res = self.call("sendDocument", {
            "chat_id": 5, "document": {"@file": "a/b/c.png",
                                       "filename": "renamed.png",
                                       "content_type": "image/png"},
            "thumbnail": {"@file": "./max.bin"}})
        self.assertTrue(res["ok"], res)
        rec = self.last_call("sendDocument")
        self.assertFile(rec, "document", "a/b/c.png", "renamed.png",
                        "image/png")
        self.assertFile(rec, "thumbnail", "max.bin")
        # an empty file is Telegram's to judge
        self.assertTrue(self.call("sendDocument", {
            "chat_id": 5, "document": {"@file": "empty.txt"}})["ok"])
        self.assertFile(self.last_call("sendDocument"), "document",
                        "empty.txt")

    def test_media_group_attach(self):
        self.daemon()
        data = b"\x00\x01inline video\xff"
        res = self.call("sendMediaGroup", {"chat_id": -100, "media": [
            {"type": "photo", "media": {"@file": "photo.jpg"},
             "caption": "one"},
            {"type": "photo", "media": {"@file": "a/b/c.png"}},
            {"type": "video", "media": {
                "@data": base64.b64encode(data).decode(),
                "filename": "v.mp4", "content_type": "video/mp4"},
             "thumbnail": {"@file": "thumb.jpg"}},
            {"type": "photo", "media": "AgACAgIAAxkBAAIBfile_id"}]})
        self.assertTrue(res["ok"], res)
        rec = self.last_call("sendMediaGroup")
        self.assertEqual(rec["params"]["chat_id"], -100)
        media = rec["params"]["media"]
        self.assertEqual(media[0], {"type": "photo", "caption": "one",
                                    "media": "attach://tgfile0"})
        self.assertEqual(media[1]["media"], "attach://tgfile1")
        self.assertEqual(media[2]["media"], "attach://tgfile2")
        self.assertEqual(media[2]["thumbnail"], "attach://tgfile3")
        self.assertEqual(media[3]["media"], "AgACAgIAAxkBAAIBfile_id")
        self.assertFile(rec, "tgfile0", "photo.jpg")
        self.assertFile(rec, "tgfile1", "a/b/c.png")
        self.assertFile(rec, "tgfile3", "thumb.jpg")
        v = rec["files"]["tgfile2"]
        self.assertEqual((v["size"], v["sha256"], v["filename"],
                          v["content_type"]),
                         (len(data), sha(data), "v.mp4", "video/mp4"))
        self.assertEqual(len(rec["files"]), 4)
        # editMessageMedia: one InputMedia object with a nested file
        self.assertTrue(self.call("editMessageMedia", {
            "chat_id": 5, "message_id": 9, "media": {
                "type": "photo", "media": {"@file": "thumb.jpg"}}})["ok"])
        rec = self.last_call("editMessageMedia")
        self.assertEqual(rec["params"]["media"],
                         {"type": "photo", "media": "attach://tgfile0"})
        self.assertFile(rec, "tgfile0", "thumb.jpg")

    def test_inline_data_without_upload_dir(self):
        d = self.daemon(upload_dir=False)
        data = os.urandom(100000)
        res = self.call("sendDocument", {
            "chat_id": 5, "document": {
                "@data": base64.b64encode(data).decode(),
                "filename": "x.bin"}})
        self.assertTrue(res["ok"], res)
        f = self.last_call("sendDocument")["files"]["document"]
        self.assertEqual((f["size"], f["sha256"], f["filename"]),
                         (len(data), sha(data), "x.bin"))
        # no filename given: "file"; unpadded base64 is fine
        self.assertTrue(self.call("sendVoice", {"chat_id": 5, "voice": {
            "@data": base64.b64encode(b"ab").decode().rstrip("=")}})["ok"])
        f = self.last_call("sendVoice")["files"]["voice"]
        self.assertEqual((f["size"], f["sha256"], f["filename"]),
                         (2, sha(b"ab"), "file"))
        n = len(self.fake.calls())
        self.assertRefused(self.call("sendPhoto", {
            "chat_id": 5, "photo": {"@file": "photo.jpg"}}),
            "upload_dir is not set")
        self.assertEqual(len(self.fake.calls()), n)
        self.assertTrue(d.running())

    def test_refused(self):
        d = self.daemon()
        cases = [
            ({"@file": "/etc/passwd"}, "must be relative"),
            ({"@file": os.path.join(self.outside, "secret.txt")},
             "must be relative"),
            ({"@file": "../outside/secret.txt"}, '".."'),
            ({"@file": "a/../../outside/secret.txt"}, '".."'),
            ({"@file": "a/b/.."}, '".."'),
            ({"@file": ""}, "empty"),
            ({"@file": "link.txt"}, "symbolic links"),
            ({"@file": "inner-link.jpg"}, "symbolic links"),
            ({"@file": "linkdir/secret.txt"}, "symbolic links"),
            ({"@file": "dir"}, "not a regular file"),
            ({"@file": "fifo"}, "not a regular file"),
            ({"@file": "big.bin"}, "upload_max_size"),
            ({"@file": "missing.jpg"}, "no such file"),
            ({"@file": "photo.jpg/x"}, "not a directory"),
            ({"@data": "bm90IGJhc2U2NA=x"}, "not valid base64"),
            ({"@data": "a b="}, "not valid base64"),
            ({"@data": "QQ==="}, "not valid base64"),
            ({"@data": "QR=="}, "not valid base64"),
            ({"@file": "photo.jpg", "@data": "QQ=="}, "both"),
            ({"@file": "photo.jpg", "path": "x"}, "unknown member"),
            ({"@file": 5}, "must be a string"),
            ({"@file": "photo.jpg", "filename": 'a"b'}, "filename"),
            ({"@file": "photo.jpg", "content_type": "a\r\nX: y"},
             "content_type"),
        ]
        n = len(self.fake.calls())
        for obj, why in cases:
            with self.subTest(obj=obj):
                self.assertRefused(self.call("sendPhoto", {
                    "chat_id": 5, "photo": obj}), why)
        # nested: the error says where
        res = self.call("sendMediaGroup", {"chat_id": 5, "media": [
            {"type": "photo", "media": {"@file": "photo.jpg"}},
            {"type": "photo", "media": {"@file": "link.txt"}}]})
        self.assertRefused(res, "media[1].media")
        # attached to done: refused too, logged, nothing sent
        self.call("sendPhoto", {"chat_id": 5, "photo": {"@file": "fifo"}},
                  attach=True)
        d.wait_log(r"attached call failed: 400 tgrunner: photo: .*fifo")
        self.assertEqual(len(self.fake.calls()), n,
                         "a refused call reached the Bot API")
        # the daemon kept running, and a good call goes through
        self.assertTrue(d.running())
        self.assertTrue(self.call("sendPhoto", {
            "chat_id": 5, "photo": {"@file": "photo.jpg"}})["ok"])
        self.assertFile(self.last_call("sendPhoto"), "photo", "photo.jpg")

    def test_429_resends_the_file(self):
        self.daemon(max_call_retries=2)
        self.fake.fault("429", method="sendPhoto", count=2, retry_after=1)
        res = self.call("sendPhoto", {"chat_id": 5, "caption": "again",
                                      "photo": {"@file": "photo.jpg"}})
        self.assertTrue(res["ok"], res)
        self.assertEqual(self.fake.stats()["calls"]["sendPhoto"], 3)
        recs = self.fake.calls(method="sendPhoto")
        self.assertEqual(len(recs), 1)	# the fake records answered calls
        self.assertEqual(recs[0]["params"]["caption"], "again")
        self.assertFile(recs[0], "photo", "photo.jpg")

    def test_attached_call_uploads(self):
        self.daemon()
        self.call("sendDocument", {"chat_id": 5, "document": {
            "@file": "a/b/c.png"}}, attach=True)
        rec = wait_until(lambda: self.fake.calls(method="sendDocument"), 20,
                         what="the attached sendDocument")[-1]
        self.assertFile(rec, "document", "a/b/c.png")

    def test_python_sdk_helpers(self):
        sys.path.insert(0, SDK)
        try:
            from tgrunner_worker import upload_bytes, upload_file
        finally:
            sys.path.remove(SDK)
        for bad in ("", "/etc/passwd", "../x", "a/../b", "a/.."):
            with self.assertRaises(ValueError, msg=bad):
                upload_file(bad)
        self.assertEqual(upload_file("a/b.jpg", content_type="image/jpeg"),
                         {"@file": "a/b.jpg", "content_type": "image/jpeg"})
        self.assertEqual(upload_bytes(b"\0\1\xff", "x"),
                         {"@data": "AAH/", "filename": "x"})
        with self.assertRaises(ValueError):
            upload_bytes(bytes(800 * 1024))
        # and under the daemon
        self.daemon(mode="--sdk-worker")
        uid, = self.inject(self.fake, [{"message": {
            "message_id": 1, "date": 1700000000, "text": "go",
            "chat": {"id": 77, "type": "private"}}}])
        res = wait_until(lambda: self.results_by_id().get(uid), 20,
                         what="the SDK worker's results")
        self.assertEqual(res["document"], True)
        self.assertEqual(res["refused"][0], 400)
        self.assertIn("tgrunner: photo: ", res["refused"][1])
        self.assertFile(self.last_call("sendDocument"), "document",
                        "a/b/c.png", "sdk.png")
        rec = wait_until(lambda: self.fake.calls(method="sendMediaGroup"),
                         20, what="the attached sendMediaGroup")[-1]
        self.assertFile(rec, "tgfile0", "photo.jpg")
        f = rec["files"]["tgfile1"]
        self.assertEqual((f["sha256"], f["filename"], f["content_type"]),
                         (sha(b"sdk bytes"), "s.txt", "text/plain"))

    def test_reload_changes_upload_dir(self):
        d = self.daemon()
        other = self.subdir("other")
        with open(os.path.join(other, "photo.jpg"), "wb") as f:
            f.write(b"other photo")
        self.files["other.jpg"] = b"other photo"
        d.conf["upload_dir"] = other
        d.conf["upload_max_size"] = "1k"
        d._write_conf()
        since = len(d.lines)
        os.kill(d.pid, signal.SIGHUP)
        d.wait_log(r"reloaded", since=since)
        self.assertTrue(self.call("sendPhoto", {
            "chat_id": 5, "photo": {"@file": "photo.jpg"}})["ok"])
        self.assertFile(self.last_call("sendPhoto"), "photo", "other.jpg",
                        "photo.jpg")
        self.assertRefused(self.call("sendPhoto", {
            "chat_id": 5, "photo": {"@file": "../up/thumb.jpg"}}), '".."')
        d.conf.pop("upload_dir")
        d._write_conf()
        since = len(d.lines)
        os.kill(d.pid, signal.SIGHUP)
        d.wait_log(r"reloaded", since=since)
        self.assertRefused(self.call("sendPhoto", {
            "chat_id": 5, "photo": {"@file": "photo.jpg"}}),
            "upload_dir is not set")

    def test_json_calls_stay_json(self):
        self.daemon()
        params = {"chat_id": 5, "text": '{"@file": "photo.jpg"}',
                  "entities": [{"type": "bold", "offset": 0, "length": 1}],
                  "reply_markup": {"@files": {"x": "@file"}}}
        self.assertTrue(self.call("sendMessage", params)["ok"])
        rec = self.last_call("sendMessage")
        self.assertNotIn("multipart", rec)
        self.assertNotIn("files", rec)
        self.assertEqual(rec["params"], params)


if __name__ == "__main__":
    tgtest.main()
