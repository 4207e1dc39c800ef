#!/usr/bin/env python3
"""Worker output in the daemon's log: stderr at warning, stdout at info,
control bytes escaped, long lines cut, a traceback one log line, and a
worker flooding stderr bounded by the rate limit while other updates flow."""

import os
import shlex
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase, key_chat	# noqa: E402

WORKER = shlex.quote(tgtest.worker_path())

# what a worker says before it starts serving: on both streams, once
SAY = r"""
printf 'to stdout\n'
printf 'to stderr \033[31mred\033[0m bell\007 del\177 tab\tend\n' >&2
head -c 10000 /dev/zero | tr '\0' 'x'; printf '\n'
python3 -c 'def f(): raise ValueError("boom")
f()' || true
printf 'out again\n'
"""


class WorkerOutput(ScenarioCase):

    def test_streams_escapes_cut_traceback(self):
        fake = self.start_fake()
        script = os.path.join(self.subdir("w"), "say.sh")
        with open(script, "w") as f:
            f.write(SAY + "exec " + WORKER + "\n")
        cmd = "sh %s" % shlex.quote(script)
        d = self.start_daemon(fake, workers=1, worker_command=cmd)
        d.wait_log(r"out again")
        d.wait_log(r"Traceback")
        tb = d.grep(r"Traceback")[0]
        # stdout at info, stderr at warning (syslog-style level prefixes)
        out = d.grep(r"worker=\d+ pid=\d+: to stdout$")
        self.assertEqual(len(out), 1, d.log_tail())
        self.assertTrue(out[0].startswith("<6>"), out[0])
        err = d.grep(r"worker=\d+ pid=\d+: to stderr ")
        self.assertEqual(len(err), 1, d.log_tail())
        self.assertTrue(err[0].startswith("<4>"), err[0])
        # control bytes escaped: nothing raw reaches the log
        self.assertIn(r"to stderr \x1b[31mred\x1b[0m bell\x07 del\x7f "
                      r"tab\x09end", err[0])
        with open(d.log_path, "rb") as f:
            raw = f.read()
        for b in (b"\x1b", b"\x07", b"\x7f", b"\t"):
            self.assertNotIn(b, raw)
        # a long line is cut at 4 KiB and says so
        cut = d.grep(r"worker=\d+ pid=\d+: x+ \[cut 5904 bytes\]$")
        self.assertEqual(len(cut), 1, d.log_tail())
        self.assertIn("x" * 4096 + " [cut", cut[0])
        self.assertNotIn("x" * 4097, cut[0])
        # the traceback is one warning, lines joined with an escaped newline
        self.assertTrue(tb.startswith("<4>"), tb)
        self.assertRegex(tb, r"Traceback \(most recent call last\):\\n  "
                         r"File .*\\n.*ValueError: boom$")
        self.assertEqual(d.grep(r"ValueError: boom"), [tb])
        ids = self.generate(fake, 20, 5)
        self.finish(fake, d, ids)

    def test_stderr_flood_bounded(self):
        fake = self.start_fake()
        # worker 1 floods stderr for 3 s from a process of its group
        flood = ('if [ "$TGRUNNER_WORKER_ID" = 1 ]; then '
                 '(timeout 3 yes >&2) & fi; ')
        cmd = "sh -c %s" % shlex.quote(flood + "exec " + WORKER)
        d = self.start_daemon(fake, workers=2, worker_command=cmd)
        size0 = os.path.getsize(d.log_path)
        t0 = time.monotonic()
        # updates released during the flood: served meanwhile
        ids = self.generate(fake, 300, 30, rate=100)
        rec = d.records()
        rec.wait_ended(ids, 60, daemon=d)
        elapsed = time.monotonic() - t0
        lat = rec.latency(fake.released())
        sys.stderr.write("flood: %d updates in %.1f s, latency ms %s, "
                         "log grew %d bytes\n"
                         % (len(ids), elapsed, lat,
                            os.path.getsize(d.log_path) - size0))
        grew = os.path.getsize(d.log_path) - size0
        # the burst (1 MiB) + 64 KiB/s over the 3 s flood (~1.25 MB at
        # most, the bucket counting 48 bytes a line for a shorter prefix),
        # with room for the daemon's own lines; unlimited, it is ~40 MB
        self.assertLess(grew, 1024 * 1024 + 400 * 1024, d.log_tail())
        d.wait_log(r"worker=1 pid=\d+: dropped \d+ bytes of output "
                   r"\(rate limit 64 KiB/s\)", timeout=30)
        # others served meanwhile: no update waited for the flood to end
        self.assertLess(lat["p99"], 1500, lat)
        dropped = sum(int(m) for m in
                      (line.split("dropped ")[1].split(" ")[0]
                       for line in d.grep(r"dropped \d+ bytes of output")))
        self.assertGreater(dropped, 1024 * 1024)
        rec = self.finish(fake, d, ids)
        rep = rec.check(ids, key_of=key_chat)
        self.assertReport(rep, d)


if __name__ == "__main__":
    tgtest.main()
