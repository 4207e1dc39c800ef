#!/usr/bin/env python3
"""The chaos suite (tests/chaos/run.py) scaled down for `make check`:
worker SIGKILLs, SIGSTOPped workers, misbehaving workers, daemon SIGKILLs
with restarts (and replies owed at the kills), every Bot API fault
including an outage, a full disk and a read-only state directory.  Each
scenario must lose nothing, updates or replies, and violate nothing.  About 60-80 s on 2 cores."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "chaos"))
import tgtest					# noqa: E402
import chaoslib					# noqa: E402
import scenarios				# noqa: E402

QUICK = ("worker_sigkill", "worker_sigstop", "worker_misbehave",
         "daemon_sigkill", "api_faults", "disk_full", "fsize_limit")


class ChaosQuick(tgtest.ScenarioCase):

    def test_quick(self):
        fns = dict(scenarios.SCENARIOS)
        seed = tgtest.test_seed()
        results = []
        for i, name in enumerate(QUICK):
            r = chaoslib.run_scenario(name, fns[name], seed + i, quick=True)
            sys.stderr.write("chaos: %s %s in %.0fs\n" % (name, r.verdict,
                                                          r.seconds))
            results.append(r)
        text = chaoslib.table(results)
        sys.stderr.write(text + "\n")
        bad = [r.name for r in results if not r.ok]
        self.assertEqual(bad, [], "chaos scenarios failed (replay with "
                         "TG_TEST_SEED=%d):\n%s" % (seed, text))
        self.assertTrue(any(r.verdict == "PASS" for r in results))


if __name__ == "__main__":
    tgtest.main()
