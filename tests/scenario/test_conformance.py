#!/usr/bin/env python3
"""The worker conformance tool (tests/conformance/tgrunner-conformance)
against the conformance worker of every worker library: C (built here),
Python and Node.js (each skipped with a message while its file is missing).
Each run must report every check passed, with every frame judged by the
daemon's decoder too (tgrunner-framecheck).  A small worker in this file
uses every legal spelling (the tool must pass it) and breaks the protocol
in one way per new check (the tool must fail it, with the right "not ok"
line).  The tool's frame checks must give every verdict of proto/vectors.
About 90 s."""

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
FRAMECHECK = tgtest.build_path(os.path.join("tests", "conformance",
                                            "tgrunner-framecheck"))
VECTORS = os.path.join(tgtest.SRCDIR, "proto", "vectors")
RUN_TIMEOUT = 180

# Checks a library is known to fail, with the reason; the test fails when
# one of them starts passing, so that the entry gets removed.
KNOWN_FAILURES = {}

# A one-slot conformance worker without any SDK.  CW_BREAK=MODE[,MODE...]
# changes it: the legal spellings a worker may use (the tool must pass
# them) and ways to break the protocol (the tool must fail each, in the
# check named in BROKEN below).
MINI_WORKER = r'''
import json, os, select, socket, sys, time
MODES = set(os.environ.get("CW_BREAK", "").split(","))
sock = socket.socket(fileno=int(os.environ["TGRUNNER_FD"]))
buf = b""
job = None                     # (id, chat, kind, until)
max_frame = 1048576
WELCOME = {"type", "protocol", "worker_id", "bot", "max_frame"}
RESULT = {"type", "ref", "ok", "result", "error_code", "description",
          "parameters", "retry_after"}

def encode(obj):
    if "extra-members" in MODES:
        obj = dict(obj, **{"x-future": {"a": [1]}})
        if "calls" in obj:
            obj["calls"] = [dict(c, **{"x-note": 1}) for c in obj["calls"]]
    if "spaces" in MODES:
        text = " " + json.dumps(obj, separators=(" , ", " :\t")) + " "
    else:
        text = json.dumps(obj, separators=(",", ":"))
    return text.encode() + (b"\r\n" if "crlf" in MODES else b"\n")

def send(obj):
    sock.sendall(encode(obj))

def answer(uid, chat=None, text=None, fail=None, retry=False):
    if "wrong-id" in MODES:
        uid += 1
    if "lossy-ids" in MODES:
        uid = int(float(uid))
    if fail is not None:
        send({"type": "fail", "id": uid, "error": fail, "retry": retry})
        return
    f = {"type": "done", "id": uid}
    if text is not None:
        f["calls"] = [{"method": "sendMessage",
                       "params": {"chat_id": chat, "text": text}}]
    if len(encode(f)) > max_frame and "oversize" not in MODES:
        send({"type": "fail", "id": uid, "error": "reply too large",
              "retry": False})
        return
    send(f)
    if "double-done" in MODES:
        send(f)

def ref_of(uid):
    return 2**64 + uid if "big-ref" in MODES else "r%d" % uid

def on_update(f):
    global job
    m = f["update"].get("message", {})
    text, chat = m.get("text", ""), m.get("chat", {}).get("id")
    if text.startswith("echo "):
        answer(f["id"], chat, text[5:])
    elif text == "call":
        send({"type": "call", "id": f["id"], "ref": ref_of(f["id"]),
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
    global job, max_frame
    t = f["type"]
    if t == "welcome":
        if "strict-welcome" in MODES and set(f) - WELCOME:
            sys.exit(3)
        max_frame = f["max_frame"]
    elif t == "update":
        on_update(f)
    elif t == "cancel" and job and job[0] == f["id"]:
        answer(job[0], fail="cancelled", retry=True)
        if "late-done" not in MODES:
            job = None
    elif t == "cancel" and "answer-crossed-cancel" in MODES:
        answer(f["id"], fail="cancelled", retry=True)
    elif t == "result":
        if "strict-result" in MODES and set(f) - RESULT:
            sys.exit(3)
        if job and job[2] == "call" and f["ref"] == ref_of(job[0]):
            r = f["result"]["username"] if f["ok"] else f["error_code"]
            answer(job[0], job[1], ("me:%s" if f["ok"] else "error:%s") % r)
            job = None
        elif "unknown-ref-fatal" in MODES:
            sys.exit(3)

if "no-hello" in MODES:
    time.sleep(60)
send({"type": "hello", "protocol": 1, "slots": 1, "name": "mini"})
shutdown = False
while not (shutdown and job is None) or "no-idle-exit" in MODES:
    left = None if not job or not job[3] else \
        max(0, job[3] - time.monotonic())
    if select.select([sock], [], [], left)[0]:
        data = sock.recv(65536)
        if not data:
            sys.exit(0)
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                f = json.loads(line)
            except ValueError:
                if "answer-malformed" in MODES:
                    send({"type": "fail", "id": 0, "error": "bad line"})
                if "ignore-malformed" in MODES or \
                        "answer-malformed" in MODES:
                    continue
                raise
            if f["type"] == "shutdown":
                shutdown = True
            else:
                on_frame(f)
    if job and job[3] and time.monotonic() >= job[3]:
        answer(job[0])
        job = None
'''

# The legal spellings, all at once: the tool must pass them.
LEGAL = "spaces,crlf,extra-members,ignore-malformed"

# mode: (checks to run, the "not ok" line the tool must print)
BROKEN = {
    "wrong-id": ("echo", r"not ok - echo: done for update \d+, which the "
                 r"worker does not hold \(never sent to it\)"),
    "no-hello": ("handshake", r"not ok - handshake: no hello within 5.0 s$"),
    # handshake ends with its one echo: the second done comes after it
    "double-done": ("handshake", r"not ok - handshake: done for update \d+, "
                    r"which the worker does not hold \(answered already\)"),
    "late-done": ("cancel", r"not ok - cancel: done for update \d+, which "
                  r"the worker does not hold \(answered already\): only the "
                  r"first answer counts"),
    "answer-crossed-cancel": (
        "crossed-cancel", r"not ok - crossed-cancel: fail for update \d+, "
        r"which the worker does not hold \(answered already\)"),
    "no-idle-exit": ("idle-shutdown", r"not ok - idle-shutdown: worker still "
                     r"connected 5 s after a shutdown with nothing running"),
    "big-ref": ("call-result", r"not ok - call-result: bad frame from "
                r"worker \(number out of range \(integers must fit in 64 "
                r"bits\)"),
    "strict-welcome": ("unknown-member", r"not ok - unknown-member: with "
                       r"unknown members: worker closed the socket"),
    "strict-result": ("unknown-member", r"not ok - unknown-member: with "
                      r"unknown members: worker closed the socket while the "
                      r"tool waited for the answer to update"),
    "unknown-ref-fatal": ("id-range", r"not ok - id-range: after results of "
                          r"unknown refs: worker closed the socket"),
    "lossy-ids": ("id-range", r"not ok - id-range: update id "
                  r"9223372036854775807: bad frame from worker \(number out "
                  r"of range"),
    "oversize": ("max-frame", r"not ok - max-frame: bad frame from worker "
                 r"\(\d+ bytes with its newline, more than max_frame 4096\)"),
    "answer-malformed": ("malformed-input", r"not ok - malformed-input: fail "
                         r"for update 0, which the worker does not hold "
                         r"\(never sent to it\)"),
}

# A tgrunner-framecheck that finds every frame valid: the tool must notice
# that it disagrees with its own checks.
LAX_FRAMECHECK = r'''
import sys
while True:
    head = sys.stdin.buffer.readline()
    if not head:
        break
    sys.stdin.buffer.read(int(head.split()[1]))
    sys.stdout.write("ok done\n")
    sys.stdout.flush()
'''


class Conformance(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="tgconf-")
        cls.mini = os.path.join(cls.tmp, "mini-worker.py")
        with open(cls.mini, "w") as fp:
            fp.write(MINI_WORKER)
        cls.lax = os.path.join(cls.tmp, "lax-framecheck")
        with open(cls.lax, "w") as fp:
            fp.write("#!%s\n%s" % (sys.executable, LAX_FRAMECHECK))
        os.chmod(cls.lax, 0o755)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, True)

    def run_tool(self, cmd, args=(), env=None, framecheck=FRAMECHECK):
        """Run the tool (judging with the daemon's decoder too); returns
        (exit status, stdout lines)."""
        e = dict(os.environ)
        e.pop("CW_BREAK", None)
        e.pop("TGRUNNER_FRAMECHECK", None)
        e.update(env or {})
        fc = ["--framecheck", framecheck] if framecheck else []
        p = subprocess.run([sys.executable, TOOL] + fc + list(args) +
                           (["--"] + cmd if cmd else []), env=e,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=RUN_TIMEOUT, universal_newlines=True)
        sys.stderr.write("--- %s\n%s" % (" ".join(cmd or args), p.stdout))
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
        self.assertGreaterEqual(len(passed) + len(failed), 17, out)
        return out

    def test_usage(self):
        # the conventions of the other programs: --help and --version on
        # stdout with status 0, a usage error on stderr with status 64
        def tool(*args):
            p = subprocess.run([sys.executable, TOOL] + list(args),
                               capture_output=True, universal_newlines=True,
                               timeout=60)
            return p.returncode, p.stdout, p.stderr
        for opt in ("--help", "-h"):
            rc, out, err = tool(opt)
            self.assertEqual((rc, err), (0, ""))
            self.assertTrue(out.startswith("usage: tgrunner-conformance "))
        for opt in ("--version", "-V"):
            self.assertEqual(tool(opt), (
                0, "tgrunner-conformance (worker protocol 1)\n", ""))
        for args in ((), ("--no-such-option",), ("--timeout", "0", "--",
                     "true"), ("--only", "nonesuch", "--", "true")):
            with self.subTest(args):
                rc, out, err = tool(*args)
                self.assertEqual((rc, out), (64, ""), err)
                self.assertIn("usage: tgrunner-conformance", err)

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
                            {"PYTHONPATH": path,
                             "PYTHONDONTWRITEBYTECODE": "1"})

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

    def test_legal_spellings(self):
        """Whitespace between tokens, CR LF line ends, unknown members in
        every frame and in done.calls[i], and ignoring a malformed daemon
        line are all legal (PROTOCOL.md sections 2 and 5)."""
        self.assertConforms([sys.executable, self.mini], "mini",
                            {"CW_BREAK": LEGAL})

    def test_broken_workers(self):
        """Each way of breaking the protocol fails its check, with a line
        that says what went wrong."""
        for mode, (checks, want) in sorted(BROKEN.items()):
            with self.subTest(mode=mode):
                rc, out = self.run_tool([sys.executable, self.mini],
                                        ["--only", checks],
                                        {"CW_BREAK": mode})
                self.assertEqual(rc, 1, out)
                m = [re.match(want, ln) for ln in out]
                m = [x for x in m if x]
                self.assertTrue(m, "no line /%s/ in\n%s"
                                % (want, "\n".join(out)))
                n = len(checks.split(","))
                self.assertEqual(out[-1], "0 passed, %d failed" % n, out)

    def test_vectors(self):
        """The tool's frame checks give every verdict of proto/vectors,
        alone and next to the daemon's decoder."""
        for fc in (None, FRAMECHECK):
            rc, out = self.run_tool(None, ["--check-vectors", VECTORS],
                                    framecheck=fc)
            self.assertEqual(rc, 0, out)
            self.assertRegex(out[-1], r"^\d{3} vectors, 0 wrong verdicts$")

    def test_vectors_can_fail(self):
        """A vector with the wrong verdict is reported."""
        vec = os.path.join(self.tmp, "vectors")
        shutil.copytree(VECTORS, vec)
        shutil.copy(os.path.join(vec, "valid", "done_whitespace.json"),
                    os.path.join(vec, "invalid", "w2d_mislabeled.json"))
        rc, out = self.run_tool(None, ["--check-vectors", vec])
        self.assertEqual(rc, 1, out)
        self.assertIn("not ok - vector invalid/w2d_mislabeled.json: "
                      "accepted", out)

    def test_decoders_must_agree(self):
        """With a decoder that disagrees with the tool's checks, the tool
        says so rather than judging by either."""
        rc, out = self.run_tool([sys.executable, self.mini],
                                ["--only", "call-result"],
                                {"CW_BREAK": "big-ref"}, framecheck=self.lax)
        self.assertEqual(rc, 1, out)
        self.assertTrue(any("tgrunner-conformance and the daemon's decoder "
                            "disagree on a frame (tool: number out of range"
                            in ln for ln in out), out)


if __name__ == "__main__":
    tgtest.main()
