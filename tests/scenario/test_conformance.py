#!/usr/bin/env python3
"""The worker conformance tool (tests/conformance/tgrunner-conformance)
against the conformance worker of every worker library: C (built here),
Python and Node.js (each skipped with a message while its file is missing).
Each run must report every check passed.  The tool must also fail: a small
worker in this file breaks the protocol on request, and the tool has to
exit non-zero with the right "not ok" line.  About 30 s."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402

TOOL = os.path.join(tgtest.SRCDIR, "tests", "conformance",
                    "tgrunner-conformance")
C_WORKER = tgtest.build_path(os.path.join("tests", "workers",
                                          "conformance-worker"))
PY_WORKER = os.path.join(tgtest.SRCDIR, "worker-sdk", "python", "examples",
                         "conformance.py")
NODE_WORKER = os.path.join(tgtest.SRCDIR, "worker-sdk", "node", "examples",
                           "conformance.js")
RUN_TIMEOUT = 180

# Checks a library is known to fail, with the reason; the test fails when
# one of them starts passing, so that the entry gets removed.
KNOWN_FAILURES = {}

# A one-slot conformance worker without any SDK; CW_BREAK=MODE makes it
# break the protocol: "wrong-id" answers done with id + 1, "no-hello"
# never says hello.
MINI_WORKER = r'''
import json, os, select, socket, sys, time
BREAK = os.environ.get("CW_BREAK", "")
sock = socket.socket(fileno=int(os.environ["TGRUNNER_FD"]))
buf = b""
job = None                     # (id, chat, kind, until)

def send(obj):
    sock.sendall(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

def answer(uid, chat=None, text=None, fail=None, retry=False):
    if BREAK == "wrong-id":
        uid += 1
    if fail is not None:
        send({"type": "fail", "id": uid, "error": fail, "retry": retry})
        return
    f = {"type": "done", "id": uid}
    if text is not None:
        f["calls"] = [{"method": "sendMessage",
                       "params": {"chat_id": chat, "text": text}}]
    send(f)

def on_update(f):
    global job
    m = f["update"].get("message", {})
    text, chat = m.get("text", ""), m.get("chat", {}).get("id")
    if text.startswith("echo "):
        answer(f["id"], chat, text[5:])
    elif text == "call":
        send({"type": "call", "id": f["id"], "ref": "r%d" % f["id"],
              "method": "getMe", "params": {}})
        job = (f["id"], chat, "call", None)
    elif text.startswith("sleep "):
        job = (f["id"], chat, "sleep", time.monotonic() +
               int(text[6:]) / 1000)
    elif text == "fail":
        answer(f["id"], fail="asked to fail")
    elif text == "raise":
        answer(f["id"], fail="raised", retry=True)
    else:
        answer(f["id"])

def on_frame(f):
    global job
    if f["type"] == "update":
        on_update(f)
    elif f["type"] == "cancel" and job and job[0] == f["id"]:
        answer(job[0], fail="cancelled", retry=True)
        job = None
    elif f["type"] == "result" and job and job[2] == "call":
        r = f["result"]["username"] if f["ok"] else f["error_code"]
        answer(job[0], job[1], ("me:%s" if f["ok"] else "error:%s") % r)
        job = None

if BREAK == "no-hello":
    time.sleep(60)
send({"type": "hello", "protocol": 1, "slots": 1, "name": "mini"})
shutdown = False
while not (shutdown and job is None):
    left = None if not job or not job[3] else \
        max(0, job[3] - time.monotonic())
    if select.select([sock], [], [], left)[0]:
        data = sock.recv(65536)
        if not data:
            sys.exit(0)
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            f = json.loads(line)
            if f["type"] == "shutdown":
                shutdown = True
            elif f["type"] != "welcome":
                on_frame(f)
    if job and job[3] and time.monotonic() >= job[3]:
        answer(job[0])
        job = None
'''


class Conformance(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="tgconf-")
        cls.mini = os.path.join(cls.tmp, "mini-worker.py")
        with open(cls.mini, "w") as fp:
            fp.write(MINI_WORKER)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, True)

    def run_tool(self, cmd, args=(), env=None):
        """Run the tool; returns (exit status, stdout lines)."""
        e = dict(os.environ)
        e.pop("CW_BREAK", None)
        e.update(env or {})
        p = subprocess.run([sys.executable, TOOL] + list(args) + ["--"] +
                           cmd, env=e, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT,
                           universal_newlines=True)
        sys.stderr.write("--- %s\n%s" % (" ".join(cmd), p.stdout))
        return p.returncode, p.stdout.splitlines()

    def assertConforms(self, cmd, lib, env=None):
        rc, out = self.run_tool(cmd, env=env)
        failed = {ln[len("not ok - "):].split(":", 1)[0] for ln in out
                  if ln.startswith("not ok - ")}
        passed = {ln[len("ok - "):].split(" ", 1)[0] for ln in out
                  if ln.startswith("ok - ")}
        skipped = {ln[len("ok - "):].split(" ", 1)[0] for ln in out
                   if ln.startswith("ok - ") and " # SKIP " in ln}
        known = KNOWN_FAILURES.get(lib, set())
        self.assertEqual(failed - known, set(), "checks failed:\n" +
                         "\n".join(out))
        self.assertEqual(passed & known, set(), "known failures of %s now "
                         "pass: remove them from KNOWN_FAILURES" % lib)
        summary = "%d passed, %d failed" % (len(passed - skipped),
                                            len(failed))
        if skipped:
            summary += ", %d skipped" % len(skipped)
        self.assertTrue(out and out[-1] == summary, out)
        self.assertEqual(rc, 1 if failed else 0, out)
        self.assertGreaterEqual(len(passed) + len(failed), 13, out)
        return out

    def test_c_worker(self):
        if not os.access(C_WORKER, os.X_OK):
            self.fail("missing %s (build it)" % C_WORKER)
        out = self.assertConforms([C_WORKER], "c")
        self.assertIn("ok - concurrency", out, "TG_SLOTS=4 not honoured")

    def test_python_worker(self):
        if not os.path.exists(PY_WORKER):
            self.skipTest("no %s yet" % PY_WORKER)
        lib = os.path.join(tgtest.SRCDIR, "worker-sdk", "python")
        path = os.pathsep.join(p for p in (
            lib, os.path.join(lib, "src"), os.environ.get("PYTHONPATH"))
            if p)
        self.assertConforms([sys.executable, PY_WORKER], "python",
                            {"PYTHONPATH": path})

    def test_node_worker(self):
        if not os.path.exists(NODE_WORKER):
            self.skipTest("no %s yet" % NODE_WORKER)
        node = shutil.which("node") or shutil.which("nodejs")
        if node is None:
            self.skipTest("no node in PATH")
        self.assertConforms([node, NODE_WORKER], "node")

    def test_mini_worker(self):
        """The tool passes a correct worker written without any SDK, and
        skips the concurrency check for a one-slot worker."""
        out = self.assertConforms([sys.executable, self.mini], "mini")
        self.assertIn("ok - concurrency # SKIP hello says slots=1 with "
                      "TG_SLOTS=4", out)

    def test_wrong_id(self):
        rc, out = self.run_tool([sys.executable, self.mini],
                                ["--only", "echo,fail-raise"],
                                {"CW_BREAK": "wrong-id"})
        self.assertEqual(rc, 1, out)
        m = [re.match(r"not ok - echo: done for id (\d+), expected "
                      r"(\d+)$", ln) for ln in out]
        m = [x for x in m if x]
        self.assertTrue(m, out)
        self.assertEqual(int(m[0].group(1)), int(m[0].group(2)) + 1, out)
        self.assertTrue(any(ln.startswith("not ok - fail-raise: fail for "
                                          "id ") for ln in out), out)
        self.assertEqual(out[-1], "0 passed, 2 failed")

    def test_no_hello(self):
        rc, out = self.run_tool([sys.executable, self.mini],
                                ["--only", "handshake"],
                                {"CW_BREAK": "no-hello"})
        self.assertEqual(rc, 1, out)
        self.assertIn("not ok - handshake: no hello within 5.0 s", out)
        self.assertEqual(out[-1], "0 passed, 1 failed")


if __name__ == "__main__":
    tgtest.main()
