#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""The Python worker library (worker-sdk/python, package tgrunner_worker).

Protocol: examples/conformance.py driven over a socketpair by this test
playing the daemon (handshake, echo of unicode, call/result, slots really
concurrent, cancel, fail/raise, unknown members and frame types, malformed
input, max_frame, shutdown with and without a deadline, EOF).

End to end: examples/echo.py under the real tgrunnerd against the fake Bot
API (500 messages over 20 chats, replies in per-chat order); a worker that
dumps its environment and every frame (ctx.call round trips, ApiError, no
token anywhere, many slots running at once, cancel on timeout, drain on
SIGTERM); and tests/conformance/tgrunner-conformance if it exists.

Run time: about 35 s on an idle 2-core machine (14 s of it the
conformance tool), 60 s under heavy load.
"""

import json
import os
import select
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase, wait_until	# noqa: E402

SDK = os.path.join(tgtest.SRCDIR, "worker-sdk", "python")
EXAMPLES = os.path.join(SDK, "examples")
CONFORMANCE_TOOL = os.path.join(tgtest.SRCDIR, "tests", "conformance",
                                "tgrunner-conformance")
SECRET = "AAH-py-canary-Qx71Lm"
TOKEN = "515151:" + SECRET


def py_command(script):
    """worker_command running script with the SDK on PYTHONPATH (and no
    __pycache__ written into the source tree)."""
    return "env PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=%s %s %s" % (
        shlex.quote(SDK), shlex.quote(sys.executable), shlex.quote(script))


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def message(uid, text, chat=42, **extra):
    frame = {"type": "update", "id": uid, "keys": ["chat:%d" % chat],
             "attempt": 1, "deadline": 0,
             "update": {"update_id": uid,
                        "message": {"message_id": uid, "date": 1700000000,
                                    "chat": {"id": chat, "type": "private"},
                                    "text": text}}}
    frame.update(extra)
    return frame


def send_message(chat, text):
    return {"method": "sendMessage", "params": {"chat_id": chat,
                                                "text": text}}


# ---------------------------------------------------------------------------
# the daemon's side of the protocol, played by the test

MOVE_TO_FD3 = ("import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); "
               "fd == 3 or os.close(fd); os.execv(sys.argv[2], sys.argv[2:])")

class Peer:
    """A worker process on one end of a socketpair (fd 3), and the test on
    the other, speaking frames."""

    def __init__(self, script=None, slots=None, env=None):
        self.sock, theirs = socket.socketpair()
        fd = theirs.fileno()
        e = {k: v for k, v in os.environ.items()
             if not k.startswith("TGRUNNER_") and k not in ("TG_SLOTS",)}
        e.update({"TGRUNNER_FD": "3", "TGRUNNER_WORKER_ID": "1",
                  "PYTHONPATH": SDK, "PYTHONDONTWRITEBYTECODE": "1"})
        if slots is not None:
            e["TG_SLOTS"] = str(slots)
        e.update(env or {})
        self.errf = tempfile.TemporaryFile()
        # fd 3 as under the daemon: a trampoline moves the socket there
        # (subprocess closes fds after preexec_fn, so dup2 there is lost)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MOVE_TO_FD3, str(fd), sys.executable,
             script or os.path.join(EXAMPLES, "conformance.py")],
            stdin=subprocess.DEVNULL, stdout=self.errf, stderr=self.errf,
            env=e, pass_fds=(fd,))
        theirs.close()
        self.buf = b""
        self.raw = []		# every line received

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.sock.close()
        self.errf.close()

    def stderr(self):
        self.errf.seek(0)
        return self.errf.read().decode("utf-8", "replace")

    def send(self, obj):
        self.send_raw(compact(obj).encode() + b"\n")

    def send_raw(self, data):
        self.sock.sendall(data)

    def recv_line(self, timeout=5.0):
        """The next line (bytes, without newline), or None at EOF."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no frame within %.1fs; worker said:\n%s"
                                     % (timeout, self.stderr()))
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                data = self.sock.recv(65536)
                if not data:
                    return None
                self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        self.raw.append(line)
        return line

    def recv(self, timeout=5.0):
        line = self.recv_line(timeout)
        if line is None:
            raise AssertionError("worker closed the socket; it said:\n%s"
                                 % self.stderr())
        return json.loads(line)

    def handshake(self, max_frame=1048576):
        hello = self.recv(30)		# Python starts slowly on a busy box
        self.send({"type": "welcome", "protocol": 1, "worker_id": 1,
                   "bot": {"id": 7, "is_bot": True, "first_name": "T",
                           "username": "t_bot"}, "max_frame": max_frame})
        return hello

    def wait_exit(self, timeout=5.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("worker did not exit within %.1fs:\n%s"
                                 % (timeout, self.stderr()))


class Protocol(unittest.TestCase):
    """examples/conformance.py against the test playing the daemon."""

    def test_vectors(self):
        """The library's own tests: its decoder on proto/vectors."""
        p = subprocess.run(
            [sys.executable, "-m", "unittest", "discover", "-v", "-s",
             os.path.join(SDK, "tests")], capture_output=True, text=True,
            timeout=120, env=dict(os.environ, PYTHONPATH=SDK,
                                  PYTHONDONTWRITEBYTECODE="1",
                                  TGRUNNER_VECTORS=os.path.join(
                                      tgtest.SRCDIR, "proto", "vectors")))
        sys.stderr.write(p.stderr[-3000:])
        self.assertEqual(p.returncode, 0, p.stderr[-6000:])
        self.assertRegex(p.stderr, r"\nRan ([5-9]|\d\d+) tests")
        self.assertNotIn("skipped", p.stderr)

    def peer(self, **kw):
        p = Peer(**kw)
        self.addCleanup(p.close)
        return p

    def test_handshake_echo_unicode(self):
        p = self.peer(slots=3)
        hello = p.handshake()
        self.assertEqual((hello["type"], hello["protocol"], hello["slots"],
                          hello["name"]), ("hello", 1, 3, "conformance.py"))
        text = ("h\u00e9llo \U0001F600 \u4e16\u754c\n\"q\"\\ " * 200)[:3000]
        # unknown members and an unknown frame type are ignored
        p.send({"type": "future_frame", "x": [1]})
        p.send(message(10, "echo " + text, future=1))
        line = p.recv_line()
        done = json.loads(line)
        self.assertEqual(done, {"type": "done", "id": 10,
                                "calls": [send_message(42, text)]})
        self.assertEqual(line.decode(), compact(done), "not compact JSON")
        p.send(message(11, "nothing to do"))
        self.assertEqual(p.recv(), {"type": "done", "id": 11})

    def test_call_result(self):
        p = self.peer()
        p.handshake()
        p.send(message(20, "call"))
        call = p.recv()
        self.assertEqual((call["type"], call["id"], call["method"],
                          call["params"]), ("call", 20, "getMe", {}))
        # a result for a ref nobody waits for is ignored
        p.send({"type": "result", "ref": "nobody", "ok": True, "result": 1})
        p.send({"type": "result", "ref": call["ref"], "ok": True,
                "result": {"id": 7, "username": "t_bot"}})
        self.assertEqual(p.recv(), {"type": "done", "id": 20, "calls":
                                    [send_message(42, "me:t_bot")]})
        p.send(message(21, "call"))
        call = p.recv()
        p.send({"type": "result", "ref": call["ref"], "ok": False,
                "error_code": 400, "description": "Bad Request: no"})
        self.assertEqual(p.recv()["calls"], [send_message(42, "error:400")])

    def test_slots_run_concurrently_and_cancel(self):
        p = self.peer(slots=4)
        self.assertEqual(p.handshake()["slots"], 4)
        t0 = time.monotonic()
        for i in range(4):
            p.send(message(30 + i, "sleep 300", chat=i))
        got = sorted(p.recv(3)["id"] for _ in range(4))
        took = time.monotonic() - t0
        self.assertEqual(got, [30, 31, 32, 33])
        self.assertLess(took, 1.2, "4 x sleep 300 on 4 slots took %.2fs"
                        % took)
        p.send(message(40, "sleep 10000"))
        time.sleep(0.2)			# the handler is sleeping
        p.send({"type": "cancel", "id": 999, "reason": "timeout"})
        p.send({"type": "cancel", "id": 40, "reason": "timeout"})
        t0 = time.monotonic()
        self.assertEqual(p.recv(1.0), {"type": "fail", "id": 40,
                                       "error": "cancelled", "retry": True})
        self.assertLess(time.monotonic() - t0, 1.0)
        p.send(message(41, "echo still here"))
        self.assertEqual(p.recv()["id"], 41)

    def test_fail_and_raise(self):
        p = self.peer()
        p.handshake()
        p.send(message(50, "fail"))
        self.assertEqual(p.recv(), {"type": "fail", "id": 50,
                                    "error": "asked to fail", "retry": False})
        p.send(message(51, "raise"))
        f = p.recv()
        self.assertEqual((f["type"], f["id"], f["retry"]),
                         ("fail", 51, True))
        self.assertIn("RuntimeError", f["error"])
        p.send(message(52, "echo after"))
        self.assertEqual(p.recv()["calls"], [send_message(42, "after")])
        wait_until(lambda: "Traceback" in p.stderr(), 5,
                   what="the traceback on stderr")

    def test_max_frame(self):
        # the reply would exceed welcome.max_frame: ctx.reply raises
        # FrameTooLarge in the handler, which fails the update for good
        # (the same reply would be built again)
        p = self.peer()
        p.handshake(max_frame=4096)
        p.send(message(60, "echo " + "x" * 5000))
        f = p.recv()
        self.assertEqual((f["type"], f["id"], f["retry"]),
                         ("fail", 60, False))
        self.assertIn("FrameTooLarge", f["error"])
        p.send(message(61, "echo " + "y" * 3000))
        self.assertEqual(p.recv()["id"], 61)
        self.assertTrue(all(len(l) + 1 <= 4096 for l in p.raw))

    def test_malformed_input_exits(self):
        bad = [b"this is not json\n",
               b'{"type":"update","id":1,"id":2}\n',
               b"[1,2]\n",
               b'{"no_type":1}\n',
               b'{"type":"update","id":"7","keys":[],"attempt":1,'
               b'"deadline":0,"update":{}}\n',
               b'{"type":"cancel","id":-1}\n',
               b'{"type":"done","id":1}\n',
               b'{"type":"result","ref":1,"ok":1}\n',
               b'{"type":"welcome","protocol":1,"worker_id":1,"bot":{}}\n',
               b'"\xff\xfe"\n',
               b"x" * (1048576 + 10)]
        peers = [self.peer() for _ in bad]	# in parallel: startup is slow
        for p in peers:
            p.handshake()
            p.send(message(1, "echo ok"))
        for p, data in zip(peers, bad):
            self.assertEqual(p.recv()["id"], 1)
            p.send_raw(data)
        for p, data in zip(peers, bad):
            with self.subTest(data=data[:60]):
                rc = p.wait_exit(5)
                self.assertNotEqual(rc, 0)
                self.assertIsNone(p.recv_line(1), "answered bad input")
                self.assertIn("malformed input", p.stderr())

    def test_more_updates_than_slots_exits(self):
        p = self.peer(slots=1)
        p.handshake()
        p.send(message(1, "sleep 5000", chat=1))
        p.send(message(2, "sleep 5000", chat=2))
        self.assertNotEqual(p.wait_exit(5), 0)

    def test_refused_hello_exits(self):
        p = self.peer()
        p.recv(30)
        p.sock.shutdown(socket.SHUT_WR)
        self.assertNotEqual(p.wait_exit(5), 0)
        self.assertIn("before welcome", p.stderr())

    def test_shutdown_drains(self):
        p = self.peer(slots=2)
        p.handshake()
        p.send(message(70, "sleep 300"))
        time.sleep(0.05)
        t0 = time.monotonic()
        p.send({"type": "shutdown",
                "deadline": int(time.time() * 1000) + 5000})
        self.assertEqual(p.recv(), {"type": "done", "id": 70})
        self.assertEqual(p.wait_exit(5), 0)
        self.assertLess(time.monotonic() - t0, 2.0)

    def test_shutdown_deadline_cancels(self):
        p = self.peer(slots=2)
        p.handshake()
        p.send(message(80, "sleep 30000"))
        time.sleep(0.05)
        t0 = time.monotonic()
        p.send({"type": "shutdown",
                "deadline": int(time.time() * 1000) + 1000})
        self.assertEqual(p.recv(), {"type": "fail", "id": 80,
                                    "error": "cancelled", "retry": True})
        self.assertLess(time.monotonic() - t0, 1.0, "answered after the "
                        "shutdown deadline")
        self.assertEqual(p.wait_exit(5), 0)
        # the exit itself takes a moment on a loaded machine
        self.assertLess(time.monotonic() - t0, 1.5, "exited long after the "
                        "shutdown deadline")

    def test_eof_exits(self):
        p = self.peer(slots=2)
        p.handshake()
        p.send(message(90, "sleep 30000"))
        time.sleep(0.05)
        p.sock.shutdown(socket.SHUT_WR)
        p.wait_exit(5)


# ---------------------------------------------------------------------------
# under the real daemon

DUMP_WORKER = r'''
import asyncio, os, sys, time
from tgrunner_worker import ApiError, Worker

out, pid = os.environ["PYW_DIR"], os.getpid()
with open(os.path.join(out, "env.%d" % pid), "w") as f:
    for k, v in sorted(os.environ.items()):
        f.write("%s=%s\n" % (k, v))
frames = open(os.path.join(out, "frames.%d" % pid), "ab", buffering=0)
times = open(os.path.join(out, "times.%d" % pid), "a", buffering=1)


def trace(direction, line):
    frames.write(direction.encode() + b" " + line + b"\n")


w = Worker(slots=int(os.environ.get("PYW_SLOTS", "8")), trace=trace)


@w.handler
async def handle(ctx):
    t0 = time.time()
    times.write("S %d %d %d %.6f\n" % (ctx.id, ctx.attempt, pid, t0))
    text = ctx.text or ""
    if text == "getme":
        me = await ctx.call("getMe")
        ctx.reply("me:%s" % me["username"])
    elif text == "badcall":
        try:
            await ctx.call("sendMessage", chat_id=ctx.chat_id)
        except ApiError as e:
            ctx.reply("error:%d" % e.error_code)
    elif text.startswith("sleep "):
        await asyncio.sleep(int(text[6:]) / 1000.0)
        ctx.reply("slept")
    else:
        ctx.reply(text)
    times.write("E %d %d %d %.6f\n" % (ctx.id, ctx.attempt, pid,
                                       time.time()))


w.run()
'''


def text_message(chat, text):
    return {"message": {"message_id": 1, "date": 1700000000,
                        "from": {"id": chat, "is_bot": False,
                                 "first_name": "U"},
                        "chat": {"id": chat, "type": "private"},
                        "text": text}}


class UnderDaemon(ScenarioCase):

    needs = ("tgrunnerd", "tgrunner-fakeapi")

    def setUp(self):
        super().setUp()
        self.fake = self.start_fake(token=TOKEN)

    def dump_daemon(self, slots=8, workers=1, **kw):
        self.out = self.subdir("dump")
        script = os.path.join(self.tmp, "dump_worker.py")
        with open(script, "w") as f:
            f.write(DUMP_WORKER)
        d = self.start_daemon(
            self.fake, workers=workers, worker_command=py_command(script),
            worker_env={"PYW_DIR": self.out, "PYW_SLOTS": slots}, **kw)
        for i in range(1, workers + 1):		# every worker is up
            d.wait_log(r"worker=%d pid=\d+: hello slots=%d " % (i, slots), 60)
        return d

    def dumps(self, prefix):
        return [os.path.join(self.out, n) for n in sorted(os.listdir(self.out))
                if n.startswith(prefix + ".")]

    def times(self):
        recs = []
        for path in self.dumps("times"):
            with open(path) as f:
                for line in f:
                    k, uid, att, pid, t = line.split()
                    recs.append((k, int(uid), int(att), int(pid), float(t)))
        return recs

    def replies(self):
        """(chat_id, text) of the sendMessage calls that had a text."""
        return [(c["params"]["chat_id"], c["params"]["text"])
                for c in self.fake.calls(method="sendMessage")
                if "text" in c["params"]]

    def wait_replies(self, n, d, timeout=30.0):
        try:
            wait_until(lambda: len(self.replies()) >= n, timeout,
                       what="%d sendMessage calls" % n)
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, d.log_tail()))
        return self.replies()

    def test_echo_example_500(self):
        d = self.start_daemon(self.fake, workers=2,
                              worker_command=py_command(
                                  os.path.join(EXAMPLES, "echo.py")))
        ids = self.generate(self.fake, 500, 20)
        calls = self.wait_replies(500, d)
        self.wait_confirmed(self.fake, max(ids))
        self.assertEqual(d.stop(), 0, d.log_tail())
        self.assertNoLeftovers(d)
        calls = self.fake.calls(method="sendMessage")
        self.assertEqual(len(calls), 500)
        per_chat = {}
        for c in sorted(calls, key=lambda c: c["seq"]):
            per_chat.setdefault(c["params"]["chat_id"], []).append(
                c["params"]["text"])
        self.assertEqual(len(per_chat), 20)
        for chat, texts in per_chat.items():
            self.assertEqual(texts, ["seq %d" % i
                                     for i in range(1, len(texts) + 1)],
                             "chat %s: replies out of order" % chat)

    def test_call_round_trip_and_no_token(self):
        d = self.dump_daemon(workers=2)
        getme0 = self.fake.stats()["calls"].get("getMe", 0)
        self.inject(self.fake, [text_message(5, "getme"),
                                text_message(6, "badcall"),
                                text_message(7, "plain")])
        got = sorted(self.wait_replies(3, d))
        self.assertEqual(got, [(5, "me:fake_bot"), (6, "error:400"),
                               (7, "plain")])
        self.assertGreater(self.fake.stats()["calls"]["getMe"], getme0)
        self.assertEqual(d.stop(), 0, d.log_tail())
        self.assertNoLeftovers(d)
        envs, frames = self.dumps("env"), self.dumps("frames")
        seen = []
        for path in envs + frames:
            with open(path, "rb") as f:
                data = f.read()
            # the bot id before the colon is public (getMe tells it, and
            # the endpoint's credential begins with it): the rest is secret
            self.assertFalse(SECRET.encode() in data,
                             "the token is in %s" % path)
            if "env." in path:
                self.assertIn(b"\nTGRUNNER_FD=3\n", data)
            else:
                seen += [json.loads(l[2:])["type"] for l in data.splitlines()]
        self.assertEqual(len(envs), 2)
        for kind in ("hello", "welcome", "update", "call", "result", "done",
                     "shutdown"):
            self.assertIn(kind, seen)

    def test_slots_run_concurrently(self):
        n, ms = 40, 500
        d = self.dump_daemon(slots=n, workers=1)
        t0 = time.time()
        self.inject(self.fake, [text_message(100 + i, "sleep %d" % ms)
                                for i in range(n)])
        self.wait_replies(n, d)
        wall = time.time() - t0
        self.assertEqual(d.stop(), 0, d.log_tail())
        recs = self.times()
        starts = sorted(r[4] for r in recs if r[0] == "S")
        ends = sorted(r[4] for r in recs if r[0] == "E")
        self.assertEqual((len(starts), len(ends)), (n, n))
        # the handlers overlapped: most of them started before the first
        # one ended, and the whole took a fraction of n x ms
        overlap = sum(1 for s in starts if s < ends[0])
        ratio = n * ms / 1000.0 / wall
        sys.stderr.write("python worker: %d handlers of %d ms in %.2f s "
                         "(ratio %.1f), %d at once\n"
                         % (n, ms, wall, ratio, overlap))
        self.assertGreaterEqual(overlap, n // 2)
        self.assertGreater(ratio, 8.0)

    def test_cancel_on_timeout(self):
        d = self.dump_daemon(slots=4, update_timeout="400ms", max_attempts=2,
                             kill_grace="5s")
        self.inject(self.fake, [text_message(9, "sleep 30000")])
        wait_until(lambda: d.dead_letters(), 15, what="a dead letter")
        dl = d.dead_letters()
        self.assertEqual(len(dl), 1)
        self.assertIn("cancelled", dl[0]["reason"])
        starts = [r for r in self.times() if r[0] == "S"]
        self.assertEqual([r[2] for r in starts], [1, 2])
        # the worker answered the cancels itself: never killed, one process
        self.assertEqual(len({r[3] for r in starts}), 1)
        self.assertEqual(len(self.dumps("env")), 1)
        self.inject(self.fake, [text_message(9, "after")])
        self.assertIn((9, "after"), self.wait_replies(1, d))
        self.assertEqual(d.stop(), 0, d.log_tail())

    def test_sigterm_drains(self):
        d = self.dump_daemon(slots=4)
        self.inject(self.fake, [text_message(11, "sleep 1000")])
        wait_until(lambda: any(r[0] == "S" for r in self.times()), 10,
                   what="the handler to start")
        self.assertEqual(d.stop(), 0, d.log_tail())
        self.assertNoLeftovers(d)
        self.assertEqual(self.replies(), [(11, "slept")])

    def test_conformance_tool(self):
        if not os.access(CONFORMANCE_TOOL, os.X_OK):
            self.skipTest("%s not there yet" % CONFORMANCE_TOOL)
        # the tool sets TG_SLOTS itself where a check needs several
        cmd = [CONFORMANCE_TOOL, "--", "env", "PYTHONDONTWRITEBYTECODE=1",
               "PYTHONPATH=" + SDK,
               sys.executable, os.path.join(EXAMPLES, "conformance.py")]
        r = subprocess.run(cmd, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=300)
        out = r.stdout.decode("utf-8", "replace")
        sys.stderr.write("tgrunner-conformance: %s\n" % (
            out.strip().splitlines()[-1:] or "(no output)"))
        self.assertEqual(r.returncode, 0, out)
        self.assertNotIn("not ok", out)
        self.assertRegex(out, r"\n[1-9][0-9]* passed, 0 failed")


if __name__ == "__main__":
    tgtest.main()
