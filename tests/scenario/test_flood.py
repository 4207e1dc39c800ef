#!/usr/bin/env python3
"""Central flood control of workers' Bot API calls (daemon/api.c): token
buckets per private chat, per group and for the whole bot, 429 pauses of a
chat, and flood_control = no.  Judged on the fake Bot API's record of the
sendMessage calls it received (arrival times), which the test worker makes
through the daemon (TG_REPLY=1: a reply attached to every done).

A token bucket of rate r and burst b lets at most b + r * w calls through
in any window of w seconds; TOL absorbs the jitter between the daemon
deciding to send and the fake receiving (loopback, milliseconds)."""

import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase, replies, wait_until	# noqa: E402

TOL = 0.1		# seconds of slack per window
CHAT = 1000		# the fake's first generated chat


def ok_times(calls):
    return sorted(t for t, _, _, fault in calls if fault is None)


def worst_window(times, rate, burst):
    """The window that comes closest to the bucket's bound (or beyond):
    (excess, count, seconds), excess > 0 meaning the bound is broken."""
    worst = (float("-inf"), 0, 0.0)
    for i in range(len(times)):
        for j in range(i, len(times)):
            w = times[j] - times[i]
            excess = (j - i + 1) - (burst + rate * (w + TOL))
            if excess > worst[0]:
                worst = (excess, j - i + 1, w)
    return worst


def max_in_window(times, width):
    best, j = 0, 0
    for i in range(len(times)):
        while times[i] - times[j] >= width:
            j += 1
        best = max(best, i - j + 1)
    return best


class Flood(ScenarioCase):

    def setUp(self):
        super().setUp()
        self.fake = self.start_fake()

    def daemon(self, **kw):
        kw.setdefault("flood_control", True)	# tgtest's default is off
        kw.setdefault("workers", 2)
        kw.setdefault("worker_env", {"TG_REPLY": "1"})
        return self.start_daemon(self.fake, **kw)

    def wait_replies(self, n, timeout, chat=None):
        return wait_until(lambda: len(ok_times(replies(self.fake, chat))) >= n
                          and replies(self.fake, chat), timeout,
                          what="%d replies" % n)

    def assertBucket(self, times, rate, burst, what):
        excess, n, w = worst_window(times, rate, burst)
        sys.stderr.write("%s: %d calls in %.2fs; fullest window %d calls in "
                         "%.3fs (bound %.1f)\n"
                         % (what, len(times), times[-1] - times[0], n, w,
                            burst + rate * (w + TOL)))
        self.assertLessEqual(excess, 0, "%s: %d calls in %.3fs exceed "
                             "burst %d + %g/s" % (what, n, w, burst, rate))

    def assertInOrder(self, calls, chat):
        seqs = [s for _, c, s, fault in calls if c == chat and fault is None]
        self.assertEqual(seqs, sorted(seqs), "replies to %d out of order"
                         % chat)
        self.assertEqual(len(seqs), len(set(seqs)), "a reply went twice")
        return seqs

    def test_chat_rate_paces_one_chat(self):
        """20 replies to one private chat at 5/s with a burst of 2."""
        d = self.daemon(flood_chat_rate="5/s burst 2")
        ids = self.generate(self.fake, 20, 1)
        calls = self.wait_replies(20, 30)
        times = ok_times(calls)
        self.assertBucket(times, 5, 2, "chat 5/s burst 2")
        self.assertGreaterEqual(times[-1] - times[0], (20 - 2) / 5 - TOL)
        self.assertEqual(self.assertInOrder(calls, CHAT), list(range(1, 21)))
        self.finish(self.fake, d, ids)

    def test_global_rate_across_chats(self):
        """100 replies to 50 chats at 20/s for the bot: no 1 s window holds
        more than the burst and one second's worth."""
        d = self.daemon(flood_global_rate="20/s burst 5",
                        flood_chat_rate="100/s")
        ids = self.generate(self.fake, 100, 50)
        calls = self.wait_replies(100, 30)
        times = ok_times(calls)
        self.assertBucket(times, 20, 5, "global 20/s burst 5")
        top = max_in_window(times, 1.0)
        sys.stderr.write("at most %d calls in any 1 s window\n" % top)
        self.assertLessEqual(top, 5 + 20 + 1)
        self.assertGreaterEqual(times[-1] - times[0], (100 - 5) / 20 - TOL)
        for chat in {c for _, c, _, _ in calls}:
            self.assertInOrder(calls, chat)
        self.finish(self.fake, d, ids)

    def test_default_chat_rate_every_second(self):
        """Defaults (1/s per private chat, a sliding window): 4 replies to
        one chat, one a second, the first at once."""
        d = self.daemon()
        ids = self.generate(self.fake, 4, 1)
        calls = self.wait_replies(4, 20)
        times = ok_times(calls)
        for a, b in zip(times, times[1:]):
            self.assertGreaterEqual(b - a, 1 - TOL, "two replies to one "
                                    "chat within a second: %r" % times)
        self.assertInOrder(calls, CHAT)
        rec = self.finish(self.fake, d, ids)
        # from the end of its handler, not from the test's start: a loaded
        # machine is slow to fetch and run it, and that is not flood control
        first_end = min(r.t for r in rec.recs if r.kind == "E") / 1e9
        self.assertLess(times[0] - first_end, 0.7, "the first reply was "
                        "held %.2fs" % (times[0] - first_end))

    def test_default_global_rate_every_second(self):
        """Defaults: 200 replies to 200 chats.  No second holds more than
        30 (a bucket starting full let 59 through in the first one), and
        the window wastes nothing: 30 a second from the start."""
        d = self.daemon(workers=4)
        ids = self.generate(self.fake, 200, 200)
        calls = self.wait_replies(200, 40)
        times = ok_times(calls)
        top = max_in_window(times, 1.0 - TOL)
        sys.stderr.write("200 replies in %.2fs, at most %d in any %.1f s "
                         "window\n" % (times[-1] - times[0], top, 1 - TOL))
        self.assertLessEqual(top, 30)
        self.assertGreaterEqual(times[-1] - times[0], (200 - 30) / 30 - TOL)
        self.assertLess(times[-1] - times[0], 200 / 30 + 3)
        self.finish(self.fake, d, ids)

    def sent(self, method="sendMessage"):
        """Requests the fake got, faulted ones included (those are not in
        its record of calls)."""
        return self.fake.stats()["calls"].get(method, 0)

    def wait_pause(self, d):
        """The chat id of the daemon's first 429 pause, and a time.time()
        just after it began (the fake's clock is the same wall clock)."""
        m = d.wait_log(r"429 \(try 1\), pausing calls to [pg]:(-?\d+) for",
                       20)
        return int(m.group(1)), time.time()

    def test_429_pauses_the_chat(self):
        """A 429 retry_after=2 on the first reply: that chat's replies stop
        for 2 s, then all of them arrive in order; the other chat goes on."""
        d = self.daemon(flood_chat_rate="100/s")
        self.fake.fault("429", method="sendMessage", retry_after=2, count=1)
        t0 = time.time()
        ids = self.generate(self.fake, 10, 1, start_chat=CHAT)
        ids += self.generate(self.fake, 10, 1, start_chat=CHAT + 1, rate=10)
        hit, _ = self.wait_pause(d)
        self.assertIn(hit, (CHAT, CHAT + 1))
        other = CHAT + 1 if hit == CHAT else CHAT
        calls = self.wait_replies(20, 30)
        self.assertEqual(self.sent(), 21)
        paused = [t for t, c, _, f in calls if c == hit]
        self.assertEqual(len(paused), 10, "a reply to the paused chat was "
                         "lost")
        sys.stderr.write("chat %d: first answered reply %.2fs after the "
                         "burst began\n" % (hit, paused[0] - t0))
        self.assertGreaterEqual(paused[0] - t0, 2 - TOL)
        self.assertLess(paused[0] - t0, 2 + 1.5)
        self.assertEqual(self.assertInOrder(calls, hit), list(range(1, 11)))
        self.assertEqual(self.assertInOrder(calls, other), list(range(1, 11)))
        went = [t for t, c, _, f in calls if c == other]
        self.assertTrue(any(t < t0 + 2 - TOL for t in went),
                        "chat %d was held by chat %d's 429" % (other, hit))
        self.finish(self.fake, d, ids)

    def test_429_pauses_every_call_to_the_chat(self):
        """Without session keys the replies to one chat come from unrelated
        updates: the 429 of one must hold all of them, not only itself."""
        d = self.daemon(session_key="none", flood_chat_rate="100/s",
                        worker_env={"TG_REPLY": "1", "TG_SLEEP_MS": "0-20"})
        self.fake.fault("429", method="sendMessage", retry_after=2, count=1)
        ids = self.generate(self.fake, 1, 1)
        _, t_pause = self.wait_pause(d)
        ids += self.generate(self.fake, 20, 1, rate=15)
        calls = self.wait_replies(21, 30)
        self.assertEqual(self.sent(), 22)
        times = ok_times(calls)
        during = [round(t - t_pause, 3) for t in times
                  if t < t_pause + 2 - 0.3]
        sys.stderr.write("first reply %.2fs after the pause began\n"
                         % (times[0] - t_pause))
        self.assertEqual(during, [], "replies went to the chat during its "
                         "pause (seconds after it began)")
        self.finish(self.fake, d, ids)

    def test_429_retries_then_gives_up(self):
        """max_call_retries = 1: a call refused again and again is tried
        twice, and Telegram's error is what the daemon reports."""
        d = self.daemon(max_call_retries=1, flood_chat_rate="100/s")
        self.fake.fault("429", method="sendMessage", retry_after=1, count=-1)
        ids = self.generate(self.fake, 1, 1)
        d.wait_log(r"attached call failed: 429 Too Many Requests: retry "
                   r"after 1", timeout=20)
        self.assertEqual(self.sent(), 2)
        # each 429 pauses the chat, the last one too
        self.assertEqual(len(d.grep(r"429 \(try [12]\), pausing calls to "
                                    r"p:%d for 1 s" % CHAT)), 2)
        self.fake.clear_faults()
        self.finish(self.fake, d, ids)

    def test_flood_control_off(self):
        """flood_control = no: 500 replies to 10 chats go far faster than
        the default 30/s for the bot and 1/s per chat would allow."""
        d = self.daemon(flood_control=False)
        ids = self.generate(self.fake, 500, 10)
        t0 = time.monotonic()
        calls = self.wait_replies(500, 30)
        took = time.monotonic() - t0
        times = ok_times(calls)
        sys.stderr.write("500 replies in %.2fs\n" % (times[-1] - times[0]))
        self.assertLess(times[-1] - times[0], 500 / 30 / 3)
        self.assertLess(took, 15)
        self.finish(self.fake, d, ids)


if __name__ == "__main__":
    tgtest.main()
