#!/usr/bin/env python3
"""Dead letters: an update that keeps failing is retried up to
max_attempts, then written to state_dir/dead-letters.jsonl with the reason
(never dropped silently); `tgrunnerctl dead-letters` lists them and
`dead-letters retry` queues them again.  A reason of several lines (a
worker's exception) stays one escaped row of the table."""

import json
import os
import shlex
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase, build_path, wait_until	# noqa: E402


class DeadLetters(ScenarioCase):

    def ctl(self, d, *args):
        out = subprocess.run([build_path("tgrunnerctl"), "-s",
                              d.conf["control_socket"], "--json"] +
                             list(args), capture_output=True, text=True,
                             timeout=10)
        self.assertEqual(out.returncode, 0, out.stderr)
        return json.loads(out.stdout)

    def test_failing_updates_are_kept_and_retried(self):
        fake = self.start_fake()
        d = self.start_daemon(fake, workers=2, max_attempts=2,
                              control_socket=os.path.join(self.tmp, "c.sock"),
                              worker_env={"TG_FAIL": "1"})
        ids = self.generate(fake, 20, 5)
        wait_until(lambda: len(d.dead_letters()) == 20, 30,
                   what="20 dead letters")
        for dl in d.dead_letters():
            self.assertEqual(dl["attempts"], 2)
            self.assertIn("worker failed it", dl["reason"])
            self.assertIn("message", dl["update"])
        listed = self.ctl(d, "dead-letters")["dead_letters"]
        self.assertEqual(sorted(x["update_id"] for x in listed), ids)
        status = self.ctl(d, "status")
        self.assertEqual(status["updates"]["dead"], 20)
        self.assertEqual(status["journal"]["pending"], 0)

        # a fixed worker, then the dead letters go round again
        self.assertEqual(d.stop(), 0)
        d.restart(worker_env={"TG_FAIL": "0"})
        d.wait_ready()
        self.assertEqual(self.ctl(d, "dead-letters", "retry", str(ids[0]))
                         ["requeued"], 1)
        # it is no dead letter any more: a retry of it says so and fails
        again = subprocess.run([build_path("tgrunnerctl"), "-s",
                                d.conf["control_socket"], "dead-letters",
                                "retry", str(ids[0])], capture_output=True,
                               text=True, timeout=10)
        self.assertEqual(again.returncode, 1, again.stderr)
        self.assertIn("no dead letter with update_id %d" % ids[0],
                      again.stderr)
        self.assertEqual(self.ctl(d, "dead-letters", "retry", "all")
                         ["requeued"], 19)
        rec = d.records()
        wait_until(lambda: all(rec.refresh().end_count.get(i) for i in ids),
                   30, what="requeued updates done")
        self.assertEqual(d.dead_letters(), [])
        self.assertEqual(self.ctl(d, "dead-letters")["dead_letters"], [])
        self.assertEqual(d.stop(), 0)

    def test_multi_line_reason_is_one_row(self):
        # a Python worker whose handler raises an exception with a
        # newline and a tab in its message, which becomes the reason
        bot = os.path.join(self.tmp, "raising.py")
        with open(bot, "w") as f:
            f.write("from tgrunner_worker import Worker\n"
                    "w = Worker()\n"
                    "@w.handler\n"
                    "async def on_update(ctx):\n"
                    "    raise ValueError('first line\\nsecond\\tline')\n"
                    "w.run()\n")
        sdk = os.path.join(tgtest.SRCDIR, "worker-sdk", "python")
        cmd = "env PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=%s %s %s" % (
            shlex.quote(sdk), shlex.quote(sys.executable), shlex.quote(bot))
        fake = self.start_fake()
        d = self.start_daemon(fake, workers=1, max_attempts=1,
                              worker_command=cmd,
                              control_socket=os.path.join(self.tmp, "c.sock"))
        ids = self.generate(fake, 3, 1)
        wait_until(lambda: len(d.dead_letters()) == 3, 30,
                   what="3 dead letters")
        reason = "worker failed it: ValueError: first line\nsecond\tline"
        self.assertEqual([dl["reason"] for dl in d.dead_letters()],
                         [reason] * 3)
        out = subprocess.run([build_path("tgrunnerctl"), "-s",
                              d.conf["control_socket"], "dead-letters"],
                             capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 0, out.stderr)
        rows = out.stdout.splitlines()
        self.assertEqual(len(rows), 4, out.stdout)	# a header, 3 rows
        self.assertTrue(rows[0].startswith("UPDATE "), rows[0])
        for uid, row in zip(ids, rows[1:]):
            self.assertTrue(row.startswith("%d " % uid), row)
            self.assertTrue(row.endswith(" worker failed it: ValueError: "
                                         "first line\\nsecond\\tline"), row)
        # --json keeps the reason as it is
        self.assertEqual([x["reason"] for x in self.ctl(d, "dead-letters")
                          ["dead_letters"]], [reason] * 3)
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    tgtest.main()
