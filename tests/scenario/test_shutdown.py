#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""SIGTERM under load: the daemon drains what is in flight, dispatches
nothing new, exits 0 within shutdown_timeout, and a restart delivers the
rest from the journal."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase, key_chat	# noqa: E402

COUNT = 2000
WORKERS = 4
SHUTDOWN_TIMEOUT = 10


class Shutdown(ScenarioCase):

    def test_sigterm_under_load(self):
        fake = self.start_fake()
        d = self.start_daemon(fake, workers=WORKERS,
                              shutdown_timeout="%ds" % SHUTDOWN_TIMEOUT,
                              worker_env={"TG_SLEEP_MS": "20"})
        ids = self.generate(fake, COUNT, 200)
        rec = d.records()
        tgtest.wait_until(lambda: len(rec.ended()) >= 200, 60,
                          what="200 updates ended")
        workers = d.worker_pids()
        self.assertTrue(workers)
        t_term = time.time_ns()
        t0 = time.monotonic()
        d.kill(signal.SIGTERM)
        rc = d.wait_exit(SHUTDOWN_TIMEOUT + 20)
        took = time.monotonic() - t0
        sys.stderr.write("SIGTERM -> exit %s in %.2fs\n" % (rc, took))
        self.assertEqual(rc, 0, d.log_tail())
        self.assertLess(took, SHUTDOWN_TIMEOUT + 3)
        self.assertEqual(d.check_leftovers(), [], "workers outlived the "
                         "daemon")
        self.assertTrue(all(tgtest.pid_gone(p) for p in workers))
        stop_point = (rec.line_count(), t_term)
        left = rec.missing(ids)
        self.assertTrue(left, "everything finished before the stop: the "
                        "test did not test a drain")
        # dispatched before SIGTERM but not started yet: at most one per
        # slot; anything more was dispatched during the drain
        late = [r for r in rec.recs if r.kind == "S" and r.t > t_term]
        self.assertLessEqual(len(late), WORKERS,
                             "%d updates started after SIGTERM" % len(late))
        open_at_stop = {r.id for r in rec.recs if r.kind == "S"} - \
            {r.id for r in rec.recs if r.kind != "S"}
        sys.stderr.write("%d ended, %d left, %d open at the stop\n"
                         % (COUNT - len(left), len(left), len(open_at_stop)))

        d.restart()
        rec = self.finish(fake, d, ids, timeout=120)
        rep = rec.check(ids, key_of=key_chat, kills=[stop_point],
                        dup_grace=0)
        sys.stderr.write(rep.summary() + "\n")
        self.assertReport(rep, d)


if __name__ == "__main__":
    tgtest.main()
