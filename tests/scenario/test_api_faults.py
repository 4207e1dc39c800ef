#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""A misbehaving Bot API: every fault the fake can inject on getUpdates,
a rejected token, and the token never leaking into logs, argv or worker
environments.  Every run uses a canary token and checks the log for it."""

import glob
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase, key_chat	# noqa: E402

SECRET = "AAH-leak-canary-Zq9xW3"
TOKEN = "424242:" + SECRET
BACKOFF_MIN = 0.1


class ApiFaults(ScenarioCase):

    def setUp(self):
        super().setUp()
        self.fake = self.start_fake(token=TOKEN)

    def daemon(self, **kw):
        kw.setdefault("workers", 2)
        kw.setdefault("worker_env", {"TG_SLEEP_MS": "0-1"})
        kw.setdefault("backoff_min", "%dms" % (BACKOFF_MIN * 1000))
        return self.start_daemon(self.fake, **kw)

    def assertNoLeak(self, d):
        text = d.log_text()
        with open(d.log_path, errors="replace") as f:
            text += f.read()
        self.assertNotIn(SECRET, text, "token leaked into the log")

    def deliver(self, d, count=300, rate=100):
        """Generate updates released over a few seconds (so faults hit
        while updates are waiting); all must end exactly once."""
        ids = self.generate(self.fake, count, 30, rate=rate)
        rec = self.finish(self.fake, d, ids)
        rep = rec.check(ids, key_of=key_chat)
        self.assertReport(rep, d)
        self.assertEqual(rep.duplicated, {})
        self.assertNoLeak(d)
        return rec

    def polls(self):
        return self.fake.stats()["polls"]

    def run_fault(self, kind, count=1, **kw):
        d = self.daemon()
        p0 = self.polls()
        self.fake.fault(kind, count=count, **kw)
        rec = self.deliver(d)
        # the fault was served (each one is a poll of its own)
        self.assertGreaterEqual(self.polls() - p0, count + 1)
        return rec

    def test_5xx(self):
        self.run_fault("5xx", count=5)

    def test_409(self):
        self.run_fault("409", count=3)

    def test_slow(self):
        self.run_fault("slow", delay_ms=3000)

    def test_truncated(self):
        self.run_fault("truncated", count=2)

    def test_malformed(self):
        self.run_fault("malformed", count=2)

    def test_reset(self):
        self.run_fault("reset", count=2)

    def test_429_waits_retry_after(self):
        d = self.daemon()
        retry_after = 2
        # updates keep coming for ~4 s: without the 429 the daemon polls
        # many times a second, so a long gap between polls is the wait
        self.fake.fault("429", retry_after=retry_after)
        ids = self.generate(self.fake, 400, 30, rate=100)
        samples = []
        t_end = time.monotonic() + 5
        while time.monotonic() < t_end:	# sampling over a fixed window
            samples.append((time.monotonic(), self.polls()))
            time.sleep(0.02)
        gaps = poll_gaps(samples)
        gap = max(gaps) if gaps else 0
        sys.stderr.write("longest pause between polls: %.2fs\n" % gap)
        self.assertGreaterEqual(gap, retry_after * 0.7,
                                "no pause after 429 retry_after=%d"
                                % retry_after)
        self.assertLessEqual(gap, retry_after + 3)
        rec = self.finish(self.fake, d, ids)
        self.assertReport(rec.check(ids, key_of=key_chat), d)
        self.assertNoLeak(d)

    def test_5xx_backoff_does_not_spin(self):
        d = self.daemon()
        window = 2.0
        p0 = self.polls()
        self.fake.fault("5xx", count=-1)
        time.sleep(window)		# counting polls over a fixed window
        p1 = self.polls()
        self.fake.clear_faults()
        n = p1 - p0
        sys.stderr.write("%d polls during %.0fs of 5xx\n" % (n, window))
        self.assertLessEqual(n, window / BACKOFF_MIN + 3,
                             "polling spins on 5xx")
        self.assertTrue(d.running())
        self.deliver(d, rate=0)

    def test_bad_token(self):
        d = self.daemon(wait=False, token="424242:WRONG-" + SECRET)
        rc = d.wait_exit(30)
        self.assertEqual(rc, 77, d.log_tail())
        self.assertEqual(d.check_leftovers(), [])
        self.assertLessEqual(self.polls(), 2, "retried a rejected token")
        self.assertTrue(d.grep(r"(?i)unauthori[sz]ed|401|token|rejected"),
                        "no clear message\n" + d.log_tail())
        self.assertNoLeak(d)

    def test_token_not_leaked(self):
        envdump = os.path.join(self.tmp, "env")
        # replies at full speed: the fake does not rate-limit
        d = self.daemon(log_level="debug", flood_control=False,
                        worker_env={"TG_SLEEP_MS": "0-1", "TG_REPLY": "1",
                                    "TG_ENVDUMP": envdump})
        with open("/proc/%d/cmdline" % d.pid, "rb") as f:
            self.assertNotIn(SECRET.encode(), f.read())
        self.fake.fault("5xx", count=2)
        self.deliver(d, count=200, rate=0)
        dumps = glob.glob(envdump + ".*")
        self.assertTrue(dumps, "no worker wrote TG_ENVDUMP")
        for path in dumps:
            with open(path, errors="replace") as f:
                env = f.read()
            self.assertNotIn(SECRET, env, "token in a worker's environment")
            self.assertIn("TGRUNNER_FD=3\n", env)
        # the replies went out through the daemon, with the token
        calls = self.fake.calls(method="sendMessage")
        self.assertEqual(len(calls), 200)


def poll_gaps(samples):
    """Seconds between successive increments of the polls counter."""
    gaps, last_t, last_n = [], None, None
    for t, n in samples:
        if last_n is not None and n > last_n:
            if last_t is not None:
                gaps.append(t - last_t)
            last_t = t
        elif last_n is None:
            last_t = t
        last_n = n
    return gaps


if __name__ == "__main__":
    tgtest.main()
