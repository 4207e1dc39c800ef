#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""SIGKILL the daemon and all its workers at random moments, restart on the
same state_dir: nothing is lost, and every duplicate is explained by a
kill (it was in progress, or had just ended, when the kill came)."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase, key_chat	# noqa: E402

COUNT = 5000
KILLS = 5


class Crash(ScenarioCase):

    def test_sigkill_restart(self):
        fake = self.start_fake()
        d = self.start_daemon(fake, workers=4, worker_env={"TG_SLEEP_MS": "0-2"})
        # released over ~3 s so kills land while polling and journaling too
        ids = self.generate(fake, COUNT, 200, rate=1500)
        rec = d.records()
        targets = sorted(int(self.rng.uniform(0.05, 0.9) * COUNT)
                         for _ in range(KILLS))
        kills = []
        for target in targets:
            tgtest.wait_until(lambda: len(rec.ended()) >= target or
                              not d.running(), 60,
                              what="%d updates ended" % target)
            self.assertTrue(d.running(), d.log_tail())
            time.sleep(self.rng.uniform(0, 0.05))
            t = d.crash()
            # all processes are dead: this line count is final for the kill
            kills.append((rec.line_count(), t))
            sys.stderr.write("kill at %d ended, line %d\n"
                             % (len(rec.ended()), kills[-1][0]))
            d.start()
            d.wait_ready()
        rec = self.finish(fake, d, ids, timeout=120)
        rep = rec.check(ids, key_of=key_chat, kills=kills, dup_grace=1.0,
                        check_replay_attempts=True)
        sys.stderr.write(rep.summary() + "\n")
        self.assertReport(rep, d)
        self.assertEqual(rep.kills, KILLS)
        # a sanity bound: a kill can only duplicate what was in flight or
        # just finished, not whole swathes of the journal
        self.assertLessEqual(len(rep.duplicated), KILLS * 1000,
                             rep.summary())


if __name__ == "__main__":
    tgtest.main()
