# SPDX-License-Identifier: ISC
"""The daemon's side of the worker protocol, played by a test.

    with WorkerPeer(["node", "bot.js"], env={...}) as p:
        p.handshake(api_root=fake.url, api_token=fake.token)
        p.update(1001, {"message": {...}}, keys=["chat:5"])
        answer = p.answer(1001)          # the done or fail frame

The worker runs on one end of a socketpair, moved to fd 3 as tgrunnerd
does; call frames it sends are answered by calls(method, params), by
default an error.  Standard library only.
"""

import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time

MOVE_TO_FD3 = ("import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); "
               "fd == 3 or os.close(fd); os.execvp(sys.argv[2], sys.argv[2:])")


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class WorkerPeer:
    """A worker process, and the test playing its daemon."""

    def __init__(self, argv, env=None, cwd=None, calls=None):
        self.sock, theirs = socket.socketpair()
        fd = theirs.fileno()
        e = {k: v for k, v in os.environ.items()
             if not k.startswith("TGRUNNER_")}
        e.update({"TGRUNNER_FD": "3", "TGRUNNER_WORKER_ID": "1"})
        e.update(env or {})
        self.errf = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MOVE_TO_FD3, str(fd)] + list(argv),
            stdin=subprocess.DEVNULL, stdout=self.errf, stderr=self.errf,
            env=e, cwd=cwd, pass_fds=(fd,))
        theirs.close()
        self.calls = calls
        self.buf = b""
        self.answers = {}	# update id -> done/fail frame
        self.frames = []	# every frame received

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

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
        self.sock.sendall(compact(obj).encode() + b"\n")

    def _line(self, deadline):
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                data = self.sock.recv(65536)
                if not data:
                    raise AssertionError("the worker closed the socket; it "
                                         "said:\n%s" % self.stderr()[-4000:])
                self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def recv(self, timeout=10.0):
        """The next frame (calls answered on the way), or an error."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._line(deadline)
            if line is None:
                raise AssertionError("no frame within %.0f s; the worker "
                                     "said:\n%s" % (timeout,
                                                    self.stderr()[-4000:]))
            f = json.loads(line)
            self.frames.append(f)
            if f.get("type") == "call":
                self._answer_call(f)
                continue
            if f.get("type") in ("done", "fail"):
                self.answers[f["id"]] = f
            return f

    def _answer_call(self, f):
        res = None
        if self.calls is not None:
            res = self.calls(f["method"], f.get("params") or {})
        if res is None:
            res = {"ok": False, "error_code": 501,
                   "description": "no Bot API in this test"}
        out = {"type": "result", "ref": f["ref"]}
        out.update(res)
        self.send(out)

    def handshake(self, timeout=60.0, **welcome):
        """hello in, welcome out (extra members as keywords); the hello."""
        hello = self.recv(timeout)
        assert hello["type"] == "hello", hello
        w = {"type": "welcome", "protocol": 1, "worker_id": 1,
             "bot": {"id": 123456, "is_bot": True, "first_name": "Fake Bot",
                     "username": "fake_bot"}, "max_frame": 1048576}
        w.update(welcome)
        self.send(w)
        return hello

    def update(self, uid, update, keys=(), deadline=0):
        u = dict(update)
        u["update_id"] = uid
        self.send({"type": "update", "id": uid, "keys": list(keys),
                   "attempt": 1, "deadline": deadline, "update": u})

    def answer(self, uid, timeout=30.0):
        """The done or fail frame of update uid."""
        deadline = time.monotonic() + timeout
        while uid not in self.answers:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no answer to update %d; the worker "
                                     "said:\n%s" % (uid,
                                                    self.stderr()[-4000:]))
            self.recv(left)
        return self.answers[uid]

    def shutdown(self, timeout=30.0):
        """shutdown, then the worker's exit status."""
        self.send({"type": "shutdown"})
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("the worker did not exit after shutdown:\n"
                                 "%s" % self.stderr()[-4000:])
